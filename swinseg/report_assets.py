"""The review page's HTML frame, style and script (swinseg.report_page fills in the table and the data).

The script reads the case data from a JSON block and writes file-derived text with textContent only; the
Content-Security-Policy allows this one script (by its hash), inline styles and data: pictures, nothing else:
no network, no other script, no inline event handler.
"""
from __future__ import annotations

import base64
import hashlib

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0.2em 0; } h2 { font-size: 1.2em; margin: 0.6em 0 0.3em; }
.subtitle { color: #555; margin: 0 0 1em; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; white-space: nowrap; }
th { background: #eef; } #cohort th { cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.case { cursor: pointer; } tr.case:hover { background: #f3f6ff; } tr.selected { outline: 2px solid #46f; }
tr.flagged td:first-child { border-left: 4px solid #d33; }
td.verdict.fail { color: #b00; font-weight: bold; } td.verdict.review { color: #b60; font-weight: bold; }
td.verdict.ok { color: #070; }
.table-wrap { overflow-x: auto; max-width: 100%; }
#case { margin-top: 1.5em; display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
#case[hidden] { display: none; }
.viewer { position: relative; width: 512px; max-width: 100%; background: #000; }
.viewer img { display: block; width: 100%; } .viewer img[hidden] { display: none; }
.viewer #mask { position: absolute; top: 0; left: 0; opacity: 0.5; image-rendering: pixelated; }
.viewer.no-scan #mask { position: static; }
.controls { margin: 0.5em 0; display: grid; grid-template-columns: auto 1fr auto; gap: 0.3em 0.6em;
            align-items: center; max-width: 512px; }
.legend { list-style: none; padding: 0; margin: 0.4em 0; }
.legend li { display: inline-block; margin-right: 1em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em;
          border: 1px solid #333; }
.files { color: #555; font-size: 0.9em; word-break: break-all; max-width: 40em; }
"""

SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var table = document.getElementById("cohort");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var sortColumn = -1, ascending = true;

  function sortKey(row, column, type) {
    var raw = row.cells[column].getAttribute("data-sort");
    if (type === "text") { return raw.toLowerCase(); }
    return raw === "" ? null : Number(raw);
  }

  function sortBy(column) {
    var type = headers[column].getAttribute("data-type");
    ascending = column === sortColumn ? !ascending : true;
    sortColumn = column;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a, column, type), y = sortKey(b, column, type);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (cell, i) {
      cell.setAttribute("aria-sort", i === column ? (ascending ? "ascending" : "descending") : "none");
    });
  }
  headers.forEach(function (cell, i) { cell.addEventListener("click", function () { sortBy(i); }); });

  var panel = document.getElementById("case");
  var viewer = document.getElementById("viewer");
  var scan = document.getElementById("scan"), mask = document.getElementById("mask");
  var slider = document.getElementById("slice"), sliceLabel = document.getElementById("slice-label");
  var opacity = document.getElementById("opacity"), opacityLabel = document.getElementById("opacity-label");
  var current = null;

  function element(tag, text) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fill(target, nodes) {
    while (target.firstChild) { target.removeChild(target.firstChild); }
    nodes.forEach(function (node) { target.appendChild(node); });
  }
  function number(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "";
  }

  function setSlice(index) {
    if (!current) { return; }
    var last = current.slices.length - 1;
    index = Math.max(0, Math.min(last, index));
    slider.value = String(index);
    mask.src = current.mask_images[index];
    if (current.scan_images.length) { scan.src = current.scan_images[index]; }
    sliceLabel.textContent = "slice " + current.slices[index] + " (" + (index + 1) + " of " + (last + 1) + ")";
  }

  function statisticsRows(rows) {
    var keys = [["name", 0], ["voxels", 0], ["volume_ml", 2], ["mean", 1], ["std", 1], ["median", 1],
                ["min", 1], ["max", 1], ["touches_border", -1]];
    return rows.map(function (row) {
      var tr = element("tr");
      keys.forEach(function (pair) {
        var value = row[pair[0]];
        var text = pair[1] > 0 ? number(value, pair[1]) : (value === undefined || value === null ? "" : value);
        var td = element("td", text);
        if (pair[1] >= 0 && pair[0] !== "name") { td.className = "num"; }
        tr.appendChild(td);
      });
      return tr;
    });
  }

  function show(index) {
    current = data.cases[index];
    Array.prototype.forEach.call(body.rows, function (row) {
      row.classList.toggle("selected", Number(row.getAttribute("data-case")) === index);
    });
    document.getElementById("case-title").textContent = current.name;
    fill(document.getElementById("files"), [
      element("div", "mask: " + current.mask),
      element("div", "scan: " + (current.scan || "none given")),
      element("div", "reference: " + (current.reference || "none given"))
    ]);
    viewer.classList.toggle("no-scan", current.scan_images.length === 0);
    scan.hidden = current.scan_images.length === 0;
    slider.max = String(current.slices.length - 1);
    var present = data.classes.filter(function (item) { return current.labels.indexOf(item.label) >= 0; });
    fill(document.getElementById("legend"), present.map(function (item) {
      var li = element("li"), swatch = element("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = item.color;
      li.appendChild(swatch);
      li.appendChild(document.createTextNode(item.name));
      return li;
    }));
    var qc = current.qc;
    document.getElementById("qc-verdict").textContent = qc ?
      "QC: " + (qc.verdict === undefined ? "" : qc.verdict) + (typeof qc.score === "number" ? " (score " +
      number(qc.score, 3) + ")" : "") : "QC: no qc block in the statistics file";
    fill(document.getElementById("qc-reasons"), (qc && qc.reasons ? qc.reasons : []).map(function (reason) {
      return element("li", reason);
    }));
    fill(document.getElementById("stats-body"), statisticsRows(current.statistics || []));
    panel.hidden = false;
    setSlice(current.start);
    panel.scrollIntoView();
  }

  body.addEventListener("click", function (event) {
    var row = event.target.closest("tr");
    if (row) { show(Number(row.getAttribute("data-case"))); }
  });
  body.addEventListener("keydown", function (event) {
    var row = event.target.closest("tr");
    if (row && event.key === "Enter") { show(Number(row.getAttribute("data-case"))); }
  });
  slider.addEventListener("input", function () { setSlice(Number(slider.value)); });
  viewer.addEventListener("wheel", function (event) {
    event.preventDefault();
    setSlice(Number(slider.value) + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  opacity.addEventListener("input", function () {
    mask.style.opacity = String(Number(opacity.value) / 100);
    opacityLabel.textContent = opacity.value + "%";
  });
})();
"""

FRAME = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p class="subtitle">{subtitle}</p>
<div class="table-wrap">{table}</div>
<section id="case" hidden>
<div>
<h2 id="case-title"></h2>
<div id="viewer" class="viewer"><img id="scan" alt="scan slice"><img id="mask" alt="mask overlay"></div>
<div class="controls">
<label for="slice">slice</label><input id="slice" type="range" min="0" max="0" value="0" step="1">
<span id="slice-label"></span>
<label for="opacity">overlay</label><input id="opacity" type="range" min="0" max="100" value="50" step="5">
<span id="opacity-label">50%</span>
</div>
<ul id="legend" class="legend"></ul>
<p>Scroll over the picture or drag the slider to change the slice.</p>
</div>
<div>
<h2 id="qc-verdict"></h2>
<ul id="qc-reasons"></ul>
<h2>Statistics</h2>
<table id="stats"><thead><tr><th>class</th><th>voxels</th><th>volume ml</th><th>mean</th><th>std</th>
<th>median</th><th>min</th><th>max</th><th>touches border</th></tr></thead><tbody id="stats-body"></tbody></table>
<div id="files" class="files"></div>
</div>
</section>
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def page_html(*, title: str, subtitle: str, table: str, data: str) -> str:
    """The page: `title` and `subtitle` already escaped, `table` HTML, `data` script-safe JSON."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    policy = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
              "base-uri 'none'; form-action 'none'")
    return FRAME.format(policy=policy, title=title, subtitle=subtitle, table=table, data=data, style=STYLE,
                        script=SCRIPT)
