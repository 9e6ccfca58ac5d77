// The Map tab: every indexed image as a point of the stored 2-D layout (`lookalike map`), drawn on a canvas.
// Points arrive as one binary block (float32 x,y per image, then uint16 colour codes per colouring) and are drawn
// by writing pixels into an ImageData buffer, which stays well under a frame at 100,000 points where one canvas
// path call per point would not. Hover finds the nearest point through a uniform grid built once.
"use strict";

const LookalikeMap = (() => {
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#aec7e8",
  ];
  const NONE = [110, 118, 135];
  const GRID = 128;
  const m = {
    meta: null, count: 0, xy: null, codes: {}, color: "label", view: { x: 0, y: 0, s: 1 }, dpr: 1,
    selected: new Set(), suspects: new Set(), showSuspects: false, hover: -1, lastFrameMs: 0, drawn: 0,
    loaded: false, loading: null, grid: null, onSearch: null,
  };
  const $ = (id) => document.getElementById(id);

  function hexRgb(h) { return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)); }
  const RGB = PALETTE.map(hexRgb);

  // What an empty ramp means: the data is missing, or the step that makes it has not run.
  const EMPTY_RAMP = { time: "no capture times", uniqueness: "no uniqueness scores: run `lookalike unique`" };

  function rampRgb(t) {  // viridis-like: dark blue (old, has copies) -> green -> yellow (new, isolated)
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const f = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(f));
    const u = f - i;
    return stops[i].map((c, j) => Math.round(c + (stops[i + 1][j] - c) * u));
  }

  // Colour table per code for the current colouring: ABGR uint32 (ImageData is RGBA bytes, little-endian).
  function colourTable() {
    const c = m.meta.colorings[m.color];
    const ramp = c.kind === "ramp";
    const n = ramp ? 256 : c.legend.length + 1;
    const table = new Uint32Array(n);
    for (let code = 0; code < n; code++) {
      let rgb = NONE;
      if (code > 0) rgb = ramp ? rampRgb((code - 1) / 254) : RGB[(code - 1) % RGB.length];
      table[code] = (255 << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0];
    }
    return table;
  }

  function legend() {
    const c = m.meta.colorings[m.color];
    const box = $("map-legend");
    box.replaceChildren();
    if (c.kind === "ramp") {
      if (!c.legend.length) { box.append(li(EMPTY_RAMP[m.color] || "nothing to colour by", NONE)); return; }
      const bar = document.createElement("span");
      bar.className = "ramp";
      bar.style.background = `linear-gradient(90deg, ${[0, .25, .5, .75, 1].map((t) => `rgb(${rampRgb(t)})`).join(",")})`;
      const row = document.createElement("li");
      const end = (text) => (m.color === "time" ? text.slice(0, 10) : text);  // time: the dates, not the hours
      row.append(end(c.legend[0]), bar, end(c.legend[1]));
      box.append(row);
      return;
    }
    if (!c.legend.length) {
      box.append(li(m.color === "cluster" ? "no clusters: run `lookalike cluster`" : "nothing to colour by", NONE));
      return;
    }
    c.legend.slice(0, 30).forEach((name, i) => box.append(li(name, RGB[i % RGB.length])));
    if (c.legend.length > 30) box.append(li(`… ${c.legend.length - 30} more`, NONE));
  }

  function li(text, rgb) {
    const row = document.createElement("li");
    const dot = document.createElement("i");
    dot.style.background = `rgb(${rgb})`;
    row.append(dot, text);
    return row;
  }

  // --- view transform: data [0,1]² -> CSS pixels ---------------------------------------------------------------

  function fit() {
    const canvas = $("map-canvas");
    const w = canvas.clientWidth, h = canvas.clientHeight;
    const s = Math.min(w, h) * 0.92;
    m.view = { s, x: (w - s) / 2, y: (h - s) / 2 };
  }
  const sx = (i) => m.view.x + m.xy[2 * i] * m.view.s;
  const sy = (i) => m.view.y + (1 - m.xy[2 * i + 1]) * m.view.s;

  function resize() {
    const canvas = $("map-canvas");
    m.dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * m.dpr)), h = Math.max(1, Math.round(canvas.clientHeight * m.dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; m.image = null; }
  }

  function draw() {
    const t0 = performance.now();
    const canvas = $("map-canvas");
    if (!m.loaded || canvas.clientWidth === 0) return 0;
    resize();
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height;
    if (!m.image) { m.image = ctx.createImageData(W, H); m.pixels = new Uint32Array(m.image.data.buffer); }
    const px = m.pixels;
    px.fill(0xff221711);  // background #111722
    const codes = m.codes[m.color], table = colourTable();
    const d = m.dpr, vx = m.view.x * d, vy = m.view.y * d, vs = m.view.s * d, xy = m.xy;
    const r = m.view.s > 3000 ? 2 : 1;  // dots grow when zoomed in
    let drawn = 0;
    const plot = (i, colour, rad) => {
      const cx = (vx + xy[2 * i] * vs) | 0, cy = (vy + (1 - xy[2 * i + 1]) * vs) | 0;
      if (cx < rad || cy < rad || cx >= W - rad || cy >= H - rad) return false;
      for (let yy = cy - rad; yy <= cy + rad; yy++) {
        const row = yy * W;
        for (let xx = cx - rad; xx <= cx + rad; xx++) px[row + xx] = colour;
      }
      return true;
    };
    for (let i = 0; i < m.count; i++) if (plot(i, table[codes[i]], r)) drawn++;
    const white = 0xffffffff;
    for (const i of m.selected) plot(i, white, r + 1);
    ctx.putImageData(m.image, 0, 0);
    ctx.save();
    ctx.scale(d, d);
    if (m.showSuspects) {
      ctx.strokeStyle = "#ff3b30";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      for (const i of m.suspects) { ctx.moveTo(sx(i) + 5, sy(i)); ctx.arc(sx(i), sy(i), 5, 0, 2 * Math.PI); }
      ctx.stroke();
    }
    if (m.hover >= 0) {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(sx(m.hover), sy(m.hover), 6, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (m.box) {
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "rgba(255,255,255,.12)";
      ctx.setLineDash([4, 3]);
      const { x0, y0, x1, y1 } = m.box;
      ctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    }
    ctx.restore();
    m.drawn = drawn;
    canvas.dataset.drawn = String(drawn);
    m.lastFrameMs = performance.now() - t0;
    return m.lastFrameMs;
  }

  let pending = false;
  function redraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }

  // --- hit testing -----------------------------------------------------------------------------------------------

  function buildGrid() {
    const counts = new Uint32Array(GRID * GRID + 1);
    const cell = new Uint32Array(m.count);
    for (let i = 0; i < m.count; i++) {
      const gx = Math.min(GRID - 1, Math.max(0, (m.xy[2 * i] * GRID) | 0));
      const gy = Math.min(GRID - 1, Math.max(0, (m.xy[2 * i + 1] * GRID) | 0));
      cell[i] = gy * GRID + gx;
      counts[cell[i] + 1]++;
    }
    for (let c = 1; c <= GRID * GRID; c++) counts[c] += counts[c - 1];
    const order = new Uint32Array(m.count), fill = counts.slice(0, GRID * GRID);
    for (let i = 0; i < m.count; i++) order[fill[cell[i]]++] = i;
    m.grid = { start: counts, order };
  }

  function nearest(cssX, cssY, maxPx = 8) {
    const dx = (cssX - m.view.x) / m.view.s, dy = 1 - (cssY - m.view.y) / m.view.s, rad = maxPx / m.view.s;
    const g0x = Math.max(0, Math.floor((dx - rad) * GRID)), g1x = Math.min(GRID - 1, Math.floor((dx + rad) * GRID));
    const g0y = Math.max(0, Math.floor((dy - rad) * GRID)), g1y = Math.min(GRID - 1, Math.floor((dy + rad) * GRID));
    let best = -1, bestD = maxPx * maxPx;
    for (let gy = g0y; gy <= g1y; gy++) {
      for (let gx = g0x; gx <= g1x; gx++) {
        const c = gy * GRID + gx;
        for (let k = m.grid.start[c]; k < m.grid.start[c + 1]; k++) {
          const i = m.grid.order[k];
          const ex = sx(i) - cssX, ey = sy(i) - cssY, dd = ex * ex + ey * ey;
          if (dd <= bestD) { bestD = dd; best = i; }
        }
      }
    }
    return best;
  }

  function selectBox(x0, y0, x1, y1, add = false) {
    const lx = Math.min(x0, x1), hx = Math.max(x0, x1), ly = Math.min(y0, y1), hy = Math.max(y0, y1);
    if (!add) m.selected.clear();
    for (let i = 0; i < m.count; i++) {
      const x = sx(i), y = sy(i);
      if (x >= lx && x <= hx && y >= ly && y <= hy) m.selected.add(i);
    }
    selectionChanged();
  }

  function selectionChanged() {
    const n = m.selected.size;
    $("map-selected").textContent = n ? `${n.toLocaleString()} selected` : "";
    for (const id of ["map-export", "map-sheet", "map-clear"]) $(id).disabled = n === 0;
    redraw();
  }

  // --- tooltip -----------------------------------------------------------------------------------------------------

  function showTip(i, cssX, cssY) {
    const tip = $("map-tip");
    if (i < 0) { tip.hidden = true; return; }
    const img = $("map-tip-img");
    const src = `/api/thumbnails/${i}`;
    if (img.getAttribute("src") !== src) img.src = src;  // loaded only now, for the point under the cursor
    const parts = [];
    for (const c of ["label", "cluster", "folder"]) {
      const code = m.codes[c][i];
      if (code) parts.push(m.meta.colorings[c].legend[code - 1]);
    }
    const u = m.codes.uniqueness ? m.codes.uniqueness[i] : 0;
    if (u) parts.push(`uniqueness ${((u - 1) / 254).toFixed(2)}`);
    if (m.suspects.has(i)) parts.push("suspect label");
    $("map-tip-text").textContent = `#${i} · ${parts.join(" · ")}`;
    tip.dataset.id = String(i);
    const wrap = $("map-canvas");
    tip.style.left = `${Math.min(cssX + 14, wrap.clientWidth - 190)}px`;
    tip.style.top = `${Math.min(cssY + 14, wrap.clientHeight - 170)}px`;
    tip.hidden = false;
  }

  // --- loading -----------------------------------------------------------------------------------------------------

  async function load() {
    if (m.loaded) { redraw(); return; }
    if (m.loading) return m.loading;
    m.loading = (async () => {
      const meta = await (await fetch("/api/map")).json();
      if (!meta.available) {
        const box = $("map-error");
        box.textContent = meta.reason || "no map";
        box.hidden = false;
        $("map-canvas").dataset.drawn = "0";
        return;
      }
      const buf = await (await fetch(meta.points.url)).arrayBuffer();
      const n = meta.count;
      m.meta = meta;
      m.count = n;
      m.xy = new Float32Array(buf, 0, 2 * n);
      meta.points.order.forEach((c, k) => { m.codes[c] = new Uint16Array(buf, 8 * n + 2 * n * k, n); });
      m.suspects = new Set(meta.suspects);
      m.color = meta.color in meta.colorings ? meta.color : "label";
      $("map-color").value = m.color;
      $("map-suspects-n").textContent = meta.suspects_checked ? `(${meta.suspects.length})` : "(not computed)";
      $("map-suspects").disabled = !meta.suspects.length;
      const info = meta.info || {};
      $("map-meta").textContent = `${n.toLocaleString()} images · ${meta.method} · made ${(info.created || "").slice(0, 16).replace("T", " ")}`;
      buildGrid();
      m.loaded = true;
      legend();
      resize();
      fit();
      draw();
    })();
    return m.loading;
  }

  function download(name, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function postIds(url) {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids: [...m.selected].sort((a, b) => a - b) }),
    });
    if (!response.ok) {
      let msg = `request failed (HTTP ${response.status})`;
      try { msg = (await response.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return response;
  }

  function init(onSearch) {
    m.onSearch = onSearch;
    const canvas = $("map-canvas");
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      drag = { x: e.offsetX, y: e.offsetY, vx: m.view.x, vy: m.view.y, box: e.shiftKey, moved: false };
      if (drag.box) m.box = { x0: e.offsetX, y0: e.offsetY, x1: e.offsetX, y1: e.offsetY };
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!m.loaded) return;
      if (drag) {
        if (Math.abs(e.offsetX - drag.x) + Math.abs(e.offsetY - drag.y) > 3) drag.moved = true;
        if (drag.box) { m.box.x1 = e.offsetX; m.box.y1 = e.offsetY; }
        else { m.view.x = drag.vx + e.offsetX - drag.x; m.view.y = drag.vy + e.offsetY - drag.y; }
        $("map-tip").hidden = true;
        redraw();
        return;
      }
      const i = nearest(e.offsetX, e.offsetY);
      if (i !== m.hover) { m.hover = i; redraw(); }
      showTip(i, e.offsetX, e.offsetY);
    });
    canvas.addEventListener("pointerup", (e) => {
      if (!drag) return;
      if (drag.box && drag.moved) selectBox(m.box.x0, m.box.y0, m.box.x1, m.box.y1, e.altKey);
      else if (!drag.moved) {
        const i = nearest(e.offsetX, e.offsetY);
        if (i >= 0 && m.onSearch) m.onSearch(i);
      }
      drag = null;
      m.box = null;
      redraw();
    });
    canvas.addEventListener("pointerleave", () => { m.hover = -1; $("map-tip").hidden = true; redraw(); });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const f = Math.exp(-e.deltaY * 0.0015);
      const s = Math.max(50, Math.min(2e6, m.view.s * f)), k = s / m.view.s;
      m.view.x = e.offsetX - (e.offsetX - m.view.x) * k;
      m.view.y = e.offsetY - (e.offsetY - m.view.y) * k;
      m.view.s = s;
      redraw();
    }, { passive: false });
    canvas.addEventListener("dblclick", () => { fit(); redraw(); });
    window.addEventListener("resize", () => { if (m.loaded) redraw(); });
    $("map-color").addEventListener("change", (e) => { m.color = e.target.value; legend(); redraw(); });
    $("map-suspects").addEventListener("change", (e) => { m.showSuspects = e.target.checked; redraw(); });
    $("map-clear").addEventListener("click", () => { m.selected.clear(); selectionChanged(); });
    $("map-export").addEventListener("click", async () => {
      try {
        const body = await (await postIds("/api/map/selection")).json();
        download("selection.json", JSON.stringify(body.paths, null, 1));
      } catch (e) { $("map-error").textContent = e.message; $("map-error").hidden = false; }
    });
    $("map-sheet").addEventListener("click", async () => {
      try {
        const blob = await (await postIds("/api/map/sheet.png")).blob();
        const img = $("map-sheet-img");
        if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
        img.src = URL.createObjectURL(blob);
        $("map-sheet-box").hidden = false;
        $("map-sheet-box").scrollIntoView({ behavior: "smooth" });
      } catch (e) { $("map-error").textContent = e.message; $("map-error").hidden = false; }
    });
    $("map-sheet-close").addEventListener("click", () => { $("map-sheet-box").hidden = true; });
  }

  // For tests and benchmarks: where a point is on screen, and the state they check.
  return {
    init, load, draw, redraw, fit, selectBox, nearest,
    screenOf: (i) => ({ x: sx(i), y: sy(i) }),
    get state() { return m; },
  };
})();
window.lookalikeMap = LookalikeMap;
