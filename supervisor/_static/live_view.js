/* dagvisor live view: one run's graph, kept up to date from its event stream.
   Follows /api/runs/ID/events (an EventSource: the browser's session cookie
   reads it); on each event it asks for the graph again (/runs/ID/graph, at
   most a few times a second, less often when the graph takes longer to
   build) and redraws it with graph_view.js, keeping the zoom and the
   scroll. The latest changes of the audit trail are listed beside it.
   Every text of the run goes in as text (textContent), never as markup.
   Loaded after dagre and graph_view.js by a plain script element. */
(function () {
  "use strict";
  var live = document.getElementById("live");
  var host = document.getElementById("dag-host");
  var statusLine = document.getElementById("status");
  var auditBody = document.getElementById("audit-body");
  var auditNote = document.getElementById("audit-note");
  var runId = live.getAttribute("data-run");
  var page = "/runs/" + encodeURIComponent(runId);
  var api = "/api/runs/" + encodeURIComponent(runId);
  var MIN_GAP = 250; // ms between two fetches of the graph
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message));
    document.body.setAttribute("data-errors", errors.join("\n"));
  });

  var drawing = null, fetching = false, again = false, timer = null, took = 0;
  var ended = false, lost = 0, connected = false, summary = null, version = -1;

  function tag(name, parent, text, cls) {
    var node = document.createElement(name);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  }

  function say() {
    var parts = [];
    if (summary) parts.push(summary.status);
    if (version >= 0) parts.push("graph version " + version);
    if (ended) parts.push("the run has ended");
    else parts.push(connected ? "live" : "reconnecting…");
    if (lost) parts.push(lost + " events missed (the graph is read again)");
    parts.push("updated " + new Date().toLocaleTimeString());
    statusLine.textContent = parts.join(" · ");
  }

  function what(r) {
    if (r.error) return (r.error_type ? r.error_type + ": " : "") + r.error;
    var bits = [];
    if (r.added.length) bits.push("added " + r.added.join(", "));
    if (r.removed.length) bits.push("removed " + r.removed.join(", "));
    if (r.edges.length) bits.push("edges " + r.edges.map(function (e) { return e[0] + " → " + e[1]; }).join(", "));
    if (r.cancelled.length) bits.push("cancelled " + r.cancelled.join(", "));
    return bits.join("; ");
  }

  function showAudit(records, total) {
    auditBody.textContent = "";
    for (var i = records.length - 1; i >= 0; i--) { // the latest first
      var r = records[i];
      var row = tag("tr", auditBody, null, r.accepted ? "accepted" : "refused");
      row.setAttribute("data-seq", String(r.seq));
      tag("td", row, String(r.seq));
      tag("td", row, r.kind + (r.accepted ? "" : " (refused)"));
      tag("td", row, r.requester);
      tag("td", row, r.reason);
      tag("td", row, what(r), "mono");
    }
    auditNote.textContent = total
      ? (total > records.length ? "The latest " + records.length + " of " + total + " records." : total + (total === 1 ? " record." : " records."))
      : "No change yet.";
  }

  function redraw(data) {
    var view = host.querySelector(".dag-view");
    var kept = view ? {left: view.scrollLeft, top: view.scrollTop} : null;
    var scale = drawing ? drawing.scale() : null;
    summary = data.run;
    version = data.version;
    drawing = window.dagvisorGraph.draw(host, data.model);
    if (scale !== null) drawing.zoom(scale);
    view = host.querySelector(".dag-view");
    if (kept && view) { view.scrollLeft = kept.left; view.scrollTop = kept.top; }
    showAudit(data.audit, data.audit_total);
    document.body.setAttribute("data-version", String(version));
    say();
  }

  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    var started = Date.now();
    fetch(page + "/graph", {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) {
        if (!answer.ok) throw new Error("the graph: HTTP " + answer.status);
        return answer.json();
      })
      .then(redraw)
      .catch(function (e) { statusLine.textContent = String(e.message || e); })
      .then(function () {
        took = Date.now() - started;
        fetching = false;
        if (again) { again = false; soon(); }
      });
  }

  function soon() {
    if (timer !== null) return;
    timer = setTimeout(function () { timer = null; refresh(); }, Math.max(MIN_GAP, 3 * took));
  }

  var source = new EventSource(api + "/events");
  source.onopen = function () { connected = true; refresh(); }; // read after following: nothing is missed
  source.onerror = function () {
    connected = false;
    if (ended) source.close();
    say();
  };
  ["stage_queued", "stage_started", "stage_finished", "graph_changed", "signal"].forEach(function (kind) {
    source.addEventListener(kind, soon);
  });
  source.addEventListener("lost", function (e) {
    try { lost += JSON.parse(e.data).count; } catch (ignored) { lost += 1; }
    soon();
  });
  source.addEventListener("end", function () {
    ended = true;
    source.close();
    document.body.setAttribute("data-ended", "yes");
    refresh();
  });
  document.body.setAttribute("data-live", "yes");
})();
