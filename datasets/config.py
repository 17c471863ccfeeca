"""Configuration dataclasses owned by the data layer (channels, crop sources, ingest)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from datasets.errors import DataError

#: Default display colours, one per channel position (nucleus first, as most screens order them).
DEFAULT_COLOURS = ("#3b82f6", "#22c55e", "#ef4444", "#eab308", "#d946ef")
#: a stained RGB image's channels: in their own colours, the blend is the image as it was
RGB_COLOURS = ("#ff0000", "#00ff00", "#0000ff")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
NORMALISE_BY = ("auto", "dataset", "plate")


@dataclass(frozen=True)
class ChannelSpec:
    """One fluorescence (or brightfield) channel as shown to the user."""

    name: str  # label shown in the app and written to exports, e.g. "DNA"
    colour: str = "#ffffff"  # display colour as #rrggbb

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise DataError("channel name is empty; give every channel a name such as 'DNA'")
        if not _HEX.match(self.colour):
            raise DataError(
                f"channel {self.name!r}: colour {self.colour!r} is not of the form #rrggbb"
            )


@dataclass(frozen=True)
class IngestConfig:
    """How source images become stored crops."""

    #: every crop is padded or centre-cropped to crop_size x crop_size; None: chosen at ingest
    #: (crops: 64 and a scale; whole fields and CellProfiler objects: from the objects' sizes,
    #: datasets.crops.resize.choose_crop_size) and stored as a number
    crop_size: int | None = 64
    #: dataset-wide rescale factor (never per cell: size is a phenotype); None: chosen at
    #: ingest from the crops' sizes (datasets.crops.resize.choose_scale) and stored as a number
    scale: float | None = None
    keep_empty_channels: bool = False  # keep channels that are all zero in every image
    percentiles: tuple[float, float] = (1.0, 99.8)  # robust low/high for per-channel scaling
    normalise_by: str = "auto"  # "dataset", "plate", or "auto" (plate when a plate column exists)
    channel_names: tuple[str, ...] = field(default_factory=tuple)  # names; empty = ch0, ch1, ...
    max_channels: int = 5  # the product supports 1-5 channels
    #: "fluorescence", "stained_rgb" (brightfield RGB stains: colour and texture features too),
    #: or "auto": detected on a sample of the crops and stored as one of the two
    modality: str = "auto"

    @property
    def crop_px(self) -> int:
        """The crop size once chosen (ingest sets a number before cutting any crop)."""
        if self.crop_size is None:
            raise DataError("the crop size is not chosen yet; give crop_size or let ingest choose")
        return self.crop_size

    def __post_init__(self) -> None:
        if self.crop_size is not None and not 8 <= self.crop_size <= 512:
            raise DataError(f"crop_size {self.crop_size} is out of range; use 8-512 pixels")
        if self.scale is not None and not 0.05 <= self.scale <= 20:
            raise DataError(f"scale {self.scale} is out of range; use 0.05-20")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise DataError(f"percentiles {self.percentiles} must satisfy 0 <= low < high <= 100")
        if self.modality not in ("auto", "fluorescence", "stained_rgb"):
            raise DataError(
                f"modality {self.modality!r}: allowed 'auto', 'fluorescence', 'stained_rgb'"
            )
        if self.normalise_by not in NORMALISE_BY:
            raise DataError(f"normalise_by {self.normalise_by!r}: allowed {NORMALISE_BY}")
        if any(not n.strip() for n in self.channel_names):
            raise DataError(
                f"channel names {list(self.channel_names)}: one is empty; give each channel a "
                "name, e.g. DNA,Cytoplasm"
            )
        twice = sorted({n for n in self.channel_names if self.channel_names.count(n) > 1})
        if twice:
            raise DataError(
                f"channel name(s) {', '.join(map(repr, twice))} given twice "
                f"({', '.join(self.channel_names)}); name each channel once"
            )


@dataclass(frozen=True)
class CropSource:
    """A folder of single-cell crops and the CSVs that come with it."""

    folder: Path  # TIFF/PNG/JPEG/npz crops, searched recursively
    #: ground truth ``path,label`` (simulation and evaluation only); None:
    #: ``folder/labels.csv`` when there is one
    labels_csv: Path | None = None
    #: ``path`` + metadata columns carried to every export; None: ``folder/metadata.csv``
    #: when there is one
    metadata_csv: Path | None = None
    #: one file per channel grouped into crops by a filename pattern such as
    #: ``{cell}_w{channel}.tif`` (as for fields, :mod:`datasets.fields.files`); None: one
    #: (multi-channel) file per crop
    pattern: str | None = None

    @classmethod
    def of(cls, crops: Path | CropSource) -> CropSource:
        """``crops`` as a source: a bare folder comes without CSVs."""
        return crops if isinstance(crops, CropSource) else cls(Path(crops))


def default_channels(n_channels: int, names: tuple[str, ...] = ()) -> tuple[ChannelSpec, ...]:
    """Channel specs for ``n_channels`` channels, named ``names`` or ``ch0``, ``ch1``, ...

    Raises:
        DataError: when ``names`` is given with a different length.
    """
    if names and len(names) != n_channels:
        raise DataError(
            f"the images have {n_channels} channel(s) but {len(names)} channel names are set "
            f"{list(names)}: crops added to a project or predicted with it need the project's "
            "channels; a new project takes one name per channel (--channels)"
        )
    names = names or tuple(f"ch{i}" for i in range(n_channels))
    return tuple(
        ChannelSpec(n, DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]) for i, n in enumerate(names)
    )


def rgb_channels(names: tuple[str, ...] = ()) -> tuple[ChannelSpec, ...]:
    """The three channels of a stained RGB screen, named ``names`` or R, G, B, coloured red,
    green and blue (the fluorescence defaults would show red as blue and blue as red)."""
    names = names or ("R", "G", "B")
    return tuple(ChannelSpec(n, c) for n, c in zip(names, RGB_COLOURS, strict=True))
