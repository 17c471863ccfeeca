"""What an ingest of crops or fields tells its user (:class:`IngestReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets.words import count

_N_SHOWN = 5  # skipped files named in the summary


@dataclass
class IngestReport:
    """What an ingest did: counts, detected layout, dropped channels, skipped files."""

    n_files: int = 0  # files whose crops were stored
    n_cells: int = 0  # crops stored by this ingest
    n_channels: int = 0  # channels stored (after dropping all-zero ones)
    channel_names: tuple[str, ...] = ()
    dtype: str = ""  # storage dtype: uint8, uint16 or float32
    layout: str = ""  # detected layout(s), e.g. "channel-first" or "RGB (3), grey (2)"
    dropped_channels: list[int] = field(default_factory=list)  # source indices, all zero
    flat_channels: list[int] = field(default_factory=list)  # stored indices with high <= low
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    class_counts: dict[str, int] = field(default_factory=dict)  # ground-truth label counts
    normalise_by: str = "dataset"  # "dataset" or "plate", as resolved
    ranges_from: int | None = None  # the part whose ranges this part took (``add``), or None
    new_group: bool = False  # ``add`` without a plate column to a project normalised per plate
    labels_csv: str | None = None
    metadata_csv: str | None = None
    part: int = 0  # which part of the project this ingest wrote
    crop_size: int = 0
    scale: float = 1.0  # the dataset-wide rescale factor applied (chosen when not given)
    modality: str = ""  # features computed for "fluorescence" or "stained_rgb" ("": not yet)
    modality_detected: bool = False  # chosen from the pixels (``--modality auto``)
    notes: list[str] = field(default_factory=list)  # anything else worth telling the user
    #: (file, count) of files whose NaN / infinite pixels were replaced by the crop's median
    non_finite: list[tuple[str, int]] = field(default_factory=list)

    def _normalised(self) -> str:
        if self.normalise_by == "plate":
            return "Normalised per channel over each plate"
        if self.new_group:
            return (
                "Normalised per channel over these crops alone, as one new plate (the project "
                "normalises per plate and they have no plate column)"
            )
        if self.ranges_from is not None:
            return (
                "Normalised per channel on the project's scale (the ranges of part "
                f"{self.ranges_from}), so intensities compare with the cells already there"
            )
        return "Normalised per channel over the whole dataset"

    def _modality(self) -> str:
        what = {
            "stained_rgb": "stained brightfield RGB (morphology + stain separation, colour and "
            "texture features)",
            "fluorescence": "fluorescence (morphology features per channel)",
        }.get(self.modality, self.modality)
        if not self.modality_detected:
            return f"Features for {what}, as asked"
        other = "fluorescence" if self.modality == "stained_rgb" else "stained_rgb"
        return f"Features for {what}: detected from the pixels (--modality {other} to override)"

    def summary(self) -> str:
        """A few human-readable lines describing the ingest."""
        names = ", ".join(self.channel_names)
        lines = [
            f"Ingested {count(self.n_cells, 'cell')} from "
            f"{count(self.n_files, 'field' if self.layout == 'whole fields' else 'file')} "
            f"(part {self.part})",
            f"Channels: {self.n_channels} ({names}), {self.dtype}, layout {self.layout}, "
            f"crops {self.crop_size}x{self.crop_size}",
            self._normalised(),
        ]
        if self.modality:
            lines.append(self._modality())
        if self.dropped_channels:
            lines.append(f"Dropped all-zero source channels: {self.dropped_channels}")
        if self.flat_channels:
            lines.append(f"Flat channels (no intensity range): {self.flat_channels}")
        if self.class_counts:
            counts = ", ".join(f"{k} {v}" for k, v in self.class_counts.items())
            lines.append(f"Ground truth ({self.labels_csv or 'npz labels'}): {counts}")
        if self.metadata_csv:
            lines.append(f"Metadata: {self.metadata_csv}")
        if self.skipped:
            n_more = len(self.skipped) - _N_SHOWN
            shown = "; ".join(f"{f} ({r})" for f, r in self.skipped[:_N_SHOWN])
            more = f" and {n_more} more" if n_more > 0 else ""
            noun = "file" if len(self.skipped) == 1 else "files"
            lines.append(f"Skipped {len(self.skipped)} {noun}: {shown}{more}")
        if self.non_finite:
            n_more = len(self.non_finite) - _N_SHOWN
            shown = "; ".join(f"{f} ({n})" for f, n in self.non_finite[:_N_SHOWN])
            more = f" and {n_more} more" if n_more > 0 else ""
            lines.append(
                f"NaN or infinite pixels replaced by the crop's median in "
                f"{count(len(self.non_finite), 'file')}: {shown}{more}"
            )
        lines.extend(self.notes)
        return "\n".join(lines)
