"""Find whole fields of view in a folder and read their pixels and label masks.

Two layouts:

* one file per field (TIFF/OME-TIFF or PNG; 2-D, or multi-channel with the channel axis first
  or last, detected as :mod:`datasets.crops.readers` does for crops); the field's key is its path
  relative to the folder without the suffix (``plate1/A01_s1``);
* one file per channel, grouped by a filename pattern such as
  ``{plate}_{well}_s{site}_w{channel}.tif``. Each ``{name}`` matches any text without ``/``
  (``{well}`` a well's shape, A01 or r01c01, when the name allows, so a plate name may hold
  ``_``);
  ``{channel}`` orders the channels (numerically when they are numbers); every other name
  becomes metadata of the field's cells (a pattern without ``{channel}`` only names the
  metadata of one multi-channel file per field). A pattern without ``/`` is matched against
  file names in any subfolder, a pattern with ``/`` against paths relative to the folder. The
  key is the pattern without ``{channel}`` (and the text joining it to the rest, such as
  ``_w``) and without the suffix: ``P1_A01_s1`` for ``P1_A01_s1_w2.tif``.

Masks (integer label images, 0 = background) are matched to fields by name
(:mod:`datasets.fields.masks`).

Bad input never raises for one field: the field (or file) goes to the ``skipped`` list with a
one-line reason, and the rest of the screen is read.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from datasets.cells import BASE_COLUMNS
from datasets.crops.readers import (
    ImageHeader,
    read_header,
    read_image_file,
    replace_non_finite,
    scan_folder,
    skip_reason,
)
from datasets.crops.resize import widest_dtype
from datasets.errors import DataError
from datasets.fields.spec import FieldSpec

logger = logging.getLogger(__name__)
#: Skipped files warned about one by one; the ingest report lists them all.
MAX_SKIP_WARNINGS = 10

#: Files that can hold a field (or a mask).
FIELD_SUFFIXES = (".tif", ".tiff", ".png")
#: Cell-table columns a field ingest adds (besides the crop ingest's BASE_COLUMNS).
FIELD_COLUMNS = (
    "field", "object", "centroid_y", "centroid_x", "bbox_min_row", "bbox_min_col",
    "bbox_max_row", "bbox_max_col", "area", "touches_border",
)  # fmt: skip
_SUFFIX = re.compile(r"(\.ome)?\.(tiff?|png)$", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_]\w*")
_SEPARATORS = "_-. /"

Skipped = list[tuple[str, str]]


@dataclass(frozen=True)
class FieldPattern:
    """A compiled filename pattern (see the module docstring)."""

    text: str  # the pattern as given
    regex: re.Pattern  # full-match regex with one named group per placeholder
    #: the same with ``{well}`` any text, for names whose wells are not shaped like A01 or
    #: r01c01 (``regex`` is tried first, so ``My_Plate_1_B02`` splits at the well)
    loose: re.Pattern
    names: tuple[str, ...]  # metadata placeholders (all but ``channel``), in order
    key_template: str  # str.format template of the field key, e.g. "{plate}_{well}_s{site}"
    by_name: bool  # True: matched against file names; False: against relative paths


#: A file name that ends in a channel number: ``cell7_w2``, ``cell7-ch2``, ``cell7_Ch2.ome``.
_CHANNEL_END = re.compile(r"^(?P<key>.+?)(?P<sep>[_\-. ]?)(?P<tok>w|ch|c|channel)(?P<num>\d{1,2})"
                          r"(?P<suffix>(\.ome)?\.\w+)$", re.IGNORECASE)  # fmt: skip


@dataclass(frozen=True)
class ChannelFiles:
    """Files that look like one file per channel (:func:`looks_per_channel`)."""

    pattern: str  # the --pattern that groups them, e.g. ``{cell}_w{channel}.tif``
    n_channels: int  # channels of the usual key
    n_keys: int  # cells or fields the files would make
    n_odd: int  # keys with other channels (one missing, say)

    def note(self, n_files: int, what: str) -> str:
        """The hint, e.g. "the 12 files look like one file per channel (2 channels of 6
        fields) and were read as one field each; ..."."""
        odd = f", {self.n_odd} of them with other channels" if self.n_odd else ""
        return (
            f"the {n_files} files look like one file per channel ({self.n_channels} channels "
            f"of {self.n_keys} {what}s{odd}) and were read as one {what} each; to group them, "
            f"ingest again with --pattern '{self.pattern}'"
        )


