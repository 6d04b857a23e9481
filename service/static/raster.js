/* The spike raster: x = time step, a row per sampled neuron grouped by layer, each layer's window shaded.

The view shows all layers or one, over the whole run, one window, each layer's own window (aligned, so
every layer gets the full width), or any range of steps (drag across the plot, or the zoom and pan
buttons; double-click for the whole run). Dots are sized from the pixels a step gets, at least 2 px.
*/

import { readableName } from "./names.js";

const MIN_STEPS = 4; // the narrowest range zooming in reaches
const ROW_BUDGET = 720; // pixels the rows of the shown layers share, 2 to 12 a row
const GAP = 8;
const AXIS_H = 34;
// What is shown; draw() records the first step drawn, the pixels a step gets and each layer's band.
const view = {
  raster: null, last: -1, layer: "all", aligned: false, from: 0, to: 0, drag: null,
  shown: 0, cell: 1, bands: [],
};

const $ = (id) => document.getElementById(id);
const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

function option(value, text, title = "") {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = text;
  node.title = title;
  return node;
}

/* Controls: the layer and time pickers, zoom and pan; every change redraws. */
function fillLayers() {
  $("raster-layer").replaceChildren(
    option("all", `All ${view.raster.length} layers`),
    ...view.raster.map((l) => option(l.name, readableName(l.name), l.name)),
  );
  $("raster-layer").value = view.layer;
}

function fillTimes() {
  const windows = new Map();
  for (const l of view.raster) {
    const key = `${l.start}-${l.end}`;
    windows.set(key, [...(windows.get(key) ?? []), readableName(l.name)]);
  }
  const options = [
    option(`0-${view.last}`, `Whole run (steps 0–${view.last})`),
    option("aligned", "Each layer's own window"),
    ...[...windows].map(([key, names]) => {
      const who = names.length > 2 ? `${names[0]} and ${names.length - 1} more` : names.join(", ");
      return option(key, `Steps ${key.replace("-", "–")}: ${who}`);
    }),
  ];
  const value = view.aligned ? "aligned" : `${view.from}-${view.to}`;
  if (!options.some((o) => o.value === value)) options.push(option(value, `Steps ${view.from}–${view.to}`));
  $("raster-time").replaceChildren(...options);
  $("raster-time").value = value;
  const len = view.to - view.from + 1;
  $("raster-in").disabled = view.aligned || len <= MIN_STEPS;
  $("raster-out").disabled = view.aligned || len > view.last;
  $("raster-earlier").disabled = view.aligned || view.from === 0;
  $("raster-later").disabled = view.aligned || view.to === view.last;
}

function showRange(from, to) {
  const len = clamp(to - from, MIN_STEPS - 1, view.last);
  const start = clamp(from, 0, view.last - len);
  Object.assign(view, { aligned: false, from: start, to: start + len });
  draw();
}

function zoom(factor) {
  const len = Math.round((view.to - view.from + 1) * factor);
  const from = Math.round((view.from + view.to - len + 1) / 2);
  showRange(from, from + len - 1);
}

function pan(direction) {
  const shift = direction * Math.max(1, Math.floor((view.to - view.from + 1) / 2));
  showRange(view.from + shift, view.to + shift);
}

/* Where a pointer is: the band (layer) and the step under it. */
function locate(event) {
  const box = $("raster").getBoundingClientRect();
  const [x, y] = [event.clientX - box.left, event.clientY - box.top];
  const band = view.bands.find((b) => y >= b.y && y < b.y + b.h);
  const step = view.shown + Math.floor(x / view.cell);
  return { x, band, step: band && view.aligned ? band.layer.start + step : step };
}

function brush(x0, x1) {
  const node = $("raster-brush");
  node.hidden = false;
  node.style.left = `${Math.min(x0, x1)}px`;
  node.style.width = `${Math.abs(x1 - x0)}px`;
}

