// P1 Consent provider dashboard: polls /api/state and draws the power chart (SVG, no libraries).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const W = 800, H = 260, L = 56, R = 12, T = 12, B = 28;
let failures = 0;

function $(id) { return document.getElementById(id); }

function text(id, value) {
  const el = $(id);
  if (el && el.textContent !== value) el.textContent = value;
}

function svg(tag, attrs, content) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (content !== undefined) el.textContent = content;
  return el;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

const RESOLUTIONS = {
  raw: "every telegram (about every second)", ten_seconds: "10-second windows",
  minute: "1-minute windows", quarter_hour: "15-minute windows", hour: "hourly windows", day: "daily windows",
};

function niceNumber(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

function drawChart(points, label) {
  const chart = $("chart");
  while (chart.firstChild) chart.removeChild(chart.firstChild);
  chart.setAttribute("data-points", String(points.length));
  chart.setAttribute("aria-label", label + ": " + points.length + " points");
  if (points.length === 0) return;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let lo = Math.min(0, ...points.map(p => p[1])), hi = Math.max(...points.map(p => p[1]));
  if (hi - lo < 0.1) hi = lo + 0.1;
  const pad = (hi - lo) * 0.08; hi += pad; if (lo < 0) lo -= pad;
  const x = t => L + (t1 === t0 ? (W - L - R) : (t - t0) / (t1 - t0) * (W - L - R));
  const y = v => T + (hi - v) / (hi - lo) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    chart.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    chart.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, niceNumber(v)));
  }
  if (lo < 0) chart.appendChild(svg("line", { class: "grid zero", x1: L, x2: W - R, y1: y(0), y2: y(0) }));
  chart.appendChild(svg("text", { x: L, y: H - 8 }, clock(t0)));
  chart.appendChild(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, clock(t1)));
  const coords = points.map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1));
  const base = y(Math.max(lo, 0)).toFixed(1);
  chart.appendChild(svg("polygon", {
    class: "area",
    points: x(t0).toFixed(1) + "," + base + " " + coords.join(" ") + " " + x(t1).toFixed(1) + "," + base,
  }));
  chart.appendChild(svg("polyline", { class: "line", id: "chart-line", points: coords.join(" ") }));
  const last = points[points.length - 1];
  chart.appendChild(svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 3.5, fill: "#0a6cc2" }));
}

function render(s) {
  $("status").setAttribute("data-state", s.state);
  text("state-badge", s.state);
  text("state-text", s.state_text);
  text("who", "provider " + s.provider + " · broker " + s.broker + (s.connected ? " (connected)" : " (not connected)"));

  const waiting = s.state === "waiting" && s.request_link;
  $("request").hidden = !waiting;
  if (waiting) {
    text("request-link", s.request_link);
    $("request-anchor").setAttribute("href", s.request_link);
    if (!$("request-qr").getAttribute("src")) $("request-qr").setAttribute("src", "/request-qr.svg");
  }

  const c = s.consent;
  $("consent").hidden = !c;
  if (c) {
    text("c-controller", c.controller);
    text("c-purpose", c.purpose);
    text("c-fields", c.fields.join(", "));
    text("c-resolution", RESOLUTIONS[c.resolution] || c.resolution);
    text("c-retention", c.retention_days + " days");
    text("c-expires", new Date(c.expires_at * 1000).toLocaleString());
    text("c-readings", String(c.readings));
    text("c-id", c.consent);
  }

  text("chart-title", "Power use · " + s.series_label);
  drawChart(s.points, s.series_label);
  if (s.points.length > 0) {
    const last = s.points[s.points.length - 1];
    text("latest", niceNumber(last[1]) + " kW at " + clock(last[0]));
    text("chart-note", s.points.length + " points" + (s.state === "receiving" ? ", live" : ", stopped: " + s.state));
  } else {
    text("latest", "–");
    text("chart-note", s.state === "waiting" ? "No consent yet." : "No data yet.");
  }

  const ol = $("events");
  while (ol.firstChild) ol.removeChild(ol.firstChild);
  for (const e of s.events) {
    const li = document.createElement("li");
    li.textContent = clock(e.time_ms) + "  " + e.text;
    ol.appendChild(li);
  }
}

async function poll() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    failures = 0;
  } catch (e) {
    failures += 1;
    if (failures > 2) {
      $("status").setAttribute("data-state", "offline");
      text("state-badge", "offline");
      text("state-text", "The dashboard process does not answer (" + e.message + ").");
    }
  }
  setTimeout(poll, 1000);
}

poll();