def looks_per_channel(paths: list[Path], placeholder: str) -> ChannelFiles | None:
    """Whether single-channel files named ``KEY_w1``, ``KEY_w2``, ... (also ``-ch``, ``c``,
    ``channel``) hold one channel each of the same keys: every name ends so, and 90% of the
    keys (at least 2) have the same 2 or more channel numbers. None otherwise."""
    if len(paths) < 4:
        return None
    groups: dict[tuple[str, ...], set[str]] = {}
    for path in paths:
        m = _CHANNEL_END.match(path.name)
        if m is None:
            return None
        key = (str(path.parent), m["key"], m["sep"], m["tok"], m["suffix"])
        groups.setdefault(key, set()).add(str(int(m["num"])))
    usual, n_usual = Counter(frozenset(v) for v in groups.values()).most_common(1)[0]
    if len(groups) < 2 or len(usual) < 2 or n_usual < 0.9 * len(groups):
        return None  # a few keys missing a channel still look per-channel; a mixture does not
    _, _, sep, tok, suffix = next(iter(groups))
    pattern = "{" + placeholder + "}" + sep + tok + "{channel}" + suffix
    return ChannelFiles(pattern, len(usual), len(groups), len(groups) - n_usual)


def parse_pattern(pattern: str, one_file_per_field: bool = False) -> FieldPattern:
    """Compile a filename pattern such as ``{plate}_{well}_s{site}_w{channel}.tif``.

    Args:
        pattern: the pattern.
        one_file_per_field: a pattern without ``{channel}`` is allowed: each file is a whole
            (multi-channel) field, the pattern names its metadata (``{plate}_{well}_s{site}.tif``).

    Raises:
        DataError: without ``{channel}`` (unless ``one_file_per_field``), for a placeholder that
            is not a name or names a cell table column, or for an unbalanced brace.
    """
    tokens = [t for t in re.split(r"(\{[^{}]*\})", pattern) if t]
    parts, names, seen = [], [], set()
    for token in tokens:
        if not (token.startswith("{") and token.endswith("}")):
            if "{" in token or "}" in token:
                raise DataError(f"pattern {pattern!r}: unbalanced brace in {token!r}")
            parts.append(re.escape(token))
            continue
        name = token[1:-1]
        if not _NAME.fullmatch(name):
            raise DataError(
                f"pattern {pattern!r}: placeholder {token} is not a name; use letters, digits "
                "and _, e.g. {plate}_{well}_s{site}_w{channel}.tif"
            )
        if name in BASE_COLUMNS or name in FIELD_COLUMNS:
            raise DataError(
                f"pattern {pattern!r}: placeholder {token} clashes with the cell table's own "
                f"column {name!r}; rename it, e.g. {{well_{name}}}"
            )
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{_ANY})")
        if name not in seen and name != "channel":
            names.append(name)
        seen.add(name)
    if "channel" not in seen and not one_file_per_field:
        raise DataError(
            f"pattern {pattern!r} has no {{channel}}; name the part of the file name that "
            "differs between channels, e.g. {plate}_{well}_s{site}_w{channel}.tif"
        )
    loose = "".join(parts)
    strict = loose.replace(f"(?P<well>{_ANY})", f"(?P<well>{_WELL})", 1)
    return FieldPattern(
        pattern,
        re.compile(strict, re.IGNORECASE),
        re.compile(loose, re.IGNORECASE),
        tuple(names),
        _key_template(tokens) if "channel" in seen else _SUFFIX.sub("", pattern).strip("/"),
        "/" not in pattern,
    )


#: What a placeholder matches: any text without ``/``, as short as the rest allows.
_ANY = "[^/]+?"
#: A well as plate readers name it (A01, P24, AF48 of a 1536-well plate; r01c01 on Operetta).
_WELL = r"[a-z]{1,2}\d{1,3}|r\d{1,3}c\d{1,3}"


