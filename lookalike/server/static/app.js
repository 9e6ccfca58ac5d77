// lookalike page: upload or pick a photo, show its look-alikes, its predicted class, and the index's clusters.
// Plain JS on the JSON API (see /docs); no build step, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { health: null, file: null, fileUrl: null, id: null, seq: 0, clustersLoaded: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") Object.assign(node.style, v);  // CSSOM, which the CSP allows (a style attribute it does not)
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    throw new Error("cannot reach the server (" + e.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (response.status === 401) showLogin();
  if (!response.ok) {
    throw new Error((body && body.error) || `request failed (HTTP ${response.status})`);
  }
  return body;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

// --- token (a server on the network asks for it once; the server keeps it in an HttpOnly cookie) ----------------

function showLogin() {
  state.locked = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-login";
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("token", $("token").value);
  const response = await fetch("/api/login", { method: "POST", body: form });
  if (response.ok) { location.reload(); return; }
  showError($("login-error"), response.status === 401 ? "wrong token" : `login failed (HTTP ${response.status})`);
}

// --- search -----------------------------------------------------------------------------------------------------

function params() {
  const k = $("k").value;
  const mode = document.querySelector("input[name=mode]:checked").value;
  const rerank = $("rerank") && $("rerank").checked ? 100 : 0;
  const collapse = Boolean($("collapse") && $("collapse").checked);
  return { k, mode, rerank, collapse };
}

// The filter fields as the API spells them; empty ones are left out (the server validates the rest).
function filters() {
  const out = {};
  if ($("f-after").value) out.after = $("f-after").value;
  if ($("f-before").value) out.before = $("f-before").value;
  const point = $("f-point").value.trim(), km = $("f-km").value.trim();
  if (point || km) out.near = `${point},${km || "1"}`;
  if ($("f-path").value.trim()) out.path = $("f-path").value.trim();
  if ($("f-label").value) out.label = $("f-label").value;
  if ($("f-min-score").value.trim()) out.min_score = $("f-min-score").value.trim();
  return out;
}

async function runSearch() {
  if (!state.file && state.id == null) return;
  const { k, mode, rerank, collapse } = params();
  const seq = ++state.seq;  // only the latest request may draw
  const form = new FormData();
  form.append("k", k);
  form.append("mode", mode);
  for (const [name, value] of Object.entries(filters())) form.append(name, value);
  form.append("rerank", rerank);
  if (collapse) form.append("collapse", "true");
  if (state.id != null) form.append("id", state.id);
  else form.append("file", state.file, state.file.name);

  showError($("error"), "");
  $("empty").hidden = true;
  $("loading").hidden = false;
  $("grid").classList.add("busy");
  document.body.classList.add("searching");
  try {
    const result = await api("/api/search", { method: "POST", body: form });
    if (seq !== state.seq) return;
    drawResult(result);
  } catch (e) {
    if (seq !== state.seq) return;
    showError($("error"), e.message);
    $("grid").replaceChildren();
    $("results-meta").textContent = "";
    $("summary").hidden = true;
    $("empty").hidden = false;
  } finally {
    if (seq === state.seq) {
      $("loading").hidden = true;
      $("grid").classList.remove("busy");
      document.body.classList.remove("searching");
    }
  }
}

function drawQuery(query, result) {
  $("summary").hidden = false;
  $("query-img").src = query.id != null ? query.thumbnail : (query.preview || state.fileUrl);
  $("query-name").textContent = query.name + (query.label ? ` · ${query.label}` : "");
  const cls = result && result.query_class;
  $("query-class").textContent = cls ? `searching ${result.mode === "same-class" ? "within" : "outside"} ${cls} (${result.class_source})` : "";
}

function drawPrediction(prediction) {
  const box = $("prediction");
  if (!prediction || !prediction.probabilities) { box.hidden = true; return; }
  box.hidden = false;
  $("pred-label").textContent = prediction.label;
  $("pred-method").textContent = prediction.method ? `(${prediction.method})` : "";
  const entries = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 6);
  $("pred-bars").replaceChildren(...entries.map(([name, p], i) => el("li", { class: i === 0 ? "best" : "" },
    el("span", { class: "name", text: name, title: name }),
    el("span", { class: "track" }, el("span", { class: "fill", style: { width: `${(100 * p).toFixed(1)}%`, display: "block" } })),
    el("span", { class: "pct", text: `${(100 * p).toFixed(1)}%` }),
  )));
}

function showMatches(a, b) {
  // the matched keypoints of the query and one result, drawn by the server (/api/matches.png)
  const box = el("div", { class: "match-overlay", onclick: () => box.remove(), title: "click to close" },
    el("img", { src: `/api/matches.png?a=${a}&b=${b}`, alt: "matched keypoints" }));
  document.body.append(box);
}

