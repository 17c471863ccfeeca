"""Pictures of the batch: the channel controls, the tile images and the zoom on one cell.

The crops of a batch are read once (one ``PixelStore.read`` call) and kept in the session with
the tiles made from them, so a label click redraws from memory.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import streamlit as st
from PIL import Image

from app_pages.text import code, css_colour, md
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
    gains: tuple[float, ...]  # per channel contrast multiplier
    side_by_side: bool  # composite followed by each channel, instead of the composite alone
    hide_guesses: bool  # hide the model's guess and confidence (avoids anchoring)
    zoom_area: Any  # the sidebar container where the focused cell is drawn (None: no zoom)


def display_controls(project: Project, zoom: bool = True) -> Display:
    """Sidebar controls for channels and guesses (and, with ``zoom``, the place of the focused
    cell's zoom). Their values outlive page switches (:func:`_kept`)."""
    side = st.sidebar
    hide = side.toggle(
        "Hide model guesses",
        **_kept("hide-guesses", False),
        help="Hide guess and confidence on the tiles, to avoid anchoring.",
    )
    by_side = side.toggle("Channels side by side", **_kept("side-by-side", False))
    zoom_area = None
    if zoom:
        side.markdown("**Focused cell**")
        zoom_area = side.container()
    visible, gains = [], []
    with side.expander("Channels: on/off and contrast", expanded=False):
        for i, (name, colour) in enumerate(zip(project.channel_names, project.channel_colours)):
            swatch = f'<span style="color:{css_colour(colour)}">&#9632;</span>'
            st.markdown(f"{swatch} **{md(name)}**", unsafe_allow_html=True)  # name: text only
            visible.append(st.toggle("show", **_kept(f"show-{i}", True)))
            gains.append(
                st.slider(
                    "contrast", 0.25, 5.0, step=0.25, **_kept(f"gain-{i}", 1.0),
                    label_visibility="collapsed",
                )
            )  # fmt: skip
    return Display(tuple(visible), tuple(gains), by_side, hide, zoom_area)


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


def tile_images(
    project: Project, cell_ids: list[str], display: Display
) -> list[npt.NDArray[np.uint8]]:
    """One RGB uint8 image per cell: the composite, or composite plus channels side by side."""
    crops = batch_crops(project, cell_ids)
    cache: dict[str, Any] = st.session_state[_CACHE]
    key = (display.visible, display.gains, display.side_by_side)
    if cache.get("tiles_key") != key:
        colours = project.channel_colours
        comps = composite(crops, colours, visible=display.visible, gains=display.gains)
        tiles = list(comps)
        if display.side_by_side:
            gap = np.zeros((comps.shape[1], 2, 3), dtype=np.uint8)
            tiles = [
                np.hstack([t, gap, channel_strip(c * _gains(display), colours)])
                for t, c in zip(comps, crops)
            ]
        big = [upscale(t, TILE_ZOOM) for t in tiles]
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


def _gains(display: Display) -> npt.NDArray[np.float32]:
    """(C, 1, 1) per-channel gains to scale one crop; hidden channels stay visible here."""
    return np.asarray(display.gains, dtype=np.float32)[:, None, None]


def render_zoom(
    project: Project, items: list[dict[str, Any]], index: int, label: str | None, display: Display
) -> None:
    """The focused cell ``items[index]``, large: composite, channels, id, path, guess, history."""
    item = items[index]
    crop = batch_crops(project, [it["cell_id"] for it in items])[index]
    colours = project.channel_colours
    big = composite(crop[None], colours, visible=display.visible, gains=display.gains)[0]
    st.image(png(upscale(big, DETAIL_ZOOM)), width="stretch")
    st.image(png(upscale(channel_strip(crop * _gains(display), colours), 2)), width="stretch")
    st.caption(" | ".join(md(n) for n in project.channel_names))
    st.markdown(f"**Tile {index + 1}** {code(item['cell_id'])}  \n{md(item['path'])}")
    st.caption(f"chosen by: {md(item['strategy'] or '-')}")
    if not display.hide_guesses:
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
    return rules


def guess_text(item: dict[str, Any]) -> str:
    """``"mitotic 82%"``, ``"mitotic"`` (confidence unknown) or ``"none yet"``."""
    if not item.get("guess"):
        return "none yet"
    conf = item.get("confidence")
    return item["guess"] if conf is None else f"{item['guess']} {conf:.0%}"