def _key_template(tokens: list[str]) -> str:
    """The pattern without ``{channel}``, the text that joins it to the rest, and the suffix."""
    at = tokens.index("{channel}")
    before = tokens[at - 1] if at > 0 and not tokens[at - 1].startswith("{") else ""
    cut = max((before.rfind(s) for s in _SEPARATORS), default=-1)
    kept_before = before[:cut] if cut >= 0 else ""
    after = tokens[at + 1 :]
    if not kept_before and at - (1 if before else 0) == 0 and after:
        first = after[0]
        if not first.startswith("{") and first[:1] in _SEPARATORS:
            after = [first[1:], *after[1:]]
    head = tokens[: at - 1] if before else tokens[:at]
    text = "".join([*head, kept_before, *after])
    return _SUFFIX.sub("", text).strip("/")


def _natural(value: str) -> tuple[int, int, str]:
    return (0, int(value), value) if value.isdigit() else (1, 0, value.lower())


def rel_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX), or whole when it lies elsewhere."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def strip_suffix(rel: str) -> str:
    """A field file's name or path without its image suffix (``.ome.tif``, ``.png``, ...)."""
    return _SUFFIX.sub("", rel)


def find_fields(
    folder: Path, pattern: str | None = None, masks: Path | None = None
) -> tuple[list[FieldSpec], Skipped]:
    """Every field of view in ``folder`` (recursively), with its mask when ``masks`` has one.

    Args:
        folder: the folder of fields.
        pattern: filename pattern grouping one file per channel into fields; None: each file
            is one (multi-channel) field.
        masks: folder of integer label images matched to fields by name (module docstring);
            may be ``folder`` itself. Without it, a ``masks`` subfolder of ``folder`` and
            files named like masks (``*_mask``, ``*_cp_masks``) are left out and listed.

    Returns:
        ``(fields, skipped)``: fields sorted by key; skipped ``(file or field, reason)`` for
        unmatched, unreadable or unsupported files, fields with missing, extra or differently
        sized channel files, masks of the wrong shape or dtype, and masks that match no field.

    Raises:
        DataError: a folder does not exist, the pattern is invalid, or no field was found.
    """
    root = _folder(folder, "fields")
    mask_root = _folder(masks, "masks") if masks is not None else None
    parsed = parse_pattern(pattern, one_file_per_field=True) if pattern else None
    files, skipped = _field_files(root, mask_root)
    if parsed is None:
        fields = _single_files(files, root, skipped)
    else:
        fields = _group(files, root, parsed, skipped)
    checked: list[FieldSpec] = []
    shapes: dict[str, tuple[int, int]] = {}
    for spec in fields:
        try:
            header = field_header(spec)
            shapes[spec.key] = (header.height, header.width)
        except DataError as err:
            skipped.append((spec.key, str(err)))
            continue
        checked.append(spec)
    if mask_root is not None:
        from datasets.fields.masks import attach_masks

        checked = attach_masks(checked, shapes, mask_root, root, skipped)
    if not checked:
        first = f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        grouped = None if parsed else looks_per_channel(files, "name")
        raise DataError(
            f"{root}: no fields found ({len(files)} image files, {len(skipped)} skipped{first}); "
            f"fields are {', '.join(FIELD_SUFFIXES)} files"
            + (f"; one file per channel? pass --pattern '{grouped.pattern}'" if grouped else "")
        )
    for name, reason in skipped[:MAX_SKIP_WARNINGS]:
        logger.warning("skipped %s: %s", name, reason)
    if len(skipped) > MAX_SKIP_WARNINGS:
        logger.warning(
            "skipped %d more files; the ingest report lists every one with its cause",
            len(skipped) - MAX_SKIP_WARNINGS,
        )
    return sorted(checked, key=lambda s: s.key), skipped


def _folder(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"{path}: {what} folder {state}; pass the folder that holds the {what}")
    return path.resolve()


