"""Pictures of the batch: the channel controls, the tile images and the zoom on one cell.

The crops of a batch are read once (one ``PixelStore.read`` call) and kept in the session with
the tiles made from them, so a label click redraws from memory.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import streamlit as st
from PIL import Image

from app_pages.widgets.cell_marks import MaskReader, draw_mark
from app_pages.widgets.reasons import chosen_reason
from app_pages.widgets.text import code, css_colour, md
from datasets.render import channel_strip, composite, upscale
from labeling.project import Project
from labeling.store.labels import ClassInfo

TILE_ZOOM = 2  # 64 px crops shown as 128 px tiles, enlarged without smoothing
DETAIL_ZOOM = 4  # the focused cell
NAME_CHARS = 8  # names of classes without a key are cut to this on the tiles' buttons
#: CSS of the pages with tile grids: a narrow margin round the page, so the tiles get the width.
WIDE_PAGE_CSS = '[data-testid="stMainBlockContainer"] {padding: 4rem 1.5rem 2rem 1.5rem;}'
_CACHE = "_tile_cache"
_KEEP = "_keep_"  # prefix of the session keys that keep the display settings across pages


@dataclass(frozen=True)
class Display:
    """How tiles are drawn (from the sidebar)."""

    visible: tuple[bool, ...]  # per channel on/off
    ranges: tuple[tuple[float, float], ...]  # per channel (min, max) of the normalised
    # intensity shown black to full colour
    colours: tuple[str, ...]  # per channel "#rrggbb" (the project's, unless changed here)
    side_by_side: bool  # composite followed by each channel, instead of the composite alone
    hide_guesses: bool  # hide the model's guess, confidence and why a cell was chosen
    zoom_area: Any  # the sidebar container where the focused cell is drawn (None: no zoom)
    show_mark: bool = True  # mark the cell to label (outline or centre mark)

    def adjust(self, crops: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, C, H, W) crops with each channel's (min, max) stretched to (0, 1)."""
        lo = np.asarray([r[0] for r in self.ranges], dtype=np.float32)[:, None, None]
        hi = np.asarray([r[1] for r in self.ranges], dtype=np.float32)[:, None, None]
        return (crops - lo) / np.maximum(hi - lo, 1e-3)


DISPLAY_KEYS = ("hide-guesses", "side-by-side", "show-mark")  # per-channel keys: show-, range-,
# colour-; all are kept across pages and put back by the reset button


def display_controls(project: Project, zoom: bool = True) -> Display:
    """Sidebar controls for channels (on/off, colour, min/max), guesses and the cell mark (and,
    with ``zoom``, the place of the focused cell's zoom). Their values outlive page switches
    (:func:`_kept`); a button puts them all back as the project has them."""
    side = st.sidebar
    hide = side.toggle(
        "Hide model guesses",
        **_kept("hide-guesses", False),
        help="Hide the model's guess, its confidence and why each cell was chosen (they hint "
        "at the guess), to avoid anchoring.",
    )
    mark = side.toggle(
        "Mark the cell to label",
        **_kept("show-mark", True),
        help="A crop may hold several cells: the one to label is outlined (its segmentation "
        "mask) or, without a mask, marked at the centre.",
    )
    by_side = side.toggle("Channels side by side", **_kept("side-by-side", False))
    zoom_area = None
    if zoom:
        side.markdown("**Focused cell**")
        zoom_area = side.container(key="zoom-area")
    names, defaults = project.channel_names, project.channel_colours
    visible, ranges, colours = [], [], []
    with side.expander("Channels: colour, min/max, on/off", expanded=False):
        for i, (name, colour) in enumerate(zip(names, defaults)):
            with st.container(horizontal=True, vertical_alignment="center", key=f"chan-{i}"):
                colours.append(
                    css_colour(
                        st.color_picker(
                            f"{md(name)}: colour",
                            **_kept(f"colour-{i}", css_colour(colour)),
                            label_visibility="collapsed",
                        ),
                        css_colour(colour),
                    )
                )
                st.markdown(f"**{md(name)}**")
                visible.append(st.toggle("show", **_kept(f"show-{i}", True)))
            lo, hi = st.slider(
                f"{md(name)}: min / max shown",
                0.0, 1.0, step=0.01, **_kept(f"range-{i}", (0.0, 1.0)),
                help="Intensities (normalised 0-1) at or below min are black, at or above max "
                "full colour. Lower max to brighten a dim channel.",
            )  # fmt: skip
            ranges.append((float(lo), float(hi)))
        st.button(
            "Reset display",
            key="reset-display",
            on_click=_reset_display,
            args=(len(names),),
            help="Colours, min/max, channels and switches as the project has them",
        )
    return Display(tuple(visible), tuple(ranges), tuple(colours), by_side, hide, zoom_area, mark)