function matchCard(m) {
  const pct = Math.max(0, Math.min(1, m.score)) * 100;
  const verified = m.inliers != null
    ? el("span", {
      class: "chip inliers", text: `${m.inliers} inliers`,
      title: state.id != null ? "click to see the matched keypoints" : "geometric verification against the query",
      onclick: state.id != null ? (e) => { e.stopPropagation(); showMatches(state.id, m.id); } : null,
    })
    : null;
  return el("button", {
    class: "card match", type: "button", title: `${m.name}\nclick to search from this image`,
    "data-id": m.id, onclick: () => searchById(m.id),
  },
    el("div", { class: "thumb" },
      el("img", { src: m.thumbnail, alt: m.name, loading: "lazy" }),
      el("span", { class: "rank", text: `#${m.rank}` })),
    el("div", { class: "info" },
      el("div", { class: "row" },
        el("span", { class: "score", text: m.score.toFixed(3) }),
        verified,
        m.folded && m.folded.length ? el("span", {
          class: "chip copies", text: `and ${m.folded.length} ${m.folded.length === 1 ? "copy" : "copies"}`,
          title: `copies folded into this result: ids ${m.folded.join(", ")}`,
        }) : null,
        m.label ? el("span", { class: "chip", text: m.label, title: m.label }) : null),
      el("div", { class: "scorebar" }, el("div", { style: { width: `${pct.toFixed(1)}%` } })),
      el("div", { class: "name", text: m.name })),
  );
}

function drawResult(r) {
  drawQuery(r.query, r);
  drawPrediction(r.prediction);
  const modeText = { "all": "all images", "same-class": `class ${r.query_class}`, "other-classes": `classes other than ${r.query_class}` }[r.mode];
  $("results-title").textContent = `${r.matches.length} look-alike${r.matches.length === 1 ? "" : "s"}`;
  $("results-meta").textContent = `in ${modeText} · ${(r.seconds * 1000).toFixed(0)} ms`;
  $("grid").replaceChildren(...r.matches.map(matchCard));
  const filtered = r.filter && Object.keys(r.filter).length;
  if (filtered) $("results-meta").textContent += ` · filtered: ${Object.entries(r.filter).map(([k, v]) => `${k} ${v}`).join(", ")}`;
  $("empty").hidden = r.matches.length > 0;
  if (!r.matches.length) $("empty").firstElementChild.textContent = r.note || "No matches in this mode.";
  $("empty").classList.toggle("note", !!r.note);
}

function useFile(file) {
  if (!file) return;
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.file = file;
  state.fileUrl = URL.createObjectURL(file);
  state.id = null;
  $("drop-hint").textContent = file.name;
  drawQuery({ id: null, name: file.name }, null);
  if (location.hash !== "#search") history.replaceState(null, "", "#search");
  runSearch();
}

function searchById(id) {
  state.id = id;
  state.file = null;
  history.replaceState(null, "", `#id=${id}`);
  showView("search");
  window.scrollTo({ top: 0, behavior: "smooth" });
  runSearch();
}

// --- clusters ---------------------------------------------------------------------------------------------------

const SHEET = 24;

function clusterCard(c) {
  const sheet = el("div", { class: "sheet" });
  const addThumbs = (ids) => sheet.append(...ids.map((id) => el("button", {
    type: "button", title: `image ${id} · click to search from it`, onclick: () => searchById(id),
  }, el("img", { src: `/api/thumbnails/${id}`, alt: `image ${id}`, loading: "lazy" }))));
  addThumbs(c.ids.slice(0, SHEET));
  const labels = Object.entries(c.labels || {}).slice(0, 4).map(([k, v]) => `${k} ${v}`).join(", ");
  const card = el("article", { class: "panel cluster" },
    el("header", {},
      el("h3", { text: `Cluster ${c.id}` }),
      el("span", { class: "muted", text: `${c.size} image${c.size === 1 ? "" : "s"}` }),
      labels ? el("span", { class: "chip", text: labels }) : null,
      el("a", { class: "sheet-link", href: `/api/clusters/${c.id}/sheet.png`, target: "_blank", text: "contact sheet (PNG)" })),
    sheet);
  if (c.ids.length > SHEET) {
    const more = el("button", { class: "more", type: "button", text: `Show all ${c.ids.length}` });
    more.addEventListener("click", () => { addThumbs(c.ids.slice(SHEET)); more.remove(); });
    card.append(more);
  }
  return card;
}

