/* dagvisor graph view: a run's graph model (boxes, edges, listed stages)
   laid out in layers by dagre, top to bottom. Straight chains are drawn
   stage by stage, wrapped in rows; a layout much taller than the view is
   folded into columns. Zoom (buttons, ctrl + wheel) and pan (drag, scroll);
   a click on a box lists its stages. Every text goes in as text
   (textContent), never as markup. Loaded by a plain script element after dagre:
   dagvisorGraph.draw(host, model) -> {scale, zoom(factor), fit()}. */
(function (global) {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var FONT = "12px system-ui, sans-serif";
  var SMALL = "11px system-ui, sans-serif";
  var ADDED = "#7b3fbf"; // the mark of a stage added at run time
  var CELL_H = 26, GAP_X = 16, GAP_Y = 18, PAD = 10, WRAP_MAX = 12;
  var LEGIBLE = 0.6; // the smallest first scale: 12 px text stays about 7 px
  var measure = null;

  function textWidth(text, font) {
    if (measure === null) {
      var canvas = document.createElement("canvas");
      measure = canvas.getContext ? canvas.getContext("2d") : false;
    }
    if (!measure) return text.length * 7;
    measure.font = font;
    return measure.measureText(text).width;
  }

  function clip(text, width, font) {
    if (textWidth(text, font) <= width) return text;
    var low = 0, high = text.length;
    while (low < high) {
      var mid = (low + high + 1) >> 1;
      if (textWidth(text.slice(0, mid) + "…", font) <= width) low = mid; else high = mid - 1;
    }
    return text.slice(0, low) + "…";
  }

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  function svg(tag, attrs, parent, text) {
    var node = document.createElementNS(SVG, tag);
    for (var key in attrs) if (Object.prototype.hasOwnProperty.call(attrs, key)) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function tag(name, parent, text, cls) {
    var node = document.createElement(name);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  }

  function count(n) { return Number(n).toLocaleString("en-US"); }

  function sizeOf(box, stages, room) {
    if (box.inline) {
      var widest = 0;
      box.stages.forEach(function (i) { widest = Math.max(widest, textWidth(stages[i].name, SMALL)); });
      var cell = clamp(widest + 20, 72, 150);
      var n = box.stages.length;
      var wrap = Math.min(n, clamp(Math.floor((room - 2 * PAD + GAP_X) / (cell + GAP_X)), 2, WRAP_MAX));
      var rows = Math.ceil(n / wrap);
      return {w: 2 * PAD + wrap * cell + (wrap - 1) * GAP_X,
              h: 2 * PAD + rows * CELL_H + (rows - 1) * GAP_Y, cell: cell, wrap: wrap};
    }
    if (box.kind === "stage") return {w: clamp(textWidth(box.label, FONT) + 26, 96, 230), h: 30};
    var wide = Math.max(textWidth(box.label, FONT), textWidth(box.note, SMALL));
    return {w: clamp(wide + 28, 130, 250), h: 46};
  }

  // A drawing much taller or wider than the view is folded, when that
  // shows it larger: ranks into columns side by side (a deep graph, such as
  // a long chain whose stages each got a check, reads like a newspaper), or
  // its width into strips one under the other (hundreds of stages in one
  // layer). Each fold says where a box goes (piece, place) and how an edge
  // from one piece to another is drawn (route).
  var FOLDS = 12;

  function best(flat, scaleOf) {
    var pieces = 1, top = flat;
    for (var k = 2; k <= FOLDS; k++) {
      var s = scaleOf(k);
      if (s > top * 1.05) { top = s; pieces = k; }
    }
    return {pieces: pieces, scale: top};
  }

  function columns(g, ids, room, flat) {
    var width = g.graph().width, height = g.graph().height;
    var choice = best(flat, function (k) {
      return Math.min(1, room.width / (k * (width + 40) - 40), room.height / (height / k + 60));
    });
    if (choice.pieces < 2) return null;
    var bands = {};
    ids.forEach(function (id) {
      var n = g.node(id), top = n.y - n.height / 2, bottom = n.y + n.height / 2;
      var band = bands[n.rank] || (bands[n.rank] = {top: top, bottom: bottom, rank: n.rank});
      band.top = Math.min(band.top, top); band.bottom = Math.max(band.bottom, bottom);
    });
    var order = Object.keys(bands).map(function (k) { return bands[k]; })
      .sort(function (a, b) { return a.top - b.top; });
    var share = height / choice.pieces, start = order.length ? order[0].top : 0;
    var cuts = [{top: start}], columnOf = {};
    order.forEach(function (band) {
      if (band.bottom - start > share && cuts.length < choice.pieces && band.top > start) {
        start = band.top; cuts.push({top: band.top});
      }
      columnOf[band.rank] = cuts.length - 1;
    });
    var step = width + 40, margin = 14, tallest = 0;
    cuts.forEach(function (cut, c) {
      var end = c + 1 < cuts.length ? cuts[c + 1].top : height;
      cut.height = end - cut.top; tallest = Math.max(tallest, cut.height);
    });
    return {
      scale: choice.scale, width: cuts.length * step - 12, height: tallest + 2 * margin,
      note: "folded into " + cuts.length + " columns, read each top to bottom",
      piece: function (id) { return columnOf[g.node(id).rank]; },
      place: function (x, y, c) { return {x: x + c * step, y: y - cuts[c].top + margin}; },
      route: function (a, b, ca) { // down, over the gap, and in from the top
        return "M" + a.x + "," + a.y + " V" + (cuts[ca].height + margin + 8) +
          " H" + ((ca + 1) * step - 20) + " V" + (margin - 8) + " H" + b.x + " V" + b.y;
      }
    };
  }

  function strips(g, ids, room, flat) {
    var width = g.graph().width, height = g.graph().height;
    var choice = best(flat, function (k) {
      return Math.min(1, room.width / (width / k + 60), room.height / (k * (height + 40) - 40));
    });
    if (choice.pieces < 2) return null;
    var spans = ids.map(function (id) {
      var n = g.node(id);
      return [n.x - n.width / 2, n.x + n.width / 2];
    }).sort(function (a, b) { return a[0] - b[0]; });
    var share = width / choice.pieces, cuts = [0], reach = -Infinity;
    spans.forEach(function (span) { // cut only where no box straddles
      if (span[0] > reach && span[0] - cuts[cuts.length - 1] > share && cuts.length < choice.pieces) {
        cuts.push(span[0] - 12);
      }
      reach = Math.max(reach, span[1]);
    });
    var widest = 0, margin = 14;
    cuts.forEach(function (left, r) {
      widest = Math.max(widest, (r + 1 < cuts.length ? cuts[r + 1] : width) - left);
    });
    function stripOf(x) {
      for (var r = cuts.length - 1; r > 0; r--) if (x >= cuts[r]) return r;
      return 0;
    }
    return {
      scale: choice.scale, width: widest + 2 * margin, height: cuts.length * (height + 40) - 40,
      note: "folded into " + cuts.length + " strips, read each left to right",
      piece: function (id) { return stripOf(g.node(id).x); },
      place: function (x, y, r) { return {x: x - cuts[r] + margin, y: y + r * (height + 40)}; },
      route: function (a, b) { return "M" + a.x + "," + a.y + " L" + b.x + "," + b.y; }
    };
  }

  function fold(g, ids, room) {
    var graph = g.graph();
    var flat = Math.min(1, room.width / graph.width, room.height / graph.height);
    if (flat >= 0.9) return null;
    var tall = columns(g, ids, room, flat), wide = strips(g, ids, room, flat);
    if (tall && wide) return tall.scale >= wide.scale ? tall : wide;
    return tall || wide;
  }

  function edgePath(points) {
    var d = "M" + points[0].x.toFixed(1) + "," + points[0].y.toFixed(1);
    for (var i = 1; i < points.length - 1; i++) {
      var p = points[i], q = points[i + 1];
      d += " Q" + p.x.toFixed(1) + "," + p.y.toFixed(1) + " " +
        ((p.x + q.x) / 2).toFixed(1) + "," + ((p.y + q.y) / 2).toFixed(1);
    }
    var last = points[points.length - 1];
    return d + " L" + last.x.toFixed(1) + "," + last.y.toFixed(1);
  }

  function addedMark(parent, x, y) {
    svg("circle", {cx: x, cy: y, r: 7, fill: ADDED, "class": "added-mark"}, parent);
    svg("path", {d: "M" + (x - 3.5) + "," + y + "h7M" + x + "," + (y - 3.5) + "v7",
                 stroke: "#fff", "stroke-width": 1.8}, parent);
  }

  function draw(host, model) {
    var stages = model.stages, boxes = model.boxes, colours = model.colours;
    host.textContent = "";
    var tools = tag("div", host, null, "dag-tools");
    var buttons = {};
    [["out", "−", "zoom out"], ["in", "+", "zoom in"], ["fit", "fit", "the whole graph"],
     ["one", "100%", "actual size"]].forEach(function (b) {
      var button = tag("button", tools, b[1]);
      button.type = "button"; button.title = b[2]; buttons[b[0]] = button;
    });
    var drawn = tag("span", tools, null, "note");
    drawn.id = "drawn";
    var view = tag("div", host, null, "dag-view");
    var details = tag("div", host, null, "dag-details");
    details.id = "dag-details";
    tag("p", details, "Click a box to list its stages.", "note");

    var room = {width: Math.max(host.clientWidth - 4, 320),
                height: Math.max(window.innerHeight - view.getBoundingClientRect().top - 12, 360)};
    var g = new dagre.graphlib.Graph();
    g.setGraph({rankdir: "TB", nodesep: 26, ranksep: 36, edgesep: 12, marginx: 14, marginy: 14});
    g.setDefaultEdgeLabel(function () { return {}; });
    var ids = [];
    boxes.forEach(function (box, i) {
      box.dim = sizeOf(box, stages, room.width - 40);
      g.setNode(String(i), {width: box.dim.w, height: box.dim.h});
      ids.push(String(i));
    });
    boxes.forEach(function (box, i) {
      box.deps.forEach(function (d) { if (d !== i) g.setEdge(String(d), String(i)); });
      // A box that waits for nothing hangs under the stage that added it.
      if (!box.deps.length && box.by !== null && box.by !== i) {
        g.setEdge(String(box.by), String(i), {added: true});
      }
    });
    dagre.layout(g);

    var folded = fold(g, ids, room);
    var width = folded ? folded.width : g.graph().width;
    var height = folded ? folded.height : g.graph().height;
    function at(id, x, y) {
      return folded ? folded.place(x, y, folded.piece(id)) : {x: x, y: y};
    }

    var root = svg("svg", {id: "dag", xmlns: SVG, role: "img", "aria-label": "final graph",
                           viewBox: "0 0 " + width.toFixed(0) + " " + height.toFixed(0),
                           "data-layout": "dagre " + dagre.version}, view);
    var defs = svg("defs", {}, root);
    var marker = svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"}, defs);
    svg("path", {d: "M0,0 L10,5 L0,10 z", fill: "#8a8f98"}, marker);
    var violet = svg("marker", {id: "added-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"}, defs);
    svg("path", {d: "M0,0 L10,5 L0,10 z", fill: ADDED}, violet);
    var edgeLayer = svg("g", {"class": "edges"}, root);
    var nodeLayer = svg("g", {"class": "boxes"}, root);
    var centre = {}, cells = {};

    boxes.forEach(function (box, i) {
      var n = g.node(String(i));
      var p = at(String(i), n.x - n.width / 2, n.y - n.height / 2);
      centre[i] = {x: p.x, y: p.y, w: n.width, h: n.height};
      if (box.inline) drawChain(box, i, p); else drawBox(box, i, p, n);
    });

    function stageTitle(s) {
      var lines = [s.name, s.state + (s.took !== undefined ? ", ran " + s.took.toFixed(3) + " s" : "")];
      if (s.added) lines.push("added at run time: " + s.added + ": " + s.why);
      if (s.params) lines.push("params: " + s.params);
      if (s.output) lines.push("output: " + s.output);
      if (s.error) lines.push("error: " + s.error);
      return lines.join("\n");
    }

    function drawBox(box, i, p, n) {
      var fill = colours[box.state][0], stroke = colours[box.state][1];
      var group = svg("g", {"class": "stage " + box.kind + " " + box.state + (box.added ? " dynamic" : ""),
                            "data-box": i, tabindex: 0}, nodeLayer);
      svg("title", {}, group, box.kind === "stage" && box.stages.length
        ? stageTitle(stages[box.stages[0]])
        : box.label + " " + box.note + "\n" + box.origin);
      var rect = {x: p.x, y: p.y, width: n.width, height: n.height, rx: 6, fill: fill, stroke: stroke};
      if (box.added) rect["stroke-dasharray"] = "5,3";
      if (box.kind !== "stage") rect["stroke-width"] = 1.6;
      svg("rect", rect, group);
      if (box.kind === "stage") {
        svg("text", {x: p.x + 10, y: p.y + 19}, group, clip(box.label, n.width - 20, FONT));
      } else {
        svg("text", {x: p.x + 10, y: p.y + 18, "class": "label"}, group, clip(box.label, n.width - 20, FONT));
        svg("text", {x: p.x + 10, y: p.y + 33, "class": "count"}, group, clip(box.note, n.width - 20, SMALL));
        var x = p.x + 6, span = n.width - 12; // the members' states, as a bar
        Object.keys(box.counts).forEach(function (state) {
          var part = span * box.counts[state] / box.size;
          svg("rect", {x: x, y: p.y + n.height - 7, width: Math.max(part, 1), height: 3,
                       fill: colours[state][1]}, group);
          x += part;
        });
      }
      if (box.added) addedMark(group, p.x + n.width - 3, p.y + 3);
      group.addEventListener("click", function () { show(i); });
    }

    function drawChain(box, i, p) {
      var size = box.dim;
      var block = svg("g", {"class": "chain", "data-box": i}, nodeLayer);
      svg("title", {}, block, box.label + " (" + box.note + ")");
      svg("rect", {x: p.x, y: p.y, width: size.w, height: size.h, rx: 8, "class": "chain-bg"}, block);
      var last = null;
      box.stages.forEach(function (k, j) {
        var s = stages[k], col = j % size.wrap, row = Math.floor(j / size.wrap);
        var x = p.x + PAD + col * (size.cell + GAP_X), y = p.y + PAD + row * (CELL_H + GAP_Y);
        var cell = svg("g", {"class": "stage " + s.state + (s.added ? " dynamic" : ""),
                             "data-stage": k, tabindex: 0}, block);
        svg("title", {}, cell, stageTitle(s));
        var rect = {x: x, y: y, width: size.cell, height: CELL_H, rx: 5,
                    fill: colours[s.state][0], stroke: colours[s.state][1]};
        if (s.added) rect["stroke-dasharray"] = "5,3";
        svg("rect", rect, cell);
        svg("text", {x: x + 8, y: y + 17, "class": "cell"}, cell, clip(s.name, size.cell - 16, SMALL));
        if (s.added) addedMark(cell, x + size.cell - 3, y + 3);
        cell.addEventListener("click", function (event) { event.stopPropagation(); show(i, k); });
        if (last !== null) {
          var d = col === 0
            ? "M" + (last.x + size.cell / 2) + "," + (last.y + CELL_H) + " V" + (y - GAP_Y / 2) +
              " H" + (x + size.cell / 2) + " V" + (y - 1)
            : "M" + (last.x + size.cell) + "," + (y + CELL_H / 2) + " H" + (x - 1);
          svg("path", {d: d, "class": "edge", "marker-end": "url(#arrow)"}, block);
        }
        last = {x: x, y: y};
        // Edges meet the block's border next to its first and last stage.
        if (j === 0) cells[i] = {first: {x: x + size.cell / 2, y: p.y}};
        cells[i].last = {x: x + size.cell / 2, y: p.y + size.h};
      });
    }

    g.edges().forEach(function (e) {
      var points = g.edge(e).points.slice();
      var from = Number(e.v), to = Number(e.w);
      var cv = folded ? folded.piece(e.v) : 0, cw = folded ? folded.piece(e.w) : 0;
      points = points.map(function (pt, j) {
        return folded ? folded.place(pt.x, pt.y, j < points.length / 2 ? cv : cw) : pt;
      });
      if (cells[from]) points[0] = {x: cells[from].last.x, y: cells[from].last.y};
      if (cells[to]) points[points.length - 1] = {x: cells[to].first.x, y: cells[to].first.y};
      var d;
      if (cv !== cw) {
        d = folded.route(points[0], points[points.length - 1], cv, cw);
      } else {
        d = edgePath(points);
      }
      var added = g.edge(e).added;
      svg("path", {d: d, "class": added ? "edge added-by" : "edge",
                   "marker-end": added ? "url(#added-arrow)" : "url(#arrow)"}, edgeLayer);
    });

    var scale = 1;
    function zoom(to) {
      scale = clamp(to, 0.05, 4);
      root.setAttribute("width", (width * scale).toFixed(0));
      root.setAttribute("height", (height * scale).toFixed(0));
      view.style.height = Math.min(height * scale + 4, room.height).toFixed(0) + "px";
      return scale;
    }
    function whole() { return Math.min(1, room.width / width, room.height / height); }
    buttons.out.addEventListener("click", function () { zoom(scale / 1.25); });
    buttons["in"].addEventListener("click", function () { zoom(scale * 1.25); });
    buttons.fit.addEventListener("click", function () { zoom(whole()); });
    buttons.one.addEventListener("click", function () { zoom(1); });
    view.addEventListener("wheel", function (event) {
      if (!event.ctrlKey && !event.metaKey) return; // plain wheel scrolls
      event.preventDefault();
      var r = view.getBoundingClientRect();
      var fx = (view.scrollLeft + event.clientX - r.left) / scale;
      var fy = (view.scrollTop + event.clientY - r.top) / scale;
      zoom(scale * (event.deltaY < 0 ? 1.15 : 1 / 1.15));
      view.scrollLeft = fx * scale - (event.clientX - r.left);
      view.scrollTop = fy * scale - (event.clientY - r.top);
    }, {passive: false});
    var drag = null;
    view.addEventListener("mousedown", function (event) {
      if (event.button !== 0) return;
      drag = {x: event.clientX, y: event.clientY, left: view.scrollLeft, top: view.scrollTop};
      view.classList.add("dragging");
    });
    window.addEventListener("mousemove", function (event) {
      if (!drag) return;
      view.scrollLeft = drag.left - (event.clientX - drag.x);
      view.scrollTop = drag.top - (event.clientY - drag.y);
    });
    window.addEventListener("mouseup", function () { drag = null; view.classList.remove("dragging"); });

    zoom(Math.max(whole(), Math.min(1, LEGIBLE)));
    var shown = model.total - model.left_out;
    drawn.textContent = count(boxes.length) + " boxes for " + count(shown) + " stages" +
      (model.left_out ? "; " + count(model.left_out) + " stages not drawn (the graph is large)" : "") +
      (folded ? "; " + folded.note : "");

    function show(i, only) {
      var box = boxes[i];
      details.textContent = "";
      tag("h3", details, box.label + (box.note ? " (" + box.note + ")" : ""));
      if (box.origin) tag("p", details, box.origin, "note");
      var chips = tag("p", details, null, "legend");
      Object.keys(box.counts).forEach(function (state) {
        var chip = tag("span", chips, count(box.counts[state]) + " " + state);
        chip.style.background = colours[state][0];
        chip.style.borderColor = colours[state][1];
      });
      var listed = only !== undefined ? [only] : box.stages;
      var withParams = listed.some(function (k) { return stages[k].params; });
      var table = tag("table", details);
      var head = tag("tr", tag("thead", table));
      ["stage", "state", "ran (s)"].concat(withParams ? ["params"] : [])
        .concat(["output or error", "added at run time"]).forEach(function (h) {
          tag("th", head, h);
        });
      var body = tag("tbody", table);
      listed.forEach(function (k) {
        var s = stages[k], row = tag("tr", body, null, s.state);
        tag("td", row, s.name);
        tag("td", row, s.state);
        tag("td", row, s.took !== undefined ? s.took.toFixed(4) : "");
        if (withParams) tag("td", row, s.params || "", "mono");
        tag("td", row, s.error || s.output || "", "mono");
        // A group's stages share one change, said above the table.
        var added = tag("td", row, s.added ? s.added + (box.kind === "group" ? "" : ": " + s.why) : "");
        if (s.added) added.title = s.why;
      });
      if (box.size > listed.length && only === undefined) {
        tag("p", details, "Listed: " + count(listed.length) + " of " + count(box.size) +
          " stages (a report lists up to " + count(model.listed_max) +
          " stages in all; the timeline and the changes cover every stage).", "note");
      }
    }

    return {scale: function () { return scale; }, zoom: zoom, fit: function () { return zoom(whole()); }};
  }

  global.dagvisorGraph = {draw: draw};
})(window);