def _reset_display(n_channels: int) -> None:
    keys = list(DISPLAY_KEYS)
    for i in range(n_channels):
        keys += [f"show-{i}", f"range-{i}", f"colour-{i}"]
    for key in keys:
        st.session_state.pop(_KEEP + key, None)
        st.session_state.pop(key, None)


def _kept(key: str, default: Any) -> dict[str, Any]:
    """``key`` and ``on_change`` for a display widget whose value outlives page switches.

    Streamlit drops the value of every widget that a run does not draw (so Discover or Export
    would reset these), and the same key on another page is another widget. So the value lives
    under a key no widget owns: the widget's callback copies each change there, and every run
    sets the widget from it before drawing it."""
    st.session_state[key] = st.session_state.get(_KEEP + key, default)
    return {"key": key, "on_change": _remember, "args": (key,)}


def _remember(key: str) -> None:
    st.session_state[_KEEP + key] = st.session_state[key]


def batch_crops(project: Project, cell_ids: list[str]) -> npt.NDArray[np.float32]:
    """(n, C, S, S) float32 crops of the batch, read once per batch."""
    cache: dict[str, Any] = st.session_state.setdefault(_CACHE, {})
    key = (str(project.path), tuple(cell_ids))
    if cache.get("crops_key") != key:
        cache.clear()
        cache["crops_key"], cache["crops"] = key, project.pixels.read(cell_ids)
    return cache["crops"]


def batch_masks(project: Project, cell_ids: list[str]) -> list[npt.NDArray[np.uint8] | None]:
    """The batch's object masks (None: no mask, a centre mark), read once per batch."""
    cache: dict[str, Any] = st.session_state.setdefault(_CACHE, {})
    if cache.get("masks_key") != (str(project.path), tuple(cell_ids)):
        cache["masks_key"] = (str(project.path), tuple(cell_ids))
        cache["masks"] = _mask_reader(str(project.path)).read(cell_ids)
    return cache["masks"]


@st.cache_resource(show_spinner=False, max_entries=8)
def _mask_reader(path: str) -> MaskReader:
    return MaskReader(Path(path))


def _composites(
    project: Project, crops: npt.NDArray[np.float32], cell_ids: list[str], display: Display,
    zoom: int,
) -> list[npt.NDArray[np.uint8]]:  # fmt: skip
    """The composites of ``crops`` enlarged ``zoom`` times, the cell marked when asked."""
    comps = composite(display.adjust(crops), display.colours, visible=display.visible)
    big = [upscale(c, zoom) for c in comps]
    if display.show_mark:
        masks = batch_masks(project, cell_ids) if len(cell_ids) == len(big) else [None] * len(big)
        big = [draw_mark(t, m, zoom) for t, m in zip(big, masks)]
    return big


def tile_images(
    project: Project, cell_ids: list[str], display: Display
) -> list[npt.NDArray[np.uint8]]:
    """One RGB uint8 image per cell: the composite, or composite plus channels side by side."""
    crops = batch_crops(project, cell_ids)
    cache: dict[str, Any] = st.session_state[_CACHE]
    key = (display.visible, display.ranges, display.colours, display.side_by_side,
           display.show_mark)  # fmt: skip
    if cache.get("tiles_key") != key:
        big = _composites(project, crops, cell_ids, display, TILE_ZOOM)
        if display.side_by_side:
            gap = np.zeros((big[0].shape[0], 2 * TILE_ZOOM, 3), dtype=np.uint8)
            adjusted = display.adjust(crops)
            big = [
                np.hstack([t, gap, upscale(channel_strip(c, display.colours), TILE_ZOOM)])
                for t, c in zip(big, adjusted)
            ]
        cache["tiles_key"], cache["tiles"], cache["png"] = key, big, [png(t) for t in big]
    return cache["tiles"]


