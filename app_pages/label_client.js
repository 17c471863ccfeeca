// The Label page in the browser (run after each run of the page by st.html; nothing is fetched).
// 1. The page follows the focus: the focused tile is scrolled into view whenever it changes.
// 2. A class key, skip or arrow shows its effect at once (an optimistic mark): the focused tile
//    gets its label's colour and a "pending" badge and the focus moves on, while the server
//    commits the label and redraws the page; each redraw removes the marks it has replaced.
// The server stays the truth: keys still reach Streamlit's own shortcuts unchanged.
(() => {
  const S = __PS_DATA__;  // {focus, run, keys: {key: [name, colour]}, skip, done: [bool per tile]}
  const ps = (window.__psLabel = window.__psLabel || {});
  const moved = ps.serverFocus !== S.focus;  // scroll only when the focus changed
  ps.serverFocus = S.focus;
  ps.S = S;
  ps.focus = S.focus;
  ps.done = S.done.slice();
  const tile = (i) => document.querySelector(`.st-key-tile-${i}`);

  const clearPending = () => {
    document.querySelectorAll("[data-ps-pending]").forEach((el) => {
      el.removeAttribute("data-ps-pending");
      el.style.removeProperty("box-shadow");
    });
  };
  const showFocus = (scroll) => {
    document.body.setAttribute("data-ps-client", "1");
    document.querySelectorAll("[data-ps-focus]").forEach((el) => el.removeAttribute("data-ps-focus"));
    const el = tile(ps.focus);
    if (!el) return;
    el.setAttribute("data-ps-focus", "1");
    if (scroll) el.scrollIntoView({ block: "nearest", inline: "nearest" });
  };
  const nextOpen = (after) => {
    const n = ps.done.length;
    for (let step = 1; step <= n; step++) {
      const i = (after + step) % n;
      if (!ps.done[i]) return i;
    }
    return after;
  };
  const onKey = (e) => {
    const S = ps.S;
    if (!S || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    const n = ps.done.length;
    if (!n || !tile(0)) return;  // not on the Label page
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      ps.focus = (ps.focus + (e.key === "ArrowRight" ? 1 : -1) + n) % n;
      showFocus(true);
      return;
    }
    const hit = S.keys[e.key] || (e.key === S.skip ? [null, null] : null);
    if (!hit) return;
    const el = tile(ps.focus);
    if (!el) return;
    el.setAttribute("data-ps-pending", hit[0] === null ? "skipped" : hit[0]);
    if (hit[1]) el.style.setProperty("box-shadow", `inset 0 0 0 3px ${hit[1]}`, "important");
    ps.done[ps.focus] = true;
    ps.focus = nextOpen(ps.focus);
    showFocus(true);
  };
  if (!ps.installed) {
    document.addEventListener("keydown", onKey, true);
    ps.installed = true;
  }
  clearPending();
  // the tiles of this run may still be on their way: try again for a moment
  let tries = 0;
  const settle = () => {
    if (tile(ps.focus) || tries++ > 40) {
      showFocus(moved);
    } else {
      window.requestAnimationFrame(settle);
    }
  };
  settle();
})();