async function loadClusters() {
  if (state.clustersLoaded) return;
  const box = $("clusters");
  box.replaceChildren(el("div", { class: "loading inline" }, el("div", { class: "spinner" }), el("span", { text: "Loading clusters…" })));
  try {
    const data = await api("/api/clusters");
    state.clustersLoaded = true;
    if (!data.available || !data.clusters.length) {
      box.replaceChildren(el("div", { class: "empty note", text: "This index has no clusters yet: run `lookalike cluster --index INDEX_DIR` on it, then reload this page." }));
      return;
    }
    $("clusters-meta").textContent = `${data.clusters.length} clusters · ${data.noise.length} images in none`;
    box.replaceChildren(...data.clusters.map(clusterCard));
  } catch (e) {
    box.replaceChildren();
    showError($("clusters-error"), e.message);
  }
}

// --- duplicates -------------------------------------------------------------------------------------------------

state.keepers = new Map();  // group id -> chosen keeper id (only where the person flipped it)

function dupCard(g) {
  const keeperId = () => state.keepers.get(g.id) ?? g.files[0].id;
  const row = el("div", { class: "dup-row" });
  const draw = () => row.replaceChildren(...g.files.map((f) => {
    // a file under a reference folder, or the RAW+JPEG sibling of a kept one, stays whoever is the keeper
    const pinned = g.action === "remove-others" && f.role === "keep" && f.id !== g.files[0].id;
    const keep = g.action !== "remove-others" || f.id === keeperId() || pinned;
    const facts = f.facts || {};
    return el("figure", { class: "dup" + (keep ? " keeper" : ""), "data-id": f.id },
      el("button", { type: "button", title: g.action !== "remove-others" ? "all kept" : "keep this one",
        onclick: () => { if (g.action === "remove-others") { state.keepers.set(g.id, f.id); draw(); } } },
        el("img", { src: f.thumbnail, alt: f.path, loading: "lazy" })),
      el("figcaption", {},
        el("span", { class: "badge", text: keep ? (pinned ? "keep (reference or sibling)" : "keep") : "remove" }),
        el("span", { class: "dup-name", text: f.path }),
        el("small", { class: "muted", text: `${facts.width}×${facts.height} · ${(f.size / 1024).toFixed(0)} KB · sharpness ${facts.sharpness}` })));
  }));
  draw();
  const ids = g.files.map((f) => f.id);
  const decide = async (kind) => {
    const form = new FormData();
    form.append("kind", kind);
    for (const id of ids) form.append("ids", id);
    try {
      await api("/api/duplicates/decisions", { method: "POST", body: form });
      state.dupsLoaded = false;
      loadDuplicates();
    } catch (e) { showError($("dups-error"), e.message); }
  };
  return el("article", { class: "panel cluster dup-group", "data-group": g.id },
    el("header", {},
      el("h3", { text: `Group ${g.id}` }),
      el("span", { class: "muted", text: g.action === "keep-all" ? "all kept (your decision)"
        : g.action === "reference-only" ? "all in reference folders: not acted on" : `suggested: ${g.why}` }),
      el("button", { type: "button", class: "not-dups", text: "Not duplicates", onclick: () => decide("not-duplicates") }),
      g.action === "keep-all" ? null : el("button", { type: "button", class: "keep-all", text: "Keep all", onclick: () => decide("keep-all") })),
    row);
}

async function loadDuplicates() {
  if (state.dupsLoaded) return;
  const box = $("dups");
  showError($("dups-error"), "");
  box.replaceChildren(el("div", { class: "loading inline" }, el("div", { class: "spinner" }), el("span", { text: "Checking copies pixel for pixel…" })));
  try {
    const plan = await api("/api/duplicates");
    state.dupsLoaded = true;
    state.keepers.clear();
    const s = plan.summary;
    $("dups-meta").textContent = `${s.groups} groups · ${s.remove} copies to remove (${(s.bytes / 1048576).toFixed(1)} MB)`;
    $("dups-download").hidden = !s.groups;
    const none = state.health && state.health.images === 0
      ? "This index has no images: add photos to its folder and run `lookalike index` on it."
      : "No copies found: no two images here are the same photo (checked pixel for pixel). New photos are checked " +
        "once `lookalike index` has added them.";
    box.replaceChildren(...(plan.groups.length ? plan.groups.map(dupCard) : [el("div", { class: "empty note", text: none })]));
  } catch (e) {
    box.replaceChildren();
    showError($("dups-error"), e.message);
  }
}