def tile_pngs(project: Project, cell_ids: list[str], display: Display) -> list[bytes]:
    """The tiles of :func:`tile_images` as PNG files, encoded once (not on every click; and
    lossless: Streamlit's default for arrays is JPEG)."""
    tile_images(project, cell_ids, display)
    return st.session_state[_CACHE]["png"]


def png(image: npt.NDArray[np.uint8]) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_zoom(
    project: Project, items: list[dict[str, Any]], index: int, label: str | None, display: Display
) -> None:
    """The focused cell ``items[index]``, large: composite (the cell marked), channels, id,
    path, why it was chosen and the guess (unless hidden), history."""
    item = items[index]
    ids = [it["cell_id"] for it in items]
    crops = batch_crops(project, ids)
    big = composite(display.adjust(crops[index : index + 1]), display.colours,
                    visible=display.visible)[0]  # fmt: skip
    big = upscale(big, DETAIL_ZOOM)
    if display.show_mark:
        big = draw_mark(big, batch_masks(project, ids)[index], DETAIL_ZOOM)
    st.image(png(big), width="stretch")
    strip = channel_strip(display.adjust(crops[index : index + 1])[0], display.colours)
    st.image(png(upscale(strip, 2)), width="stretch")
    st.caption(" | ".join(md(n) for n in project.channel_names))
    st.markdown(f"**Tile {index + 1}** {code(item['cell_id'])}  \n{md(item['path'])}")
    if not display.hide_guesses:
        reason = chosen_reason(item.get("strategy"))
        st.caption(f"why shown: {md(reason.short)} ({md(reason.detail)})")
        st.caption(f"model guess: {md(guess_text(item))}")
    st.markdown(f"**Label:** {md(label) if label else 'none yet'}")
    history = project.store.history(item["cell_id"])
    if history:
        lines = [
            f"- {h.labeled_at[:19].replace('T', ' ')} **{md(h.label)}** by {md(h.annotator)}"
            f" ({md(h.source)}){' - undone' if h.undone else ''}"
            for h in history
        ]
        st.markdown("History:\n" + "\n".join(lines))


def class_option(name: str, classes: Sequence[ClassInfo]) -> str:
    """A tile's class button: the class's key alone keeps it small (a legend names it); a class
    without a key shows its name, cut to ``NAME_CHARS``."""
    key = next((c.key for c in classes if c.name == name), None)
    if key:
        return key
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def pill_colours(scope: str, classes: Sequence[ClassInfo]) -> list[str]:
    """CSS rules: under the containers whose key starts with ``scope``, the class buttons
    (st.pills in class order) carry their class's colour and are compact."""
    sel = f'div[class*="st-key-{scope}"] button[data-variant="pills"]'
    rules = [
        f'div[class*="st-key-{scope}"] [role="radiogroup"] {{gap: 0.25rem;}}',
        f"{sel} {{padding: 0 0.5rem; min-height: 1.75rem;}}",
    ]
    rules += [
        f"{sel}:nth-of-type({i + 1}) {{border-bottom: 4px solid {css_colour(c.colour)};}}"
        for i, c in enumerate(classes)
    ]
    # the chosen class in its own colour, not the theme's red for every class
    rules += [
        f'{sel}:nth-of-type({i + 1})[aria-checked="true"] {{border-color: {css_colour(c.colour)}'
        f" !important; background: color-mix(in srgb, {css_colour(c.colour)} 28%, white)"
        " !important; color: #262730 !important; font-weight: 600;}"
        for i, c in enumerate(classes)
    ]
    return rules


def guess_text(item: dict[str, Any]) -> str:
    """``"mitotic 82%"``, ``"mitotic"`` (confidence unknown) or ``"none yet"``."""
    if not item.get("guess"):
        return "none yet"
    conf = item.get("confidence")
    return item["guess"] if conf is None else f"{item['guess']} {conf:.0%}"
