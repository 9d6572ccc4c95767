// onnxplain report: plain JavaScript, no network, no libraries. DATA comes from the JSON block in index.html.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#637939"];
  var METRIC_HELP = {deletion: "deletion AUC (lower is better)", insertion: "insertion AUC (higher is better)",
                     pointing_game: "pointing game (1 = hit)", energy: "energy in region (share)"};
  var state = {key: null, dir: 1, filter: "", show: "all", problems: false, low: DATA.low_confidence};

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) {
      if (k === "text") { e.textContent = attrs[k]; } else if (k === "cls") { e.className = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
    }); }
    (children || []).forEach(function (c) { if (c) { e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && isNaN(v))) { return "\u2013"; }
    if (typeof v !== "number") { return String(v); }
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) { return v.toExponential(2); }
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function labelText(idx, name) {
    if (idx === null || idx === undefined) { return "\u2013"; }
    return (name ? name + " " : "") + "(" + idx + ")";
  }

  // ---- summary --------------------------------------------------------------------------------
  function renderSummary() {
    var box = document.getElementById("summary");
    var kv = el("table", {cls: "kv"});
    function row(k, v) { kv.appendChild(el("tr", null, [el("td", {text: k}), el("td", {text: v})])); }
    var m = DATA.model || {};
    row("model", m.path || "\u2013");
    if (m.output) { row("output", (m.output.kind || "") + (m.output.num_classes ? ", " + m.output.num_classes + " classes" : "")); }
    if (m.input) { row("input", (m.input.dtype || "") + " " + (m.input.layout || "") + " " + JSON.stringify(m.input.size || "")); }
    row("provider", DATA.provider || "\u2013");
    row("methods", DATA.methods.join(", "));
    row("images", String(DATA.images.length));
    Object.keys(DATA.settings || {}).forEach(function (k) {
      var v = DATA.settings[k];
      if (v === null || v === undefined || (typeof v === "object" && Object.keys(v).length === 0)) { return; }
      row(k, typeof v === "object" ? JSON.stringify(v) : String(v));
    });
    box.appendChild(kv);
    // timings and metric means per method
    var metrics = DATA.metric_names;
    var t = el("table", {cls: "grid", id: "method-table"});
    var head = el("tr", null, [el("th", {text: "method"}), el("th", {cls: "num", text: "mean seconds / image"})]);
    metrics.forEach(function (k) { head.appendChild(el("th", {cls: "num", text: "mean " + k})); });
    t.appendChild(el("thead", null, [head]));
    var body = el("tbody");
    DATA.methods.forEach(function (method) {
      var secs = [], vals = {};
      metrics.forEach(function (k) { vals[k] = []; });
      DATA.images.forEach(function (im) {
        var mp = im.maps[method];
        if (!mp) { return; }
        if (typeof mp.seconds === "number") { secs.push(mp.seconds); }
        metrics.forEach(function (k) { var v = mp.metrics[k]; if (typeof v === "number" && !isNaN(v)) { vals[k].push(v); } });
      });
      var r = el("tr", null, [el("td", {text: method}), el("td", {cls: "num", text: fmt(mean(secs), 2)})]);
      metrics.forEach(function (k) { r.appendChild(el("td", {cls: "num", text: fmt(mean(vals[k]))})); });
      body.appendChild(r);
    });
    t.appendChild(body);
    box.appendChild(el("h3", {text: "Methods"}));
    box.appendChild(t);
    if (DATA.timings && DATA.timings.total_seconds) {
      box.appendChild(el("p", {cls: "note", text: "total run time " + fmt(DATA.timings.total_seconds, 1) + " s"}));
    } else if (DATA.timings && DATA.timings.compute_seconds) {
      box.appendChild(el("p", {cls: "note", text: "compute time (sum over results) " + fmt(DATA.timings.compute_seconds, 1) + " s"}));
    }
  }
  function mean(xs) { if (!xs.length) { return NaN; } var s = 0; xs.forEach(function (x) { s += x; }); return s / xs.length; }

  // ---- plots ----------------------------------------------------------------------------------
  function linePlot(title, series, xlabel, ylabel) {
    var W = 340, H = 210, L = 40, R = 10, T = 8, B = 34;
    var s = svg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
    var ymax = 0;
    series.forEach(function (sr) { sr.y.forEach(function (v) { if (v > ymax) { ymax = v; } }); });
    ymax = ymax > 0 ? ymax * 1.05 : 1;
    function X(v) { return L + v * (W - L - R); }
    function Y(v) { return H - B - (v / ymax) * (H - T - B); }
    s.appendChild(svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#ccc"}));
    [0, 0.5, 1].forEach(function (f) {
      var tx = svg("text", {x: X(f), y: H - B + 12, "text-anchor": "middle"}); tx.textContent = String(f); s.appendChild(tx);
      var ty = svg("text", {x: L - 4, y: Y(f * ymax) + 3, "text-anchor": "end"}); ty.textContent = fmt(f * ymax, 2); s.appendChild(ty);
    });
    var xl = svg("text", {x: L + (W - L - R) / 2, y: H - 4, "text-anchor": "middle"}); xl.textContent = xlabel; s.appendChild(xl);
    var yl = svg("text", {x: 10, y: T + (H - T - B) / 2, "text-anchor": "middle", transform: "rotate(-90 10 " + (T + (H - T - B) / 2) + ")"});
    yl.textContent = ylabel; s.appendChild(yl);
    series.forEach(function (sr) {
      var pts = sr.x.map(function (x, i) { return X(x).toFixed(1) + "," + Y(sr.y[i]).toFixed(1); }).join(" ");
      s.appendChild(svg("polyline", {points: pts, fill: "none", stroke: sr.color, "stroke-width": 1.6}));
    });
    return el("div", {cls: "plot"}, [el("div", {cls: "title", text: title}), s, legend(series)]);
  }
  function legend(series) {
    return el("div", {cls: "legend"}, series.map(function (sr) {
      var i = el("i"); i.style.background = sr.color;
      return el("span", null, [i, sr.label]);
    }));
  }
  function histPlot(title, groups) {
    var W = 340, H = 190, L = 34, R = 10, T = 8, B = 30, NB = 12;
    var all = [];
    groups.forEach(function (g) { all = all.concat(g.values); });
    var lo = Math.min.apply(null, all), hi = Math.max.apply(null, all);
    if (!(hi > lo)) { hi = lo + 1; }
    var counts = groups.map(function (g) {
      var c = new Array(NB).fill(0);
      g.values.forEach(function (v) { c[Math.min(NB - 1, Math.floor((v - lo) / (hi - lo) * NB))] += 1; });
      return c;
    });
    var cmax = 1;
    counts.forEach(function (c) { c.forEach(function (v) { if (v > cmax) { cmax = v; } }); });
    var s = svg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
    s.appendChild(svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#ccc"}));
    var bw = (W - L - R) / NB, gw = bw / groups.length;
    counts.forEach(function (c, gi) {
      c.forEach(function (v, b) {
        var h = v / cmax * (H - T - B);
        s.appendChild(svg("rect", {x: L + b * bw + gi * gw, y: H - B - h, width: Math.max(gw - 1, 1), height: h,
                                   fill: groups[gi].color, "fill-opacity": 0.85}));
      });
    });
    [[lo, L], [hi, W - R]].forEach(function (p) {
      var tx = svg("text", {x: p[1], y: H - B + 12, "text-anchor": "middle"}); tx.textContent = fmt(p[0], 2); s.appendChild(tx);
    });
    var ty = svg("text", {x: L - 4, y: T + 8, "text-anchor": "end"}); ty.textContent = String(cmax); s.appendChild(ty);
    var xl = svg("text", {x: L + (W - L - R) / 2, y: H - 4, "text-anchor": "middle"}); xl.textContent = "value (images per bin)"; s.appendChild(xl);
    return el("div", {cls: "plot"}, [el("div", {cls: "title", text: title}), s,
      legend(groups.map(function (g) { return {color: g.color, label: g.label + " (n=" + g.values.length + ")"}; }))]);
  }
  function renderPlots() {
    var box = document.getElementById("plots");
    var any = false;
    DATA.metric_names.forEach(function (k) {
      var groups = [];
      DATA.methods.forEach(function (method, mi) {
        var vals = [];
        DATA.images.forEach(function (im) { var mp = im.maps[method]; if (mp && typeof mp.metrics[k] === "number" && !isNaN(mp.metrics[k])) { vals.push(mp.metrics[k]); } });
        if (vals.length) { groups.push({label: method, color: COLORS[mi % COLORS.length], values: vals}); }
      });
      if (groups.length) { box.appendChild(histPlot(METRIC_HELP[k] || k, groups)); any = true; }
    });
    ["deletion", "insertion"].forEach(function (mode) {
      var series = [];
      DATA.methods.forEach(function (method, mi) {
        var curves = [];
        DATA.images.forEach(function (im) { var mp = im.maps[method]; if (mp && mp.curves[mode]) { curves.push(mp.curves[mode]); } });
        if (!curves.length) { return; }
        var x = curves[0][0];
        var y = x.map(function (_, i) { var s = 0, n = 0; curves.forEach(function (c) { if (c[1].length === x.length) { s += c[1][i]; n += 1; } }); return n ? s / n : NaN; });
        series.push({label: method + " (" + curves.length + " images)", color: COLORS[mi % COLORS.length], x: x, y: y});
      });
      if (series.length) { box.appendChild(linePlot("mean " + mode + " curve", series, "fraction of pixels " + (mode === "deletion" ? "removed" : "inserted"), "class score")); any = true; }
    });
    if (!any) { box.appendChild(el("p", {cls: "note", text: "No quality metrics in these results (a dataset run with metrics, or evaluations passed from Python, add them)."})); }
  }

  // ---- image table ----------------------------------------------------------------------------
  var COLUMNS = [
    {key: "name", label: "image", get: function (im) { return im.name; }},
    {key: "true", label: "true label", get: function (im) { return im.true_name || (im.true === null ? "" : String(im.true)); }},
    {key: "pred", label: "predicted", get: function (im) { return im.pred_name || (im.pred === null ? "" : String(im.pred)); }},
    {key: "conf", label: "confidence", num: true, get: function (im) { return im.conf === null ? -Infinity : im.conf; }}
  ];
  function isLow(im) { return typeof im.conf === "number" && im.conf < state.low; }
  function renderTableHead() {
    var tr = document.querySelector("#images thead tr");
    COLUMNS.forEach(function (c) {
      var th = el("th", {cls: "sortable" + (c.num ? " num" : ""), "data-key": c.key, title: "sort by " + c.label}, [c.label + " ", el("span", {cls: "arrow"})]);
      th.addEventListener("click", function () { sortBy(c.key); });
      tr.appendChild(th);
    });
    DATA.methods.forEach(function (m) { tr.appendChild(el("th", {text: m})); });
  }
  function sortBy(key) {
    state.dir = state.key === key ? -state.dir : (key === "conf" ? -1 : 1);
    state.key = key;
    state.problems = false;
    renderRows();
  }
  function renderRows() {
    var body = document.querySelector("#images tbody");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var q = state.filter.toLowerCase();
    var rows = DATA.images.map(function (im, i) { return {im: im, i: i}; }).filter(function (r) {
      var im = r.im;
      if (q && (im.name + " " + (im.true_name || "") + " " + (im.pred_name || "") + " " + im.true + " " + im.pred).toLowerCase().indexOf(q) < 0) { return false; }
      if (state.show === "wrong") { return im.correct === false; }
      if (state.show === "right") { return im.correct === true; }
      if (state.show === "low") { return isLow(im); }
      return true;
    });
    if (state.problems) {
      rows.sort(function (a, b) {
        var pa = a.im.correct === false ? 0 : 1, pb = b.im.correct === false ? 0 : 1;
        if (pa !== pb) { return pa - pb; }
        return COLUMNS[3].get(a.im) - COLUMNS[3].get(b.im) || a.i - b.i;
      });
    } else if (state.key) {
      var col = COLUMNS.filter(function (c) { return c.key === state.key; })[0];
      rows.sort(function (a, b) {
        var va = col.get(a.im), vb = col.get(b.im);
        var c = col.num ? (va - vb) : String(va).localeCompare(String(vb), undefined, {numeric: true});
        return c * state.dir || a.i - b.i;
      });
    }
    rows.forEach(function (r) {
      var im = r.im;
      var tr = el("tr", {"data-index": String(r.i), "data-name": im.name,
                         cls: (im.correct === false ? "wrong " : "") + (isLow(im) ? "low" : "")}, [
        el("td", {text: im.name, title: im.problem || ""}),
        el("td", {text: labelText(im.true, im.true_name)}),
        el("td", {cls: "pred", text: labelText(im.pred, im.pred_name)}),
        el("td", {cls: "num conf", text: fmt(im.conf)})
      ]);
      DATA.methods.forEach(function (m) {
        var mp = im.maps[m];
        var td = el("td", {cls: "thumb"});
        if (mp && mp.thumb) { td.appendChild(el("img", {src: mp.thumb, alt: m + " on " + im.name, loading: "lazy"})); }
        else if (mp) { td.textContent = mp.status || "\u2013"; }
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () { location.hash = "image=" + r.i; });
      body.appendChild(tr);
    });
    document.querySelectorAll("#images th[data-key]").forEach(function (th) {
      th.querySelector(".arrow").textContent = (!state.problems && th.getAttribute("data-key") === state.key) ? (state.dir > 0 ? "\u25B2" : "\u25BC") : "";
    });
    document.getElementById("count").textContent = rows.length + " of " + DATA.images.length + " images";
    document.getElementById("problems").className = state.problems ? "on" : "";
  }
  function renderControls() {
    var f = document.getElementById("filter");
    f.addEventListener("input", function () { state.filter = f.value; renderRows(); });
    var s = document.getElementById("show");
    s.addEventListener("change", function () { state.show = s.value; renderRows(); });
    document.getElementById("problems").addEventListener("click", function () { state.problems = !state.problems; renderRows(); });
    var low = document.getElementById("low");
    low.value = String(state.low);
    low.addEventListener("change", function () { var v = parseFloat(low.value); if (!isNaN(v)) { state.low = v; renderRows(); } });
  }

  // ---- per-image view -------------------------------------------------------------------------
  function colorbar(scale) {
    var bar = el("div", {cls: "bar" + (scale.extend === "max" ? " ext-max" : scale.extend === "both" ? " ext-both" : "")});
    bar.style.background = "linear-gradient(to right, " + scale.stops.join(", ") + ")";
    var ticks = el("div", {cls: "ticks"}, [el("span", {text: fmt(scale.vmin)}),
      el("span", {text: fmt((scale.vmin + scale.vmax) / 2)}), el("span", {text: fmt(scale.vmax)})]);
    return el("div", {cls: "cbar"}, [bar, ticks, el("div", {cls: "q", text: scale.quantity})]);
  }
  function openDetail(i) {
    var im = DATA.images[i];
    var box = document.getElementById("detail");
    if (!im) { box.className = ""; return; }
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var back = el("button", {cls: "back", type: "button", text: "\u2190 back to all images"});
    back.addEventListener("click", function () { history.pushState(null, "", location.pathname); closeDetail(); });
    box.appendChild(back);
    box.appendChild(el("h2", {id: "detail-title", text: im.name}));
    box.appendChild(el("p", {text: "true " + labelText(im.true, im.true_name) + " \u00B7 predicted " + labelText(im.pred, im.pred_name) +
      " \u00B7 confidence " + fmt(im.conf) + (im.label !== null && im.label !== undefined ? " \u00B7 explained " + labelText(im.label, im.label_name) : "")}));
    var panels = el("div", {cls: "panels"});
    panels.appendChild(el("div", {cls: "panel"}, [el("div", {cls: "ptitle", text: "image"}),
      im.photo ? el("img", {src: im.photo, alt: im.name}) : el("div", {cls: "status", text: im.problem || "no image"})]));
    DATA.methods.forEach(function (m) {
      var mp = im.maps[m];
      if (!mp) { return; }
      var kids = [el("div", {cls: "ptitle", text: m + (typeof mp.seconds === "number" ? " (" + fmt(mp.seconds, 2) + " s)" : "")})];
      if (mp.img) { kids.push(el("img", {src: mp.img, alt: m + " map", "class": "map"})); kids.push(colorbar(mp.scale)); }
      if (mp.status && mp.status !== "ok") { kids.push(el("div", {cls: "status", text: mp.status})); }
      var ms = Object.keys(mp.metrics);
      if (ms.length) { kids.push(el("div", {cls: "metrics", text: ms.map(function (k) { return k + " " + fmt(mp.metrics[k]); }).join(" \u00B7 ")})); }
      if (mp.caption) { kids.push(el("div", {cls: "caption", text: mp.caption})); }
      panels.appendChild(el("div", {cls: "panel", "data-method": m}, kids));
    });
    box.appendChild(panels);
    var plots = el("div", {cls: "plots"});
    ["deletion", "insertion"].forEach(function (mode) {
      var series = [];
      DATA.methods.forEach(function (m, mi) { var mp = im.maps[m]; if (mp && mp.curves[mode]) { series.push({label: m, color: COLORS[mi % COLORS.length], x: mp.curves[mode][0], y: mp.curves[mode][1]}); } });
      if (series.length) { plots.appendChild(linePlot(mode + " curve", series, "fraction of pixels " + (mode === "deletion" ? "removed" : "inserted"), "class score")); }
    });
    if (plots.childNodes.length) { box.appendChild(el("h3", {text: "Deletion / insertion"})); box.appendChild(plots); }
    box.className = "open";
    document.getElementById("overview").style.display = "none";
    window.scrollTo(0, 0);
  }
  function closeDetail() {
    document.getElementById("detail").className = "";
    document.getElementById("overview").style.display = "";
  }
  function route() {
    var m = /image=(\d+)/.exec(location.hash);
    if (m) { openDetail(parseInt(m[1], 10)); } else { closeDetail(); }
  }

  document.title = DATA.title;
  document.getElementById("title").textContent = DATA.title;
  document.getElementById("source").textContent = "source: " + DATA.source + " \u00B7 written " + DATA.generated;
  renderSummary();
  renderPlots();
  renderTableHead();
  renderControls();
  renderRows();
  window.addEventListener("hashchange", route);
  route();
})();