async function downloadPlan() {
  const form = new FormData();
  for (const id of state.keepers.values()) form.append("keepers", id);
  try {
    const plan = await api("/api/duplicates/plan", { method: "POST", body: form });
    const url = URL.createObjectURL(new Blob([JSON.stringify(plan, null, 2)], { type: "application/json" }));
    const a = el("a", { href: url, download: "dedupe-plan.json" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) { showError($("dups-error"), e.message); }
}

// --- views and start-up -----------------------------------------------------------------------------------------

function showView(name) {
  for (const v of ["search", "clusters", "map", "duplicates"]) {
    $(`view-${v}`).hidden = name !== v;
    $(`tab-${v}`).classList.toggle("active", name === v);
    $(`tab-${v}`).setAttribute("aria-selected", String(name === v));
  }
  if (name === "clusters") loadClusters();
  if (name === "map") LookalikeMap.load().catch((e) => showError($("map-error"), e.message));
  if (name === "duplicates") loadDuplicates();
}

function route() {
  if (state.locked) return;
  const hash = location.hash;
  const m = hash.match(/^#id=(\d+)$/);
  if (m) {
    if (state.id !== Number(m[1])) { state.id = Number(m[1]); state.file = null; runSearch(); }
    showView("search");
  } else {
    const views = { "#clusters": "clusters", "#map": "map", "#duplicates": "duplicates" };
    showView(views[hash] || "search");
  }
}

async function start() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => useFile(e.dataTransfer.files[0]));
  // a photo dropped anywhere on the page is a query, not a navigation away
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files.length) useFile(e.dataTransfer.files[0]); });

  $("k").addEventListener("input", () => { $("k-out").textContent = $("k").value; });
  $("k").addEventListener("change", runSearch);
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", runSearch);
  for (const f of document.querySelectorAll("#filters input, #filters select")) f.addEventListener("change", runSearch);
  $("filters-clear").addEventListener("click", () => {
    for (const f of document.querySelectorAll("#filters input, #filters select")) f.value = "";
    runSearch();
  });
  LookalikeMap.init(searchById);
  $("rerank").addEventListener("change", runSearch);
  if ($("collapse")) $("collapse").addEventListener("change", runSearch);
  window.addEventListener("hashchange", route);
  $("login-form").addEventListener("submit", login);
  $("dups-download").addEventListener("click", downloadPlan);

  try {
    const h = await api("/api/health");
    state.health = h;
    $("index-meta").textContent = `${h.images.toLocaleString()} images · ${h.model}` +
      (h.classes.length ? ` · ${h.classes.length} classes` : " · no labels");
    $("k").max = Math.min(h.max_k, 50);
    if (h.formats) $("file").accept = ["image/*", ...h.formats].join(",");  // HEIC and RAW are not image/* everywhere
    $("tab-clusters").title = h.clusters ? "" : "no clusters yet: run `lookalike cluster`";
    $("tab-map").title = h.map ? "" : "no current map: run `lookalike map`";
    $("f-label").append(...h.classes.map((c) => el("option", { value: c, text: c })));
    if (!h.images) {
      $("index-meta").textContent = `no images yet · ${h.model}: add photos and run \`lookalike index\``;
      $("empty").replaceChildren(
        el("p", { text: "This index has no images: add photos to its folder and run `lookalike index` on it, then reload this page." }));
      $("empty").classList.add("note");
    }
    if (!h.classes.length) {
      for (const r of document.querySelectorAll("input[name=mode]")) {
        if (r.value !== "all") { r.disabled = true; r.parentElement.classList.add("disabled"); r.parentElement.title = "this index has no labels"; }
      }
    }
  } catch (e) {
    $("index-meta").textContent = "";
    if (!state.locked) showError($("error"), e.message);
  }
  route();
  setInterval(followCommits, 2000);
}

// --- a live collection: the server follows the index's commits; say when the collection changed ----------------

async function followCommits() {
  if (!state.health || state.locked || document.hidden) return;
  let h;
  try { h = await api("/api/health"); } catch (e) { return; }  // a restart or a network hiccup: try again later
  if (h.commit === state.health.commit) return;
  const before = state.health.images;
  state.health = h;
  const diff = h.images - before;
  const what = diff > 0 ? `${diff.toLocaleString()} photos added` : diff < 0 ? `${(-diff).toLocaleString()} photos removed` : "photos changed";
  $("index-meta").textContent = `${h.images.toLocaleString()} images · ${h.model}` +
    (h.classes.length ? ` · ${h.classes.length} classes` : " · no labels");
  $("changed").replaceChildren(
    `The collection changed (${what}; now ${h.images.toLocaleString()} images, commit ${h.commit}). New searches use it; `,
    el("a", { href: "#", text: "search again", onclick: (e) => { e.preventDefault(); $("changed").hidden = true; runSearch(); } }),
  );
  $("changed").hidden = false;
}

start();
