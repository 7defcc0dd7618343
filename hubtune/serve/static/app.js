// The page of `hubtune serve`: plain JS, no build step, no third-party code. It asks GET /v1/info what the
// server offers, then calls POST /v1/search, POST /v1/predict and GET /v1/datasets/{name}/items/{row}.
"use strict";

const TOKEN_KEY = "hubtune.token";
const $ = (id) => document.getElementById(id);
const state = { info: null, query: null, seq: 0, thumbs: new Map() };

// -- the API ------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

// every error answer of the service is {"error": CLASS, "message": TEXT, "status": CODE}
function describe(body) {
  if (typeof body === "string") return body;
  return body?.message ?? body?.detail ?? JSON.stringify(body);
}

async function request(method, path, body) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(body !== undefined),
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "The server cannot be reached (" + e.message + ")");
  }
  if (response.ok) return response;
  let message = response.statusText;
  try {
    const text = await response.text();
    try { message = describe(JSON.parse(text)) || message; } catch { message = text || message; }
  } catch { /* keep the status text */ }
  throw new ApiError(response.status, message, response.headers.get("Retry-After"));
}

const api = async (path, body) => (await request(body === undefined ? "GET" : "POST", path, body)).json();

// -- messages -----------------------------------------------------------------------------------------
function showError(error) {
  const box = $("error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  let text = error.message;
  if (error.status) text = error.status + ": " + text;
  if (error.retryAfter) text += " (retry after " + error.retryAfter + " s)";
  box.textContent = text;
  box.hidden = false;
  if (error.status === 401 || error.status === 403) askToken();
}

function askToken() {
  $("token-form").hidden = false;
  $("token").value = sessionStorage.getItem(TOKEN_KEY) ?? "";
  $("token").focus();
}

const status = (text) => { $("status").textContent = text; };

// -- what the server offers ---------------------------------------------------------------------------
// the inputs the model takes: ["text"], ["image"] or both (a text-image model's two towers)
const inputKinds = (info) => info.inputs ?? (info.modality ? [info.modality] : []);

async function loadInfo() {
  let info;
  try {
    info = await api("/v1/info");
  } catch (e) {
    if (e.status === 503) { // still loading the model: ask again when it says
      $("model").textContent = "Loading: " + e.message;
      setTimeout(loadInfo, 1000 * Math.max(1, Number(e.retryAfter) || 2));
      return;
    }
    $("model").textContent = e.status === 401 || e.status === 403 ? "Enter the access token to use this server."
      : "The server's description is not available.";
    showError(e);
    return;
  }
  state.info = info;
  $("token-form").hidden = true;
  const datasets = info.datasets ?? [];
  const heads = info.heads ?? [];
  const model = String(info.model ?? "").replace(/@([0-9a-f]{10})[0-9a-f]{30}$/, "@$1…"); // a commit: its prefix
  $("model").textContent = [model, inputKinds(info).join(" + ") + " inputs", info.dim ? info.dim + " dimensions" : null,
                            datasets.length + " dataset" + (datasets.length === 1 ? "" : "s"),
                            heads.length + " head" + (heads.length === 1 ? "" : "s")]
    .filter(Boolean).map((part) => part.replaceAll(" ", "\u00a0")).join(" · ");
  $("model").title = info.model ?? "";
  const select = $("dataset");
  select.replaceChildren(...datasets.map((d) => {
    return new Option(d.name + (d.rows != null ? " (" + d.rows + " " + (d.modality ?? "item") + "s)" : ""), d.name);
  }));
  if (info.limits?.max_k) $("k").max = info.limits.max_k;
  offer();
  $("search").disabled = datasets.length === 0;
  if (datasets.length === 0) status("The server has no dataset to search.");
  else status("Ready.");
}

// the query box and the drop zone as the chosen dataset is searched (a text-image model: both)
function offer() {
  const chosen = (state.info?.datasets ?? []).find((d) => d.name === $("dataset").value);
  const kinds = chosen?.queries ?? inputKinds(state.info ?? {});
  const text = kinds.includes("text");
  $("query").disabled = !text;
  $("query").placeholder = text ? "Type a query" : "This dataset is searched by images: drop one below";
  $("drop").hidden = !kinds.includes("image");
}

// -- a query ------------------------------------------------------------------------------------------
async function run(query) {
  showError(null);
  const dataset = $("dataset").value;
  const k = Math.max(1, Math.min(Number($("k").max) || 100, parseInt($("k").value, 10) || 8));
  if (!dataset) { showError(new ApiError(0, "Choose a dataset to search.")); return; }
  state.query = query;
  const seq = ++state.seq;
  const kind = typeof query === "string" ? "text" : "image";
  status("Searching " + dataset + "…");
  $("heads").hidden = true;
  $("head-list").replaceChildren();
  document.body.setAttribute("aria-busy", "true");
  // each head classifies the inputs of its own tower (a CLIP image head: images only)
  const heads = (state.info?.heads ?? []).filter((h) => !h.inputs || h.inputs.includes(kind));
  const started = performance.now();
  const predictions = heads.map((h) => api("/v1/predict", { head: h.name, inputs: [query] })
    .then((r) => ({ head: h, prediction: r.predictions[0] }), (error) => ({ head: h, error })));
  try {
    const answer = await api("/v1/search", { dataset, queries: [query], k });
    if (seq !== state.seq) return;
    const hits = answer.results[0] ?? [];
    renderResults(dataset, hits);
    const ms = Math.round(performance.now() - started);
    const what = kind === "text" ? "“" + query + "”" : "the image";
    status(hits.length + " nearest item" + (hits.length === 1 ? "" : "s") + " to " + what + " in " + dataset +
           " (" + ms + " ms).");
  } catch (e) {
    if (seq !== state.seq) return;
    renderResults(dataset, []);
    status("");
    showError(e);
  } finally {
    if (seq === state.seq) document.body.removeAttribute("aria-busy");
  }
  const done = await Promise.all(predictions);
  if (seq === state.seq) renderHeads(done);
}

// an item's file name (its origin's last part), else its key's start
function shortName(hit) {
  if (typeof hit.origin === "string" && hit.origin) return hit.origin.split(/[\\/]/).pop();
  return hit.key != null ? String(hit.key).slice(0, 12) : "";
}

function renderResults(dataset, hits) {
  const list = $("results");
  $("results-title").hidden = hits.length === 0;
  list.replaceChildren(...hits.map((hit, i) => {
    const item = document.createElement("li");
    item.className = "hit";
    item.dataset.row = hit.row;
    item.dataset.score = hit.score;
    const media = document.createElement("div");
    media.className = "media";
    item.append(media);
    const caption = document.createElement("div");
    caption.className = "caption";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = hit.label ?? "no label";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = Number(hit.score).toFixed(3);
    score.title = "score " + hit.score;
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = "#" + hit.row + " · " + shortName(hit);
    key.title = [hit.origin, hit.key].filter(Boolean).join("\n");
    caption.append(label, score, key);
    item.append(caption);
    item.setAttribute("aria-label", "Result " + (i + 1) + ": " + (hit.label ?? "item " + hit.row) + ", score " +
                      score.textContent);
    fillItem(media, dataset, hit);
    return item;
  }));
}

// The item route answers an image thumbnail or the item's text; fetched with the token, so not an <img src>.
async function fetchItem(dataset, row) {
  const cacheKey = dataset + "\u0000" + row;
  if (!state.thumbs.has(cacheKey)) {
    const promise = (async () => {
      const response = await request("GET", "/v1/datasets/" + encodeURIComponent(dataset) + "/items/" + row);
      const type = response.headers.get("Content-Type") ?? "";
      if (type.startsWith("image/")) return { image: URL.createObjectURL(await response.blob()) };
      return { text: (await response.json()).text }; // {"row", "key", "label", "origin", "text"}
    })();
    promise.catch(() => state.thumbs.delete(cacheKey));
    state.thumbs.set(cacheKey, promise);
  }
  return state.thumbs.get(cacheKey);
}

async function fillItem(media, dataset, hit) {
  try {
    const item = await fetchItem(dataset, hit.row);
    if (item.image) {
      const img = document.createElement("img");
      img.src = item.image;
      img.alt = "Item " + hit.row + (hit.label ? ", labelled " + hit.label : "") + " (" + shortName(hit) + ")";
      media.replaceChildren(img);
    } else {
      const text = document.createElement("p");
      text.className = "text";
      text.textContent = item.text;
      media.replaceChildren(text);
    }
  } catch (e) {
    const text = document.createElement("p");
    text.className = "missing";
    text.textContent = "Item not shown: " + e.message;
    media.replaceChildren(text);
  }
}

// a prediction's {"class": probability}: its n most probable classes
const topClasses = (prediction, n) => Object.entries(prediction.scores).sort((a, b) => b[1] - a[1]).slice(0, n);

function renderHeads(done) {
  $("heads").hidden = done.length === 0;
  $("head-list").replaceChildren(...done.map(({ head, prediction, error }) => {
    const box = document.createElement("section");
    box.className = "head";
    box.dataset.head = head.name;
    const title = document.createElement("h3");
    title.textContent = head.name;
    if (head.kind && head.kind !== head.name) {
      const kind = document.createElement("small");
      kind.textContent = " " + head.kind;
      title.append(kind);
    }
    box.append(title);
    if (error) {
      const p = document.createElement("p");
      p.className = "head-error";
      p.textContent = (error.status ? error.status + ": " : "") + error.message;
      box.append(p);
      return box;
    }
    const list = document.createElement("ol");
    for (const [name, p] of topClasses(prediction, 5)) {
      const row = document.createElement("li");
      row.dataset.label = name;
      row.dataset.score = p;
      const label = document.createElement("span");
      label.className = "class";
      label.textContent = name;
      const bar = document.createElement("meter");
      bar.min = 0; bar.max = 1; bar.value = p;
      bar.setAttribute("aria-label", name);
      const value = document.createElement("span");
      value.className = "prob";
      value.textContent = (100 * p).toFixed(1) + " %";
      row.append(label, bar, value);
      list.append(row);
    }
    box.append(list);
    return box;
  }));
}

// -- image queries ------------------------------------------------------------------------------------
function readImage(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) { // no type: the server decides (415 if not an image)
    showError(new ApiError(0, "“" + file.name + "” is not an image."));
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    const url = String(reader.result);
    const preview = $("query-image");
    preview.src = url;
    preview.alt = "The query image: " + file.name;
    preview.hidden = false;
    $("query").value = "";
    run({ image: url.slice(url.indexOf(",") + 1) });
  };
  reader.onerror = () => showError(new ApiError(0, "Cannot read “" + file.name + "”."));
  reader.readAsDataURL(file);
}

function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (text) {
      $("query-image").hidden = true;
      run(text);
    } else if (state.query && typeof state.query !== "string") {
      run(state.query); // a new dataset or k for the same image
    } else {
      // ask for what this dataset is searched by: a text, an image, or either
      const typed = !$("query").disabled;
      const dropped = !$("drop").hidden;
      showError(new ApiError(0, typed && dropped ? "Type a query, or drop an image."
        : typed ? "Type a query." : "Drop an image, or choose a file."));
      if (typed) $("query").focus();
    }
  });
  $("dataset").addEventListener("change", offer);
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, () => drop.classList.add("over"));
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  // an image dropped anywhere on the page is the query (and the browser does not navigate away to it)
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!drop.hidden) readImage(event.dataTransfer?.files?.[0]);
  });
  $("file").addEventListener("change", (event) => { readImage(event.target.files[0]); event.target.value = ""; });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (file && !drop.hidden) { event.preventDefault(); readImage(file); }
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    state.thumbs.clear();
    showError(null);
    loadInfo();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    state.thumbs.clear();
  });
}

wire();
loadInfo();