def _field_files(root: Path, mask_root: Path | None) -> tuple[list[Path], Skipped]:
    """Candidate field files under ``root``, leaving out masks; what was left out and why."""
    from datasets.fields.masks import MASK_STEM

    images, unsupported = scan_folder(root)
    skipped: Skipped = [(rel_path(p, root), skip_reason(p)) for p in unsupported]
    default_masks = root / "masks"
    files = []
    for path in images:
        rel = rel_path(path, root)
        if mask_root is not None and path.is_relative_to(mask_root) and mask_root != root:
            continue
        if mask_root is None and path.is_relative_to(default_masks):
            if not any(name == "masks/" for name, _ in skipped):
                skipped.append(("masks/", "a masks folder; pass it as the masks folder to use it"))
            continue
        if path.suffix.lower() not in FIELD_SUFFIXES:
            skipped.append((rel, f"unsupported file type {path.suffix.lower()!r} for a field"))
        elif MASK_STEM.search(strip_suffix(path.name)):
            if mask_root is None:
                skipped.append((rel, "named like a mask; pass its folder as the masks folder"))
        else:
            files.append(path)
    return files, skipped


def _single_files(files: list[Path], root: Path, skipped: Skipped) -> list[FieldSpec]:
    """One field per file, keyed by its relative path without the suffix."""
    fields: dict[str, FieldSpec] = {}
    for path in files:
        key = strip_suffix(rel_path(path, root))
        if key in fields:
            other = fields[key].channel_files[0].name
            skipped.append(
                (rel_path(path, root), f"same field name {key!r} as {other}; rename one")
            )
            continue
        fields[key] = FieldSpec(key, (path,))
    return list(fields.values())


def _group(
    files: list[Path], root: Path, parsed: FieldPattern, skipped: Skipped
) -> list[FieldSpec]:
    """One field per key: its channel files in channel order and its metadata."""
    channels: dict[str, dict[str, Path]] = defaultdict(dict)
    metadata: dict[str, dict[str, str]] = {}
    for path in files:
        rel = rel_path(path, root)
        name = path.name if parsed.by_name else rel
        match = parsed.regex.fullmatch(name) or parsed.loose.fullmatch(name)
        if match is None:
            skipped.append((rel, f"does not match pattern {parsed.text!r}"))
            continue
        values = match.groupdict()
        key = parsed.key_template.format(**values)
        parent = Path(rel).parent.as_posix()
        if parsed.by_name and parent != ".":
            key = f"{parent}/{key}"
        channel = values.get("channel", "1")  # no {channel}: a multi-channel file per field
        if channel in channels[key]:
            other = rel_path(channels[key][channel], root)
            why = (f"second file for channel {channel} of field {key} ({other})"
                   if "channel" in values else f"same field {key} as {other}")  # fmt: skip
            skipped.append((rel, why))
            continue
        channels[key][channel] = path
        metadata[key] = {n: values[n] for n in parsed.names}
    expected = _common_channels(channels)
    fields = []
    for key, by_channel in channels.items():
        have = set(by_channel)
        if have != expected:
            missing = [parsed.text.format(**metadata[key], channel=c) for c in expected - have]
            skipped.append((key, _channel_mismatch(have, expected, sorted(missing))))
            continue
        ordered = tuple(by_channel[c] for c in sorted(by_channel, key=_natural))
        fields.append(FieldSpec(key, ordered, metadata[key]))
    return fields


def group_by_pattern(
    files: list[Path], root: Path, pattern: str
) -> tuple[list[tuple[FieldSpec, ImageHeader]], Skipped]:
    """Group one file per channel by ``pattern`` (module docstring): one spec per key, its
    channel files in channel order, each checked for one channel of one size. Crops held in one
    file per channel are grouped by this too.

    Returns:
        ``(groups, skipped)``: ``(spec, header)`` sorted by key; skipped ``(file or key, reason)``.

    Raises:
        DataError: the pattern is invalid.
    """
    skipped: Skipped = []
    checked = []
    for spec in _group(files, root, parse_pattern(pattern), skipped):
        try:
            checked.append((spec, field_header(spec)))
        except DataError as err:
            skipped.append((spec.key, str(err)))
    return sorted(checked, key=lambda g: g[0].key), skipped


