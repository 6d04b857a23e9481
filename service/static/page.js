/* The page: choose an image, ask POST /classify, draw the answer, its cost, per-layer spikes and the raster. */
import { nameElement } from "./names.js";
import { initRaster, showRaster } from "./raster.js";

const KEY_STORAGE = "tsc-api-key";
const TOP_K = 5;
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { file: null, models: [], request: 0, previewUrl: null, answer: null };
const integer = new Intl.NumberFormat("en-US");

const $ = (id) => document.getElementById(id);

/* Numbers as a person reads them. */
function count(n) {
  return integer.format(n);
}

function short(x) {
  if (x >= 100) return count(Math.round(x));
  return x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function energy(pj) {
  const [scale, unit] = pj >= 1e6 ? [1e6, "µJ"] : pj >= 1e3 ? [1e3, "nJ"] : [1, "pJ"];
  return `${short(pj / scale)} ${unit}`;
}

function ratio(a, b) {
  if (!b) return "n/a";
  const r = a / b;
  return `${r >= 100 ? count(Math.round(r)) : String(Number(r.toPrecision(2)))}x`;
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

function compact(v) {
  for (const [scale, suffix] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (v >= scale) return `${short(v / scale)}${suffix}`;
  }
  return Number.isInteger(v) ? count(v) : short(v);
}

function power(k) {
  const names = ["1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M", "1G", "10G", "100G", "1T"];
  return names[k] ?? `1e${k}`;
}

/* DOM helpers: every text from the API goes in as text, never as markup. */
function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

function svgElement(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/* The API: the key as X-API-Key, errors as the API's own message. */
function authHeaders() {
  const key = $("key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function describeError(response, body) {
  if (body && body.error) {
    const detail = Array.isArray(body.detail)
      ? body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ")
      : String(body.detail);
    const hint = response.status === 401 ? " Enter the service's key in the API key field." : "";
    return `${detail} (${body.error}, HTTP ${response.status}).${hint}`;
  }
  return `The service answered HTTP ${response.status} ${response.statusText}`.trim();
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { Accept: "application/json", ...authHeaders() } });
  } catch (err) {
    throw new Error(`Could not reach the service (${err.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new Error(describeError(response, body));
  if (body === null) throw new Error(`The service answered HTTP ${response.status} without a JSON body.`);
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

/* Models: GET /models fills the picker; the chosen one's version, latency and windows are shown. */
async function loadModels() {
  clearError();
  const select = $("model");
  const previous = select.value;
  try {
    const listing = await api("models");
    state.models = listing.models;
    select.replaceChildren(
      ...listing.models.map((m) => element("option", { value: m.name, textContent: m.name })),
    );
    const names = listing.models.map((m) => m.name);
    select.value = names.includes(previous) ? previous : listing.default_model ?? "";
    if (!names.length) {
      const failed = Object.entries(listing.failed).map(([name, why]) => `${name}: ${why}`);
      showError(`No model is loaded${failed.length ? ` (${failed.join("; ")})` : ""}.`);
    }
  } catch (err) {
    state.models = [];
    select.replaceChildren();
    showError(err.message);
  }
  showModel();
}

function showModel() {
  const info = $("model-info");
  const model = state.models.find((m) => m.name === $("model").value);
  if (!model) {
    info.replaceChildren();
    return;
  }
  const { channels, height, width } = model.input;
  const windows = Object.entries(model.windows);
  const steps = [...new Set(windows.map(([, w]) => w))].sort((a, b) => a - b);
  const summary =
    steps.length === 1
      ? `${windows.length} windows of ${steps[0]} steps`
      : `${windows.length} windows of ${steps[0]} to ${steps[steps.length - 1]} steps`;
  info.replaceChildren(
    element("p", {
      textContent:
        `Version ${model.version}, T = ${model.T}, latency ${model.timesteps} steps, ` +
        `${model.classes} classes, input ${channels}×${height}×${width}.`,
    }),
    element(
      "details",
      {},
      element("summary", { textContent: `Windows: ${summary}` }),
      element("ul", {}, ...windows.map(([name, w]) => element("li", {}, nameElement("span", name), `: ${w}`))),
    ),
  );
}

/* The image: file picker, drag and drop, or paste; choosing one classifies it. */
function choose(file) {
  if (!file) return;
  state.file = file;
  const preview = $("preview");
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  preview.hidden = false;
  preview.alt = `The chosen image, ${file.name || "pasted"}`;
  preview.src = state.previewUrl;
  $("drop-help").textContent =
    `${file.name || "Pasted image"} (${count(file.size)} bytes). Drop, paste or choose another to replace it.`;
  $("run").disabled = false;
  classify();
}

async function classify() {
  if (!state.file) return;
  const id = ++state.request;
  clearError();
  const params = new URLSearchParams({
    engine: $("engine").value,
    compare: String($("compare").checked),
    raster: "true",
    top_k: String(TOP_K),
  });
  if ($("model").value) params.set("model", $("model").value);
  const form = new FormData();
  form.append("file", state.file, state.file.name || "pasted.png");
  setStatus("Classifying…");
  try {
    const answer = await api(`classify?${params}`, { method: "POST", body: form });
    if (id !== state.request) return;
    state.answer = answer;
    render(answer);
    const latency = answer.latency;
    setStatus(
      `Answered in ${short(latency.server_ms)} ms on the server ` +
        `(engine ${short(latency.inference_ms)} ms, batch of ${latency.batch_size}).`,
    );
  } catch (err) {
    if (id !== state.request) return;
    state.answer = null;
    $("results").hidden = true;
    $("intro").hidden = false;
    setStatus("");
    showError(err.message);
  }
}

/* A row of a bar list: name, a bar of `fraction` of the track's width, the value written out. */
function bar(name, fraction, value, title = "") {
  const fill = element("span", { className: "fill" });
  fill.style.width = `${(100 * fraction).toFixed(2)}%`;
  return element(
    "div",
    { role: "listitem", className: "row", title },
    name,
    element("span", { className: "track" }, fill),
    element("span", { className: "value", textContent: value }),
  );
}

/* The answer: the top class, the top-k as bars, the model that gave it. */
function render(answer) {
  $("intro").hidden = true;
  $("results").hidden = false;
  const best = answer.predictions[0];
  $("top-label").textContent = best.label;
  $("top-probability").textContent = percent(best.probability);
  const model = answer.model;
  $("model-ref").textContent =
    `${model.name}, version ${model.version}, engine ${model.engine}, T = ${model.T}` +
    (answer.filename ? `, file ${answer.filename}` : "");
  $("predictions").replaceChildren(
    ...answer.predictions.map((p) =>
      bar(element("span", { className: "name", textContent: p.label }), p.probability, percent(p.probability)),
    ),
  );
  renderCost(answer);
  renderLayers(answer.spikes.layers);
  showRaster(answer.raster, answer.latency.timesteps);
}

/* The cost: figures, ratios, and every figure as a bar on one log scale. */
function renderCost(answer) {
  const ops = answer.operations;
  const compared = answer.comparison;
  const figures = [
    ["timesteps", "Time steps", count(answer.latency.timesteps), "tsc"],
    ["spikes", "Spikes", count(answer.spikes.total), "tsc"],
    ["per-neuron", "Spikes per neuron", answer.spikes.per_neuron.toFixed(3), "tsc"],
    ["additions", "Synaptic additions", count(ops.synaptic_additions), "tsc"],
    ["memory", "Memory accesses", count(ops.memory_accesses), "tsc"],
    ["updates", "Neuron updates", count(ops.neuron_updates), "tsc"],
    ["energy", "TSC energy", energy(ops.energy.snn_pj), "tsc"],
    ["ann-macs", "ANN MACs", count(ops.ann_macs), "ann"],
    ["ann-energy", "ANN energy", energy(ops.energy.ann_pj), "ann"],
  ];
  if (compared) {
    const rate = compared.rate;
    figures.push(
      ["rate-timesteps", "Rate time steps", count(rate.timesteps), "rate"],
      ["rate-spikes", "Rate spikes", count(rate.spikes), "rate"],
      ["rate-additions", "Rate additions", count(rate.synaptic_additions), "rate"],
      ["rate-energy", "Rate energy", energy(rate.energy_pj), "rate"],
    );
  }
  $("figures").replaceChildren(
    ...figures.map(([key, name, value, system]) => {
      const item = element(
        "div",
        { className: system },
        element("dt", { textContent: name }),
        element("dd", { textContent: value }),
      );
      item.dataset.figure = key;
      return item;
    }),
  );

  const ratios = [
    `ANN energy / TSC energy = ${ratio(ops.energy.ann_pj, ops.energy.snn_pj)}`,
    `ANN MACs / TSC synaptic additions = ${ratio(ops.ann_macs, ops.synaptic_additions)}`,
  ];
  if (compared) {
    const { ann, rate } = compared;
    ratios.push(
      `Rate energy / TSC energy = ${ratio(rate.energy_pj, ops.energy.snn_pj)}`,
      `Rate spikes / TSC spikes = ${ratio(rate.spikes, answer.spikes.total)}`,
      `Rate time steps / TSC time steps = ${ratio(rate.timesteps, answer.latency.timesteps)}`,
      `ANN's answer: ${ann.predictions[0].label} (${ann.agrees ? "agrees" : "differs"}); ` +
        `rate-coded SNN's: ${rate.predictions[0].label} (${rate.agrees ? "agrees" : "differs"})`,
    );
  }
  $("ratios").replaceChildren(...ratios.map((text) => element("li", { textContent: text })));

  const rate = compared ? compared.rate : null;
  const groups = [
    ["Time steps", [["TSC", "tsc", answer.latency.timesteps], rate && ["rate", "rate", rate.timesteps]]],
    ["Spikes", [["TSC", "tsc", answer.spikes.total], rate && ["rate", "rate", rate.spikes]]],
    [
      "Synaptic additions (ANN: MACs)",
      [
        ["TSC", "tsc", ops.synaptic_additions],
        rate && ["rate", "rate", rate.synaptic_additions],
        ["ANN", "ann", ops.ann_macs],
      ],
    ],
    ["Memory accesses", [["TSC", "tsc", ops.memory_accesses]]],
    [
      "Energy (pJ)",
      [["TSC", "tsc", ops.energy.snn_pj], rate && ["rate", "rate", rate.energy_pj], ["ANN", "ann", ops.energy.ann_pj]],
    ],
  ].map(([title, bars]) => [title, bars.filter(Boolean)]);
  $("cost-chart").replaceChildren(logBars(groups, $("cost-chart").clientWidth || 560));
}

function logBars(groups, width) {
  const labelW = 56;
  const valueW = 92;
  const rowH = 16;
  const headH = 18;
  const axisH = 18;
  const plotW = Math.max(120, width - labelW - valueW);
  const values = groups.flatMap(([, bars]) => bars.map(([, , v]) => v));
  const decades = Math.max(1, Math.ceil(Math.log10(Math.max(...values, 10))));
  const x = (v) => (v > 1 ? (plotW * Math.log10(v)) / decades : 0);
  const height = axisH + groups.reduce((h, [, bars]) => h + headH + bars.length * rowH, 0) + 4;
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" });
  svg.setAttribute("aria-label", "The answer's costs as bars on one logarithmic scale");
  const labelEvery = Math.ceil(32 / (plotW / decades)); // grid lines at least 32 px apart are labelled
  for (let k = 0; k <= decades; k++) {
    const gx = labelW + (plotW * k) / decades;
    svg.append(svgElement("line", { x1: gx, x2: gx, y1: axisH - 4, y2: height, class: "grid" }));
    if (k % labelEvery === 0) {
      svg.append(svgElement("text", { x: gx, y: 11, "text-anchor": "middle", class: "axis" }, power(k)));
    }
  }
  let y = axisH;
  for (const [title, bars] of groups) {
    svg.append(svgElement("text", { x: 0, y: y + 13, "font-weight": "600" }, title));
    y += headH;
    for (const [name, system, value] of bars) {
      svg.append(svgElement("text", { x: 8, y: y + 12 }, name));
      svg.append(svgElement("rect", { x: labelW, y: y + 3, width: x(value), height: rowH - 5, class: system }));
      svg.append(svgElement("text", { x: labelW + x(value) + 4, y: y + 12 }, compact(value)));
      y += rowH;
    }
  }
  return svg;
}

/* Per-layer spikes per neuron: one bar per population, linear scale, readable names. */
function renderLayers(layers) {
  const perNeuron = layers.map((l) => (l.neurons ? l.spikes / l.neurons : 0));
  const top = Math.max(...perNeuron, 0.01);
  $("layer-chart").replaceChildren(
    ...layers.map((layer, i) => {
      const name = nameElement("span", layer.name, "name");
      name.title = `${layer.name} (${layer.kind})`;
      const title = `${count(layer.spikes)} spikes / ${count(layer.neurons)} neurons`;
      return bar(name, perNeuron[i] / top, perNeuron[i].toFixed(3), title);
    }),
  );
}

/* Wiring. */
function init() {
  const key = $("key");
  key.value = sessionStorage.getItem(KEY_STORAGE) ?? "";
  key.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    loadModels().then(classify);
  });
  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file").click();
    }
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items ?? [])].find((i) => i.kind === "file");
    if (item) choose(item.getAsFile());
  });
  $("preview").addEventListener("error", () => {
    $("preview").hidden = true;
  });
  $("model").addEventListener("change", () => {
    showModel();
    classify();
  });
  $("engine").addEventListener("change", classify);
  $("compare").addEventListener("change", classify);
  $("run").addEventListener("click", classify);
  window.addEventListener("resize", () => state.answer && render(state.answer));
  initRaster();
  loadModels();
}

init();
