"""Pictures of the batch: the channel controls, the tile images and the zoom on one cell.

The crops of a batch are read once (one ``PixelStore.read`` call) and kept in the session with
the tiles made from them, so a label click redraws from memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import streamlit as st
from PIL import Image

from datasets.render import channel_strip, composite, upscale
from labeling.project import Project

TILE_ZOOM = 2  # 64 px crops shown as 128 px tiles, enlarged without smoothing
DETAIL_ZOOM = 4  # the focused cell
_CACHE = "_tile_cache"


@dataclass(frozen=True)
class Display:
    """How tiles are drawn (from the sidebar)."""

    visible: tuple[bool, ...]  # per channel on/off
    gains: tuple[float, ...]  # per channel contrast multiplier
    side_by_side: bool  # composite followed by each channel, instead of the composite alone
    hide_guesses: bool  # hide the model's guess and confidence (avoids anchoring)
    zoom_area: Any  # the sidebar container where the focused cell is drawn


def display_controls(project: Project) -> Display:
    """Sidebar controls for channels and guesses."""
    side = st.sidebar
    hide = side.toggle(
        "Hide model guesses",
        key="hide-guesses",
        help="Hide guess and confidence on the tiles, to avoid anchoring.",
    )
    by_side = side.toggle("Channels side by side", key="side-by-side")
    side.markdown("**Focused cell**")
    zoom_area = side.container()
    visible, gains = [], []
    with side.expander("Channels: on/off and contrast", expanded=False):
        for i, (name, colour) in enumerate(zip(project.channel_names, project.channel_colours)):
            swatch = f'<span style="color:{colour}">&#9632;</span>'
            st.markdown(f"{swatch} **{name}**", unsafe_allow_html=True)
            visible.append(st.toggle("show", value=True, key=f"show-{i}"))
            gains.append(
                st.slider(
                    "contrast", 0.25, 5.0, 1.0, 0.25, key=f"gain-{i}", label_visibility="collapsed"
                )
            )
    return Display(tuple(visible), tuple(gains), by_side, hide, zoom_area)


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
    st.caption(" | ".join(project.channel_names))
    st.markdown(f"**Tile {index + 1}** `{item['cell_id']}`  \n{item['path']}")
    st.caption(f"chosen by: {item['strategy'] or '-'}")
    if not display.hide_guesses:
        st.caption(f"model guess: {guess_text(item)}")
    st.markdown(f"**Label:** {label or 'none yet'}")
    history = project.store.history(item["cell_id"])
    if history:
        lines = [
            f"- {h.labeled_at[:19].replace('T', ' ')} **{h.label}** by {h.annotator}"
            f" ({h.source}){' - undone' if h.undone else ''}"
            for h in history
        ]
        st.markdown("History:\n" + "\n".join(lines))


def guess_text(item: dict[str, Any]) -> str:
    """``"mitotic 82%"``, ``"mitotic"`` (confidence unknown) or ``"none yet"``."""
    if not item.get("guess"):
        return "none yet"
    conf = item.get("confidence")
    return item["guess"] if conf is None else f"{item['guess']} {conf:.0%}"
