// The session page's usage charts, from GET /v1/instances/{id}/metrics: CPU use (the
// slope of the cumulative CPU time), memory peak, disk used and processes over time, as
// small inline SVG line charts (createElementNS; labels are text nodes). Loaded after
// app.js, whose helpers (h, when) it uses.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const MIB = 1048576;

function svgEl(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// The smallest 1, 2 or 5 × 10ⁿ at or above v: a round top for the y axis.
function roundUp(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map((m) => m * p).find((x) => x >= v);
}

// One series per chart: [{t (ms), v}], oldest first.
function metricSeries(samples) {
  const at = (s) => new Date(s.sampled_at).getTime();
  const cpu = [];
  for (let k = 1; k < samples.length; k++) {
    const a = samples[k - 1]; const b = samples[k];
    const dt = (at(b) - at(a)) / 1000;
    if (a.cpu_seconds === null || b.cpu_seconds === null || !(dt > 0)) continue;
    cpu.push({ t: at(b), v: Math.max(0, (100 * (b.cpu_seconds - a.cpu_seconds)) / dt) });
  }
  const of = (field, scale) => samples.filter((s) => s[field] !== null && s[field] !== undefined)
    .map((s) => ({ t: at(s), v: s[field] / scale }));
  const last = samples[samples.length - 1];
  const diskLimit = last && last.disk_limit_bytes ? ` of ${(last.disk_limit_bytes / MIB).toFixed(0)} MiB` : "";
  return [
    { id: "cpu", label: "CPU use (% of a core)", points: cpu, floor: 10, fmt: (v) => v.toFixed(0) + " %" },
    { id: "memory", label: "Memory peak (MiB)", points: of("memory_peak_bytes", MIB), floor: 1, fmt: (v) => v.toFixed(1) + " MiB" },
    { id: "disk", label: "Disk used (MiB" + diskLimit + ")", points: of("disk_used_bytes", MIB), floor: 1, fmt: (v) => v.toFixed(1) + " MiB" },
    { id: "pids", label: "Processes", points: of("pids_peak", 1), floor: 5, fmt: (v) => v.toFixed(0) },
  ];
}

const CHART = { w: 480, h: 170, left: 64, right: 12, top: 14, bottom: 26 };

function timeLabel(t) { return new Date(t).toLocaleTimeString(); }

// A line chart of one series, with its description as <title> and aria-label.
function lineChart(series) {
  const { w, h: height, left, right, top, bottom } = CHART;
  const pts = series.points;
  const max = Math.max(series.floor, ...pts.map((p) => p.v));
  const yTop = roundUp(max);
  const t0 = pts.length ? pts[0].t : 0; const t1 = pts.length ? pts[pts.length - 1].t : 0;
  const x = (t) => (t1 > t0 ? left + ((t - t0) / (t1 - t0)) * (w - left - right) : w - right);
  const y = (v) => top + (1 - v / yTop) * (height - top - bottom);
  const minutes = (t1 - t0) / 60000;
  const span = minutes >= 1 ? `${minutes.toFixed(0)} min` : `${((t1 - t0) / 1000).toFixed(0)} s`;
  const summary = pts.length
    ? `${series.label}: now ${series.fmt(pts[pts.length - 1].v)}, highest ${series.fmt(Math.max(...pts.map((p) => p.v)))} over the last ${span} (${pts.length} samples)`
    : `${series.label}: no samples yet`;
  const titleId = "metric-title-" + series.id;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${height}`, class: "metric-chart", role: "img",
    id: "metric-" + series.id, "aria-labelledby": titleId, "data-points": pts.length },
  svgEl("title", { id: titleId }, summary),
  svgEl("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }),
  svgEl("line", { x1: left, y1: height - bottom, x2: w - right, y2: height - bottom, class: "axis" }),
  svgEl("line", { x1: left, y1: top, x2: w - right, y2: top, class: "grid" }),
  svgEl("text", { x: left - 6, y: top + 4, "text-anchor": "end" }, series.fmt(yTop)),
  svgEl("text", { x: left - 6, y: height - bottom + 4, "text-anchor": "end" }, "0"));
  if (!pts.length) {
    svg.append(svgEl("text", { x: (left + w - right) / 2, y: height / 2, "text-anchor": "middle" }, "no samples yet"));
    return svg;
  }
  svg.append(
    svgEl("text", { x: left, y: height - 6, "text-anchor": "start" }, timeLabel(t0)),
    svgEl("text", { x: w - right, y: height - 6, "text-anchor": "end" }, timeLabel(t1)),
    svgEl("polyline", { class: "series", points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ") }),
    svgEl("circle", { class: "last", cx: x(t1).toFixed(1), cy: y(pts[pts.length - 1].v).toFixed(1), r: 3.5 }));
  return svg;
}

// Redraws the charts in `into` from one metrics answer.
function drawMetrics(into, metrics) {
  into.replaceChildren(...metricSeries(metrics.samples).map((s) => h("figure", { class: "metric" },
    h("figcaption", {}, s.label), lineChart(s))));
}