export function initRaster() {
  $("raster-layer").addEventListener("change", (event) => {
    view.layer = event.target.value;
    draw();
  });
  $("raster-time").addEventListener("change", (event) => {
    if (event.target.value === "aligned") {
      view.aligned = true;
      draw();
    } else {
      const [from, to] = event.target.value.split("-").map(Number);
      showRange(from, to);
    }
  });
  $("raster-in").addEventListener("click", () => zoom(0.5));
  $("raster-out").addEventListener("click", () => zoom(2));
  $("raster-earlier").addEventListener("click", () => pan(-1));
  $("raster-later").addEventListener("click", () => pan(1));
  const canvas = $("raster");
  canvas.addEventListener("dblclick", () => showRange(0, view.last));
  canvas.addEventListener("pointerdown", (event) => {
    if (view.aligned || event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    view.drag = locate(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    const at = locate(event);
    if (view.drag) brush(view.drag.x, at.x);
    canvas.title = at.band ? `${readableName(at.band.layer.name)} (${at.band.layer.name}), step ${at.step}` : "";
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!view.drag) return;
    const [a, b] = [view.drag.step, locate(event).step].sort((p, q) => p - q);
    view.drag = null;
    $("raster-brush").hidden = true;
    if (b > a) showRange(a, b);
  });
}

/* Shows an answer's raster (null hides the section); the view is kept while the run's length is. */
export function showRaster(raster, timesteps) {
  $("raster").closest("section").hidden = !raster;
  view.raster = raster;
  if (!raster) return;
  const last = Math.max(timesteps, ...raster.map((l) => l.end)); // room for an off-spike at the last end
  if (last !== view.last) Object.assign(view, { last, aligned: false, from: 0, to: last });
  if (!raster.some((l) => l.name === view.layer)) view.layer = "all";
  fillLayers();
  draw();
  const rows = raster.reduce((n, l) => n + l.neurons.length, 0);
  const on = raster.reduce((n, l) => n + l.on.filter((s) => s !== null).length, 0);
  const sample = Math.max(...raster.map((l) => l.neurons.length));
  const summary =
    `${rows} sampled neurons in ${raster.length} layers over ${last} time steps: ${on} spiked on and then ` +
    `off at their window's end, ${rows - on} stayed silent (up to ${sample} neurons a layer, the same for ` +
    "every image).";
  $("raster").dataset.onSpikes = String(on);
  $("raster").setAttribute("aria-label", `Spike raster. ${summary}`);
  $("raster-summary").textContent = summary;
}

function niceStep(span, width) {
  const raw = span / Math.max(2, Math.floor(width / 50));
  const base = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  return [1, 2, 5, 10].map((m) => m * base).find((s) => s >= raw) ?? base * 10;
}

function label(layer, y, h) {
  const node = document.createElement("div");
  node.className = "raster-name";
  node.title = layer.name;
  node.style.top = `${y}px`;
  node.style.height = `${h}px`;
  const steps = document.createElement("span");
  steps.textContent = `steps ${layer.start}–${layer.end}`;
  node.append(readableName(layer.name), steps);
  return node;
}

function draw() {
  fillTimes();
  const layers = view.layer === "all" ? view.raster : view.raster.filter((l) => l.name === view.layer);
  const canvas = $("raster");
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(`--${name}`).trim();
  const rows = layers.reduce((n, l) => n + l.neurons.length, 0);
  const rowH = clamp(Math.floor(ROW_BUDGET / Math.max(rows, 1)), 2, 12);
  const width = canvas.clientWidth || 600;
  const [from, to] = view.aligned ? [0, Math.max(...layers.map((l) => l.end - l.start))] : [view.from, view.to];
  const cell = width / (to - from + 1);
  const dot = Math.round(clamp(cell * 0.7, 2, 10));
  const plotH = rows * rowH + layers.length * GAP;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round((plotH + AXIS_H) * dpr);
  canvas.style.height = `${plotH + AXIS_H}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, plotH + AXIS_H);
  ctx.save();
  ctx.beginPath();
  ctx.rect(0, 0, width, plotH);
  ctx.clip();
  Object.assign(view, { cell, shown: from, bands: [] });
  const names = [];
  let y = 0;
  for (const layer of layers) {
    const h = layer.neurons.length * rowH;
    const origin = (view.aligned ? layer.start : 0) + from;
    const x = (t) => (t - origin) * cell; // the left edge of step t's column
    const centre = (t) => Math.round(x(t) + (cell - dot) / 2);
    ctx.fillStyle = colour("window");
    ctx.fillRect(x(layer.start), y, x(layer.end) - x(layer.start), h);
    const dotH = rowH > 3 ? rowH - 1 : rowH;
    layer.on.forEach((step, i) => {
      if (step === null) return;
      const ry = y + i * rowH;
      ctx.fillStyle = colour("active");
      const between = Math.max(0, centre(layer.off) - centre(step) - dot);
      ctx.fillRect(centre(step) + dot, ry + rowH / 4, between, Math.max(1, rowH / 2));
      ctx.fillStyle = colour("on");
      ctx.fillRect(centre(step), ry, dot, dotH);
      ctx.fillStyle = colour("off");
      ctx.fillRect(centre(layer.off), ry, dot, dotH);
    });
    names.push(label(layer, y, h));
    view.bands.push({ y, h, layer });
    y += h + GAP;
  }
  ctx.restore();
  $("raster-names").replaceChildren(...names);
  ctx.strokeStyle = colour("muted");
  ctx.fillStyle = colour("muted");
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.beginPath();
  ctx.moveTo(0, plotH);
  ctx.lineTo(width, plotH);
  ctx.stroke();
  const every = niceStep(to - from + 1, width);
  for (let t = Math.ceil(from / every) * every; t <= to; t += every) {
    const tx = (t - from + 0.5) * cell;
    ctx.fillRect(tx, plotH, 1, 4);
    ctx.textAlign = tx < 12 ? "left" : tx > width - 12 ? "right" : "center";
    ctx.fillText(String(t), tx, plotH + 11);
  }
  ctx.textAlign = "left";
  ctx.fillText(view.aligned ? "steps into each layer's window →" : "time step →", 0, plotH + 25);
}
