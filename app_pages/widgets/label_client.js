// The Label page's keys, in the browser (a Streamlit v2 component: inline code, nothing fetched).
//
// Every key (a class key, s, z, n, the arrows) becomes an event in a queue that the component
// hands to the server as its state: the whole queue of events the server has not confirmed yet,
// numbered. A state value is never lost when the server is busy (Streamlit keeps the latest
// value, and the latest holds every unconfirmed event), so a fast typist loses no key; the server
// applies each event once, in order, and confirms the last number it applied (data.ack).
// Meanwhile the page shows each key's effect at once (an optimistic mark): the tile gets its
// label's colour and a "pending" badge, the focus moves on and is scrolled into view. Each
// drawing of the page replaces the marks of the events it has applied.
const RESEND_MS = 4000;  // unconfirmed events are sent again after this long without a drawing

export default function (component) {
  const { data, setStateValue } = component;
  const ps = (window.__psLabel = window.__psLabel || {
    token: Math.random().toString(36).slice(2),
    seq: 0,
    queue: [],
  });
  const tile = (i) => document.querySelector(`.st-key-tile-${i}`);
  const serverMoved = ps.data === undefined || ps.data.focus !== data.focus || ps.data.batch !== data.batch;
  ps.data = data;
  ps.send = setStateValue;
  ps.drawnAt = Date.now();
  if (data.ack && data.ack[0] === ps.token) {
    ps.queue = ps.queue.filter((e) => e[0] > data.ack[1]);
  }
  // events the run drawn here had not applied: a state value can be dropped when a click's
  // run overtakes a key's (seen under load: a key, then a click at once, and the key was never
  // applied). Send them again, through this drawing's setter, a few times at most in a row
  if (!ps.queue.length) {
    ps.resent = 0;
  } else if ((ps.resent || 0) < 3) {
    ps.resent = (ps.resent || 0) + 1;
    const events = ps.queue.slice();
    window.setTimeout(() => setStateValue("events", { token: ps.token, events }), 0);
  }
  let buffered = [];
  // the wait ends with the next batch, or with the server's answer to "next" on this batch
  // (with open tiles the first n only asks: the keys typed since are for this batch)
  const answered = data.ack && data.ack[0] === ps.token && data.ack[1] >= ps.waitSeq;
  if (ps.waitBatch !== undefined && (ps.waitBatch !== data.batch || answered)) {
    const moved = ps.waitBatch !== data.batch;
    ps.waitBatch = undefined;
    // keys typed while the answer was on its way; an n among them is a second n for this
    // batch, never a skip of the new one
    buffered = (ps.buffer || []).filter((k) => !(moved && k === data.nextKey));
    ps.buffer = [];
  }
  // clicks on a tile's class buttons go to the server as Streamlit's own widget values; their
  // marks last until the server's drawing shows the tile labeled (or a new batch)
  ps.clicks = ps.clicks || {};
  for (const [i, cell] of Object.entries(ps.clicks)) {
    const at = data.ids.indexOf(cell[0]);
    if (at < 0 || data.done[at]) delete ps.clicks[i];
  }

  const nextOpen = (done, after) => {
    const n = done.length;
    for (let step = 1; step <= n; step++) {
      const i = (after + step) % n;
      if (!done[i]) return i;
    }
    return after;
  };
  // the page as the server drew it, with the events not yet applied replayed on it
  const replay = () => {
    const d = ps.data;
    ps.done = d.done.slice();
    ps.focus = d.focus;
    ps.parked = d.parked;
    ps.pending = {};
    for (const [, kind, arg, cell] of ps.queue) {
      if (kind === "focus") {
        ps.focus = arg;
        ps.parked = false;
      }
      if (kind === "undo") ps.parked = false;
      if (kind !== "label") continue;
      const i = d.ids.indexOf(cell);
      if (i < 0) continue;
      ps.pending[i] = arg;
      ps.done[i] = true;
      ps.focus = nextOpen(ps.done, i);
      ps.parked = ps.done.every(Boolean);
    }
    for (const [i, [, name]] of Object.entries(ps.clicks)) {
      ps.pending[i] = name;
      ps.done[i] = true;
      if (+i === ps.focus) ps.focus = nextOpen(ps.done, +i);
    }
    if (Object.keys(ps.clicks).length && ps.done.every(Boolean)) ps.parked = true;
  };
  const draw = (scroll) => {
    document.body.setAttribute("data-ps-client", "1");
    document.querySelectorAll("[data-ps-pending]").forEach((el) => {
      el.removeAttribute("data-ps-pending");
      el.style.removeProperty("box-shadow");
    });
    document.querySelectorAll("[data-ps-focus]").forEach((el) => el.removeAttribute("data-ps-focus"));
    for (const [i, name] of Object.entries(ps.pending)) {
      const el = tile(i);
      if (!el) continue;
      el.setAttribute("data-ps-pending", name === ps.data.skipName ? "skipped" : name);
      const colour = ps.data.colours[name];
      if (colour) el.style.setProperty("box-shadow", `inset 0 0 0 3px ${colour}`, "important");
    }
    // each class button names its class on hover (the button shows only its key)
    const keyOf = {};
    for (const [k, name] of Object.entries(ps.data.keys)) keyOf[name] = k;
    document.querySelectorAll('div[class*="st-key-pick-"]').forEach((group) => {
      group.querySelectorAll("button").forEach((b, j) => {
        const name = ps.data.options[j];
        const tip = name === undefined ? "" : name + (keyOf[name] ? ` (key ${keyOf[name]})` : "");
        if (tip && b.title !== tip) {
          b.title = tip;
          b.setAttribute("aria-label", tip);
        }
      });
    });
    const el = tile(ps.focus);
    if (!el) return false;
    el.setAttribute("data-ps-focus", "1");
    if (scroll) el.scrollIntoView({ block: "nearest", inline: "nearest" });
    return true;
  };
  const push = (kind, arg, cell) => {
    ps.seq += 1;
    ps.queue.push([ps.seq, kind, arg, cell]);
    ps.send("events", { token: ps.token, events: ps.queue });
  };
  // one key's effect; false when the key is not the page's
  const handle = (key, repeat) => {
    const d = ps.data;
    const n = d.ids.length;
    if (key === "ArrowRight" || key === "ArrowLeft") {
      ps.focus = (ps.focus + (key === "ArrowRight" ? 1 : -1) + n) % n;
      ps.parked = false;
      push("focus", ps.focus, null);
    } else if (d.keys[key] !== undefined) {
      // the batch is done and the focus was left on its last tile: a slip (a double tap),
      // not a relabel; the arrows or a click on a tile choose a tile to relabel
      if (ps.parked) return true;
      const name = d.keys[key];
      const i = ps.focus;
      push("label", name, d.ids[i]);
      ps.pending[i] = name;
      ps.done[i] = true;
      ps.focus = nextOpen(ps.done, i);
      ps.parked = ps.done.every(Boolean);
    } else if (key === d.undoKey && !repeat) {
      ps.parked = false;  // the undone tile is open again: the next key labels it
      push("undo", null, null);
    } else if (key === d.nextKey && !repeat) {
      push("next", null, null);
      ps.waitBatch = d.batch;
      ps.waitSeq = ps.seq;
      ps.buffer = [];
    } else {
      return false;
    }
    return true;
  };
  const onKey = (e) => {
    const d = ps.data;
    if (!d || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && t.tagName === "INPUT" && e.key === "Enter") {
      // Enter confirms a box (annotator, new class, find a class): the keys go back to the
      // tiles, not on into the box (a class key after Enter renamed the annotator "alice1")
      window.setTimeout(() => t.blur(), 0);
      return;
    }
    // a box one types in keeps its keys; a slider (an input of type range inside), a switch
    // or a checkbox keeps only its arrows: the class keys, s, z and n still label
    const typing = t && (t.isContentEditable || /^(TEXTAREA|SELECT)$/.test(t.tagName)
      || (t.tagName === "INPUT" && !/^(range|checkbox|radio|color|button|submit)$/i.test(t.type)));
    if (typing) return;
    if (t && t.tagName === "INPUT" && /^Arrow/.test(e.key)) return;
    if (!d.ids.length || !tile(0)) return;  // not on the Label page
    const known = d.keys[e.key] !== undefined || /^Arrow(Left|Right)$/.test(e.key)
      || e.key === d.undoKey || e.key === d.nextKey;
    if (ps.waitBatch !== undefined) {
      // the next batch is on its way: keep the keys for it (applied when it is drawn)
      if (known && !(e.repeat && e.key === d.nextKey)) ps.buffer.push(e.key);
      if (known) { e.preventDefault(); e.stopPropagation(); }
      return;
    }
    if (handle(e.key, e.repeat)) {
      e.preventDefault();
      e.stopPropagation();
      draw(true);
    }
  };
  const onClick = (e) => {
    const d = ps.data;
    const button = e.target.closest && e.target.closest('div[class*="st-key-pick-"] button');
    if (!d || !button) return;
    const el = button.closest('div[class*="st-key-tile-"]');
    const m = el && el.className.match(/st-key-tile-(\d+)/);
    if (!m) return;
    const buttons = [...button.parentElement.querySelectorAll("button")];
    const name = d.options[buttons.indexOf(button)];
    if (name === undefined) return;
    const i = +m[1];
    ps.clicks[i] = [d.ids[i], name];
    ps.pending[i] = name;
    ps.done[i] = true;
    if (i === ps.focus) {
      // a click labels the focused tile: the focus moves on at once, as after a key, so the
      // next key is for the next open tile (the server's drawing may come a second later)
      ps.focus = nextOpen(ps.done, i);
      push("focus", ps.focus, null);
    }
    if (ps.done.every(Boolean)) ps.parked = true;
    draw(false);
  };
  if (!ps.installed) {
    document.addEventListener("keydown", onKey, true);
    document.addEventListener("click", onClick, true);
    // events the server has not confirmed and no drawing for a while: the server was away (a
    // restart, a lost connection) and the state value sent then went nowhere. Send the queue
    // again every few seconds until a drawing confirms it, so that no key waits for the next
    // key to reach the labels (the server applies each event once, whatever is sent twice)
    window.setInterval(() => {
      const now = Date.now();
      if (!ps.queue.length || !ps.send || now - ps.drawnAt < RESEND_MS) return;
      if (now - (ps.resentAt || 0) < RESEND_MS) return;
      ps.resentAt = now;
      ps.send("events", { token: ps.token, events: ps.queue.slice() });
    }, 1000);
    ps.installed = true;
  }
  replay();
  for (const key of buffered) {
    if (ps.waitBatch === undefined) handle(key, false);
    else ps.buffer.push(key);  // an n among them asked again: the rest wait for its answer
  }
  // the tiles of this run may still be on their way: try again for a moment
  let tries = 0;
  const settle = () => {
    if (!draw(serverMoved) && tries++ < 60) window.requestAnimationFrame(settle);
  };
  settle();
}