def _common_channels(channels: dict[str, dict[str, Path]]) -> set[str]:
    """The channel set most fields have (ties: the larger set)."""
    counts: Counter[frozenset[str]] = Counter(frozenset(c) for c in channels.values())
    if not counts:
        return set()
    best: frozenset[str] = max(counts, key=lambda s: (counts[s], len(s)))
    return set(best)


def _channel_mismatch(have: set[str], expected: set[str], missing_files: list[str]) -> str:
    def names(values: set[str]) -> str:
        return ", ".join(sorted(values, key=_natural))

    missing, extra = expected - have, have - expected
    files = ", ".join(missing_files)
    parts = [f"missing channel {names(missing)} file ({files})"] if missing else []
    parts += [f"extra channel(s) {names(extra)}"] if extra else []
    return f"{'; '.join(parts)} (most fields have channels {names(expected)})"


def field_header(spec: FieldSpec) -> ImageHeader:
    """Channels, size and storage dtype of a field, from its files' headers.

    Raises:
        DataError: a file is unreadable, a per-channel file holds several channels, or the
            channel files differ in size.
    """
    headers = [read_header(p) for p in spec.channel_files]
    if len(headers) == 1:
        return headers[0]
    first = headers[0]
    for path, header in zip(spec.channel_files, headers, strict=True):
        _check_plane(
            spec, path, header.channels, (header.height, header.width), (first.height, first.width)
        )
    dtype = widest_dtype([h.dtype for h in headers])
    return ImageHeader(1, len(headers), first.height, first.width, dtype, "one file per channel")


def _check_plane(
    spec: FieldSpec, path: Path, channels: int, size: tuple[int, ...], first: tuple[int, ...]
) -> None:
    """A per-channel file must hold one channel of the first channel file's (H, W) size."""
    if channels != 1:
        raise DataError(
            f"{path}: {channels} channels; each channel file of field {spec.key} must hold one"
        )
    if tuple(size) != tuple(first):
        raise DataError(
            f"{path}: {size[0]}x{size[1]} pixels but {spec.channel_files[0].name} is "
            f"{first[0]}x{first[1]}; the channel files of field {spec.key} must have one size"
        )


def read_field(spec: FieldSpec, non_finite: list[tuple[str, int]] | None = None) -> npt.NDArray:
    """The pixels of a field, NaN and infinite pixels replaced by their channel's finite median.

    Args:
        spec: the field.
        non_finite: when given, ``(file, count)`` is appended for each file that held NaN or
            infinite pixels.

    Returns:
        (C, H, W) in the source dtype (per-channel files of different dtypes: the widest of
        uint8 < uint16 < float32).

    Raises:
        DataError: unreadable file, several channels in a per-channel file, channel files
            of different sizes, or a channel without any finite pixel.
    """

    def read(path: Path) -> npt.NDArray:
        pixels, n_bad = replace_non_finite(read_image_file(path)[0], path)
        if n_bad and non_finite is not None:
            non_finite.append((str(path), n_bad))
        return pixels

    if len(spec.channel_files) == 1:
        return read(spec.channel_files[0])[0]
    planes: list[npt.NDArray] = []
    for path in spec.channel_files:
        pixels = read(path)
        first = planes[0].shape if planes else pixels.shape[2:]
        _check_plane(spec, path, pixels.shape[1], pixels.shape[2:], first)
        planes.append(pixels[0, 0])
    return np.stack(planes).astype(widest_dtype([p.dtype for p in planes]), copy=False)


def ome_channel_names(path: Path) -> tuple[str, ...] | None:
    """The channel names an OME-TIFF's metadata gives its first image (``Channel/@Name``), or
    None for any other file, unreadable metadata, or names missing or not unique."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.is_ome or not tif.ome_metadata:
                return None
            meta = tifffile.xml2dict(tif.ome_metadata)
        image = meta["OME"]["Image"]
        image = image[0] if isinstance(image, list) else image
        channels = image["Pixels"].get("Channel") or []
    except (OSError, ValueError, KeyError, TypeError, IndexError, tifffile.TiffFileError):
        return None
    channels = channels if isinstance(channels, list) else [channels]
    names = tuple(str(c.get("Name") or "").strip() for c in channels if isinstance(c, dict))
    if not names or not all(names) or len(set(names)) != len(names):
        return None
    return names
