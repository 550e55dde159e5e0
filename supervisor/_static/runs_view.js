/* dagvisor live view: the runtime's runs, kept up to date.
   Reads /api/runs (the browser's session cookie reads it) every two
   seconds while the page is shown, and rewrites the table's rows: each
   run's name (a link to its page), status and id. Every text of a run goes
   in as text (textContent), never as markup. Loaded by a plain script
   element at the end of the page. */
(function () {
  "use strict";
  var EVERY = 2000; // ms between two reads of the runs
  var body = document.getElementById("runs-body");
  var none = document.getElementById("no-runs");
  var note = document.getElementById("runs-note");
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message));
    document.body.setAttribute("data-errors", errors.join("\n"));
  });

  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function oneLine(text) {
    return String(text).replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");
  }

  function draw(runs) {
    var rows = document.createDocumentFragment();
    runs.forEach(function (run) {
      var row = document.createElement("tr");
      var link = document.createElement("a");
      link.href = "/runs/" + encodeURIComponent(run.id);
      link.textContent = oneLine(run.name);
      cell(row, "").appendChild(link);
      cell(row, oneLine(run.status));
      cell(row, oneLine(run.id), "mono");
      rows.appendChild(row);
    });
    body.replaceChildren(rows);
    none.hidden = runs.length > 0;
    note.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-runs", String(runs.length));
  }

  function read() {
    if (document.hidden) return;
    fetch("/api/runs", {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) {
        if (answer.status === 401) {
          note.textContent = "logged out: open this page with ?token=SECRET";
          return null;
        }
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        return answer.json();
      })
      .then(function (runs) { if (runs) draw(runs); })
      .catch(function () { note.textContent = "the runtime cannot be reached"; });
  }

  setInterval(read, EVERY);
  document.addEventListener("visibilitychange", read);
  read();
})();
