/* torchcost's HTML report: draws the icicle, the memory timeline and the peak breakdown from the JSON in #tc-data,
   and makes the module table sortable and filterable. Vanilla JS and SVG; nothing is fetched. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("tc-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) { if (attrs.hasOwnProperty(k)) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  var PREFIX = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "K"]];
  function fmtCount(v) {
    for (var i = 0; i < PREFIX.length; i++) {
      if (Math.abs(v) >= PREFIX[i][0]) { return (v / PREFIX[i][0]).toFixed(2) + " " + PREFIX[i][1]; }
    }
    return String(Math.round(v));
  }
  function fmtBytes(v) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return i === 0 ? Math.round(v) + " B" : v.toFixed(2) + " " + units[i];
  }
  function fmt(v, unit) { return unit === "bytes" ? fmtBytes(v) : fmtCount(v); }
  function share(a, b) {
    var p = b ? 100 * a / b : 0;
    return (p >= 10 || p === 0 ? p.toFixed(0) : p < 0.1 ? "<0.1" : p.toFixed(1)) + "%";
  }
  function pct(a, b) { return b ? (100 * a / b).toFixed(1) + "%" : "-"; }
  /* layer types get colours in the order they first appear (a folded "12 x Block" takes Block's) */
  var PALETTE = ["#9db4d8", "#f6b98a", "#a8d5a2", "#f1a7a5", "#c5b3dd", "#c9ab9f", "#f3bfdc", "#bfbfbf",
                 "#dcdc9a", "#9fd6dd", "#7fa4cf", "#f59d63", "#7cc07a", "#e8807f", "#a98dc9", "#b08b7c"];
  var typeColors = {};
  function colorOf(type) {
    var base = type.replace(/^\d+ x /, "");
    if (!typeColors.hasOwnProperty(base)) {
      typeColors[base] = PALETTE[Object.keys(typeColors).length % PALETTE.length];
    }
    return typeColors[base];
  }

  var tip = document.createElement("div");
  tip.className = "tc-tip";
  document.body.appendChild(tip);
  function showTip(evt, html) {
    tip.innerHTML = html;
    tip.style.display = "block";
    var x = evt.clientX + 14, y = evt.clientY + 14;
    var r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 4) { x = evt.clientX - r.width - 14; }
    if (y + r.height > window.innerHeight - 4) { y = evt.clientY - r.height - 14; }
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
  }
  function hideTip() { tip.style.display = "none"; }

  /* -- the icicle ------------------------------------------------------------------------------------------- */
  var ROW = 26;
  var VALUE = { params: 4, macs: 5, flops: 6, memory: 7, step: 8 };

  function Icicle(section, model) {
    var self = this;
    this.section = section;
    this.host = section.querySelector(".tc-icicle-host");
    this.crumbs = section.querySelector(".tc-crumbs");
    this.model = model;
    this.types = model.tree.types;
    this.nodes = model.tree.nodes.map(function (r, i) {
      return { i: i, parent: r[0], name: r[1], type: model.tree.types[r[2]], shape: r[3], row: r, folded: r[9],
               children: [] };
    });
    this.nodes.forEach(function (n) { if (n.parent >= 0) { self.nodes[n.parent].children.push(n); } });
    this.units = {};
    model.metrics.forEach(function (m) { self.units[m[0]] = m[2]; });
    this.metric = model.metrics[0][0];
    this.root = this.nodes[0];
    var sw = section.querySelector(".tc-switch");
    model.metrics.forEach(function (m) {
      var b = document.createElement("button");
      b.className = "tc-btn";
      b.type = "button";
      b.setAttribute("data-metric", m[0]);
      b.textContent = m[1];
      b.addEventListener("click", function () { self.metric = m[0]; self.render(); });
      sw.appendChild(b);
    });
    this.render();
  }
  Icicle.prototype.value = function (n) { return Math.max(0, n.row[VALUE[this.metric]]); };
  Icicle.prototype.label = function (n, full) {
    if (n.name === "") { return this.model.model_type; }
    if (full || n.parent < 0) { return n.name; }
    var p = this.nodes[n.parent].name;
    return p && n.name.indexOf(p + ".") === 0 ? n.name.split(p + ".").join("") : n.name;
  };
  Icicle.prototype.depth = function (n) {
    var d = 0, todo = [[n, 0]];
    while (todo.length) {
      var t = todo.pop();
      if (t[1] > d) { d = t[1]; }
      for (var i = 0; i < t[0].children.length; i++) { todo.push([t[0].children[i], t[1] + 1]); }
    }
    return d;
  };
  Icicle.prototype.tipHtml = function (n) {
    var m = this.model, r = n.row, unit = this.units[this.metric];
    var lines = ["<b>" + esc(n.name === "" ? m.model_type : n.name) + "</b> <span class=tc-dim>(" + esc(n.type) +
                 ")</span>"];
    if (n.shape && n.shape !== "-") { lines.push("<span class=tc-dim>output</span> " + esc(n.shape)); }
    lines.push("Params " + fmtCount(r[4]) + " &middot; MACs " + fmtCount(r[5]) + " &middot; FLOPs " + fmtCount(r[6]));
    if (VALUE.step && this.units.step) { lines.push("Step FLOPs " + fmtCount(r[8])); }
    if (this.units.memory) { lines.push("Memory (params + buffers + activations) " + fmtBytes(r[7])); }
    var total = m.totals[this.metric] || this.value(this.nodes[0]);
    var parent = n.parent >= 0 ? this.value(this.nodes[n.parent]) : 0;
    lines.push(fmt(this.value(n), unit) + " = " + pct(this.value(n), total) + " of the model" +
               (n.parent >= 0 ? ", " + pct(this.value(n), parent) + " of its parent" : ""));
    if (n.folded > 1) { lines.push("<span class=tc-dim>" + n.folded + " identical blocks, folded</span>"); }
    return lines.join("<br>");
  };
  Icicle.prototype.render = function () {
    var self = this, root = this.root;
    var buttons = this.section.querySelectorAll(".tc-btn");
    for (var b = 0; b < buttons.length; b++) {
      buttons[b].classList.toggle("tc-on", buttons[b].getAttribute("data-metric") === this.metric);
    }
    this.host.innerHTML = "";
    var W = Math.max(320, this.host.clientWidth || 1000);
    var rowsShown = this.depth(root) + 1;
    var svg = el("svg", { width: W, height: rowsShown * ROW, "class": "tc-icicle-svg",
                          viewBox: "0 0 " + W + " " + rowsShown * ROW }, this.host);
    var unit = this.units[this.metric];
    function place(n, x, w, d) {
      var g = el("g", { "class": "tc-node" + (d === 0 ? " tc-top" : ""), "data-name": n.name,
                        "data-depth": d }, svg);
      el("rect", { x: x.toFixed(2), y: d * ROW, width: Math.max(0, w).toFixed(2), height: ROW - 1,
                   fill: colorOf(n.type), "fill-opacity": n.folded > 1 ? 0.55 : 1 }, g);
      if (w > 34) {
        var text = n.name === "" ? n.type : self.label(n, d === 0) + "  " + n.type;
        var value = fmt(self.value(n), unit);
        var room = Math.floor((w - 10) / 6.3);
        var full = text + "  " + value;
        if (full.length <= room) { text = full; } else if (text.length > room && n.name !== "") {
          text = self.label(n, d === 0);
          if (text.length > room) { text = room > 3 ? text.slice(0, room - 1) + "\u2026" : ""; }
        }
        if (text) { el("text", { x: (x + 5).toFixed(2), y: d * ROW + 17 }, g, text); }
      }
      g.addEventListener("mousemove", function (evt) { showTip(evt, self.tipHtml(n)); });
      g.addEventListener("mouseleave", hideTip);
      g.addEventListener("click", function () {
        hideTip();
        self.root = (n === self.root && n.parent >= 0) ? self.nodes[n.parent] : n;
        self.render();
      });
      var kids = n.children;
      if (!kids.length) { return; }
      var sum = 0;
      for (var i = 0; i < kids.length; i++) { sum += self.value(kids[i]); }
      var total = Math.max(self.value(n), sum);
      var cx = x;
      for (var j = 0; j < kids.length; j++) {
        var cw = total > 0 ? w * self.value(kids[j]) / total : 0;
        place(kids[j], cx, cw, d + 1);
        cx += cw;
      }
    }
    place(root, 0, W, 0);
    this.renderCrumbs();
  };
  Icicle.prototype.renderCrumbs = function () {
    var self = this, chain = [], n = this.root;
    while (n) { chain.unshift(n); n = n.parent >= 0 ? this.nodes[n.parent] : null; }
    this.crumbs.innerHTML = "";
    chain.forEach(function (c, k) {
      var s = document.createElement("span");
      var last = k === chain.length - 1;
      s.className = last ? "tc-crumb-current tc-icicle-root" : "tc-crumb";
      s.textContent = c.name === "" ? self.model.model_type : (last ? c.name + " (" + c.type + ")" : self.label(c));
      if (!last) {
        s.addEventListener("click", function () { self.root = c; self.render(); });
      }
      self.crumbs.appendChild(s);
      if (!last) { self.crumbs.appendChild(document.createTextNode(" \u203A ")); }
    });
    var unit = this.units[this.metric];
    var v = this.value(this.root), total = this.model.totals[this.metric] || this.value(this.nodes[0]);
    this.crumbs.appendChild(document.createTextNode("  \u00B7  " + fmt(v, unit) + " (" + pct(v, total) +
                                                    " of the model)"));
  };

  /* -- the memory timeline ----------------------------------------------------------------------------------- */
  var PHASE_COLOR = { forward: "#4c78a8", loss: "#b279a2", backward: "#f58518", recompute: "#eeca3b",
                      optimizer: "#54a24b" };
  var PART_COLOR = ["#4c78a8", "#9ecae9", "#bab0ac", "#f58518", "#54a24b", "#e45756", "#b279a2", "#ff9da6",
                    "#72b7b2", "#eeca3b"];

  /* round ticks in the binary unit of the top value: a step of 1, 2, 2.5 or 5 x 10^k of that unit */
  var UNITS = [["B", 1], ["KiB", 1024], ["MiB", Math.pow(1024, 2)], ["GiB", Math.pow(1024, 3)],
               ["TiB", Math.pow(1024, 4)]];
  function ticks(lo, hi) {
    var unit = UNITS[0];
    UNITS.forEach(function (u) { if (hi >= u[1]) { unit = u; } });
    var raw = Math.max(hi - lo, 1) / 4 / unit[1], k = Math.pow(10, Math.floor(Math.log10(raw))), step = 10 * k;
    [1, 2, 2.5, 5, 10].some(function (f) { if (f * k >= raw) { step = f * k; return true; } return false; });
    var digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) + (step / k === 2.5 ? 1 : 0);
    var out = [];
    for (var t = Math.floor(lo / unit[1] / step) * step; ; t += step) {
      out.push({ v: t * unit[1], label: (+t.toFixed(digits)).toString() + " " + unit[0] });
      if (t * unit[1] >= hi || out.length > 12) { break; }
    }
    return out;
  }

  function Timeline(host, tl) {
    var W = Math.max(360, host.clientWidth || 900), H = 300;
    var m = { l: 70, r: 18, t: 34, b: 36 };
    var n = Math.max(tl.n, 1);
    var top = Math.max.apply(null, tl.y.concat([tl.peak.bytes])), low = Math.min.apply(null, tl.y);
    /* the axis starts at 0 unless everything sits high above it (weights dominate): then just below the lowest */
    var ts = ticks(low > 0.5 * top ? low - (top - low) * 0.15 : 0, top + (top - (low > 0.5 * top ? low : 0)) * 0.04);
    var ymin = ts[0].v, ymax = ts[ts.length - 1].v;
    function X(i) { return m.l + (n > 1 ? i / (n - 1) : 0.5) * (W - m.l - m.r); }
    function Y(b) { return H - m.b - (b - ymin) / (ymax - ymin || 1) * (H - m.t - m.b); }
    var svg = el("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "tc-timeline-svg" }, host);
    var half = n > 1 ? (W - m.l - m.r) / (n - 1) / 2 : 0;
    tl.bands.forEach(function (b) {
      var x0 = Math.max(m.l, X(b[1]) - half), x1 = Math.min(W - m.r, X(b[2]) + half);
      el("rect", { x: x0, y: m.t, width: Math.max(0, x1 - x0), height: H - m.t - m.b,
                   fill: PHASE_COLOR[b[0]] || "#999", "fill-opacity": 0.09, "class": "tc-band",
                   "data-phase": b[0] }, svg);
      if (x1 - x0 > 44) {
        el("text", { x: x0 + 5, y: m.t + 14, "class": "tc-band-label", fill: PHASE_COLOR[b[0]] || "#555" }, svg, b[0]);
      }
    });
    var axis = el("g", { "class": "tc-axis" }, svg);
    ts.forEach(function (t) {
      var yy = Y(t.v);
      el("line", { x1: m.l, x2: W - m.r, y1: yy, y2: yy }, axis);
      el("text", { x: m.l - 6, y: yy + 4, "text-anchor": "end" }, axis, t.label);
    });
    el("text", { x: m.l + (W - m.l - m.r) / 2, y: H - 8, "text-anchor": "middle" }, axis,
       "ops in the order they ran (" + tl.n.toLocaleString("en-US") + ")");
    var pts = tl.x.map(function (x, i) { return X(x).toFixed(1) + "," + Y(tl.y[i]).toFixed(1); });
    if (pts.length) {
      el("path", { d: "M" + X(tl.x[0]).toFixed(1) + "," + Y(ymin) + "L" + pts.join("L") + "L" +
                   X(tl.x[tl.x.length - 1]).toFixed(1) + "," + Y(ymin) + "Z", fill: "#4c78a8", "fill-opacity": 0.18,
                   stroke: "none" }, svg);
      el("path", { d: "M" + pts.join("L"), fill: "none", stroke: "#2f5d8a", "stroke-width": 1.5,
                   "stroke-linejoin": "round", "class": "tc-line" }, svg);
    }
    var p = tl.peak;
    if (p.i >= 0) {
      var px = X(p.i), py = Y(p.bytes);
      el("line", { x1: px, x2: px, y1: m.t - 12, y2: H - m.b, stroke: "#d92d20", "stroke-dasharray": "3,3" }, svg);
      el("circle", { cx: px, cy: py, r: 4.5, fill: "#d92d20", stroke: "#fff", "stroke-width": 1.5 }, svg);
      var text = "peak " + fmtBytes(p.bytes) + " after " + p.op + " in " + (p.module || "(model)") + " (" + p.phase +
                 ")";
      var right = px > m.l + (W - m.l - m.r) * 0.55;
      var label = el("text", { x: right ? px - 6 : px + 6, y: m.t - 12, "class": "tc-peak-label",
                               id: "tc-peak-label", "text-anchor": right ? "end" : "start", "data-op": p.op,
                               "data-module": p.module }, svg, text);
      label.setAttribute("paint-order", "stroke");
      label.setAttribute("stroke", "#fff");
      label.setAttribute("stroke-width", "3");
    }
    var cursor = el("line", { y1: m.t, y2: H - m.b, stroke: "#1f2933", "stroke-width": 1, visibility: "hidden" }, svg);
    var hit = el("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: "transparent" }, svg);
    hit.addEventListener("mousemove", function (evt) {
      var box = svg.getBoundingClientRect();
      var want = (evt.clientX - box.left - m.l) / (W - m.l - m.r) * (n - 1);
      var lo = 0, hi = tl.x.length - 1;
      while (lo < hi) { var mid = (lo + hi) >> 1; if (tl.x[mid] < want) { lo = mid + 1; } else { hi = mid; } }
      if (lo > 0 && Math.abs(tl.x[lo - 1] - want) < Math.abs(tl.x[lo] - want)) { lo -= 1; }
      var cx = X(tl.x[lo]);
      cursor.setAttribute("x1", cx);
      cursor.setAttribute("x2", cx);
      cursor.setAttribute("visibility", "visible");
      showTip(evt, "<b>" + fmtBytes(tl.y[lo]) + "</b> alive after op #" + tl.x[lo] + "<br>" + esc(tl.ops[tl.op[lo]]) +
              " <span class=tc-dim>in</span> " + esc(tl.mods[tl.mod[lo]] || "(model)") +
              " <span class=tc-dim>(" + esc(tl.phases[tl.ph[lo]]) + ")</span>");
    });
    hit.addEventListener("mouseleave", function () { cursor.setAttribute("visibility", "hidden"); hideTip(); });
  }

  function PeakBar(host, tl) {
    var parts = tl.at_peak, total = 0;
    parts.forEach(function (q) { total += q[1]; });
    var H = 300, bw = 46, top = 30, bottom = 36, x0 = 8;
    var svg = el("svg", { width: 280, height: H, viewBox: "0 0 280 " + H, "class": "tc-peakbar-svg" }, host);
    el("text", { x: 0, y: 16, "class": "tc-band-label" }, svg, "At the peak: " + fmtBytes(total));
    var y = H - bottom, scale = (H - top - bottom) / (total || 1);
    var labels = [];
    parts.forEach(function (q, i) {
      var h = q[1] * scale;
      y -= h;
      el("rect", { x: x0, y: y, width: bw, height: Math.max(h, 0.5), fill: PART_COLOR[i % PART_COLOR.length],
                   "class": "tc-part", "data-part": q[0] }, svg);
      labels.push([y + h / 2, q, PART_COLOR[i % PART_COLOR.length]]);
    });
    var last = Infinity;
    labels.forEach(function (l) {  /* bottom to top; spread labels at least 13 px apart */
      var ly = Math.min(l[0] + 4, last - 13);
      last = ly;
      var g = el("g", {}, svg);
      el("rect", { x: x0 + bw + 8, y: ly - 8, width: 9, height: 9, fill: l[2] }, g);
      el("text", { x: x0 + bw + 21, y: ly, "class": "tc-axis-label", "font-size": 11, fill: "#3e4c59" }, g,
         l[1][0] + "  " + fmtBytes(l[1][1]) + " \u00B7 " + share(l[1][1], total));
    });
  }

  /* -- the module table ------------------------------------------------------------------------------------- */
  var SCALE = { K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, KiB: 1024, MiB: Math.pow(1024, 2),
                GiB: Math.pow(1024, 3), TiB: Math.pow(1024, 4), B: 1 };
  function number(text) {
    var mm = /^\s*(-?[\d.,]+)\s*(KiB|MiB|GiB|TiB|B|K|M|G|T|P|%)?/.exec(text);
    if (!mm) { return -Infinity; }
    return parseFloat(mm[1].replace(/,/g, "")) * (SCALE[mm[2]] || 1);
  }
  function Table(table, filter, count) {
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var state = { col: 0, dir: 0 };
    var heads = table.tHead.rows[0].cells;
    function show() {
      var q = filter ? filter.value.trim().toLowerCase() : "", shown = 0;
      var ordered = rows.slice();
      if (state.col > 0) {
        var c = state.col;
        ordered.sort(function (a, b) {
          var ta = a.cells[c].textContent, tb = b.cells[c].textContent;
          var d = c === 1 ? ta.localeCompare(tb) : number(tb) - number(ta);
          return (state.dir > 0 ? -d : d) || (+a.getAttribute("data-i") - +b.getAttribute("data-i"));
        });
      }
      ordered.forEach(function (r) {
        var hit = !q || (r.getAttribute("data-name") + " " + r.cells[0].textContent).toLowerCase().indexOf(q) >= 0;
        r.style.display = hit ? "" : "none";
        if (hit) { shown++; }
        tbody.appendChild(r);
      });
      for (var h = 0; h < heads.length; h++) {
        heads[h].classList.toggle("tc-sorted-desc", h === state.col && h > 0 && state.dir === 0);
        heads[h].classList.toggle("tc-sorted-asc", h === state.col && h > 0 && state.dir === 1);
      }
      if (count) { count.textContent = shown + " of " + rows.length + " rows"; }
    }
    Array.prototype.forEach.call(heads, function (th, i) {
      th.addEventListener("click", function () {
        if (i === 0) { state = { col: 0, dir: 0 }; } else if (state.col === i) { state.dir = 1 - state.dir; } else {
          state = { col: i, dir: 0 };
        }
        show();
      });
    });
    if (filter) { filter.addEventListener("input", show); }
    show();
  }

  /* -- wire up ---------------------------------------------------------------------------------------------- */
  var icicles = [];
  D.models.forEach(function (model, i) {
    var section = document.getElementById("m" + i + "-icicle");
    if (section) { icicles.push(new Icicle(section, model)); }
  });
  function drawMemory() {
    var host = document.getElementById("tc-timeline"), bar = document.getElementById("tc-peakbar");
    if (!D.timeline || !host) { return; }
    host.innerHTML = "";
    bar.innerHTML = "";
    Timeline(host, D.timeline);
    PeakBar(bar, D.timeline);
    var tl = D.timeline, note = document.getElementById("tc-timeline-note");
    note.textContent = "Total bytes alive after each op (" + tl.method + " run, " + tl.target + " allocation); " +
      "the shaded bands are the phases. " +
      (tl.decimated ? "Decimated to " + tl.x.length.toLocaleString("en-US") + " of " + tl.n.toLocaleString("en-US") +
       " ops (each bucket keeps its lowest and highest point; the peak is kept). " : "") +
      "Memory by category is not recorded over the run, only at the peak: the bar on the right is that breakdown.";
  }
  drawMemory();
  var table = document.getElementById("tc-table");
  if (table) { Table(table, document.getElementById("tc-filter"), document.getElementById("tc-count")); }
  var timer = null, lastWidth = window.innerWidth;
  window.addEventListener("resize", function () {
    if (window.innerWidth === lastWidth) { return; }
    lastWidth = window.innerWidth;
    clearTimeout(timer);
    timer = setTimeout(function () { icicles.forEach(function (ic) { ic.render(); }); drawMemory(); }, 120);
  });
  window.torchcostReport = { icicles: icicles, data: D };
}());
