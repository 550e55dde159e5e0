"""The live view in headless chromium: a page left open follows the run under it.

The page of a served run is opened (logged in with ``?token=``), a stage is
added through the API while it is open, and the page must draw it within
two seconds, marked as added at run time, with the change in the audit
trail beside the graph; hostile names and reasons are drawn as text.
Checked in the page's DOM and in a screenshot's size and pixels.
"""

from __future__ import annotations

import json

from browser import Screenshot
from control_helpers import held, hold, served
from live_browser import open_browser

from dagvisor import Pipeline

WINDOW = {"width": 1280, "height": 900}
HOSTILE = '<img src=x onerror="document.title=1">'
HOSTILE_REASON = "</script><script>document.title=2</script> & \u202e"

# The page is drawn (graph version shown) and follows the event stream.
_READY = """new Promise(function (resolve) {
  function ready() { return document.body.getAttribute("data-version") !== null; }
  if (ready()) return resolve(true);
  new MutationObserver(function (_, seen) {
    if (ready()) { seen.disconnect(); resolve(true); }
  }).observe(document.body, {attributes: true});
})"""

# Resolves when a drawn stage is named NAME (with where it is drawn), or with
# null once two seconds passed on the page's clock.
_APPEARS = """new Promise(function (resolve) {
  var name = %s;
  function found() {
    var stages = document.querySelectorAll("#dag g.stage");
    for (var i = 0; i < stages.length; i++) {
      var title = stages[i].querySelector("title");  // the label may be cut short
      if (title && title.textContent.split("\\n")[0] === name) {
        var r = stages[i].getBoundingClientRect();
        return {cls: stages[i].getAttribute("class"),
                box: [r.left, r.top, r.right, r.bottom]};
      }
    }
    return null;
  }
  var now = found();
  if (now) return resolve(now);
  var watch = new MutationObserver(function () {
    var it = found();
    if (it) { watch.disconnect(); resolve(it); }
  });
  watch.observe(document.getElementById("dag-host"), {childList: true, subtree: true});
  setTimeout(function () { watch.disconnect(); resolve(found()); }, 2000);
})"""

_DOM = """(function () {
  var boxes = {};
  document.querySelectorAll("#dag g.stage").forEach(function (g) {
    var r = g.getBoundingClientRect();
    boxes[g.querySelector("title").textContent.split("\\n")[0]] = {
      cls: g.getAttribute("class"), box: [r.left, r.top, r.right, r.bottom]};
  });
  return {boxes: boxes, title: document.title,
          images: document.querySelectorAll("img").length,
          scripts: document.querySelectorAll("script").length,
          errors: document.body.getAttribute("data-errors"),
          trail: Array.prototype.map.call(document.querySelectorAll("#audit-body tr"),
            function (tr) { return Array.prototype.map.call(tr.cells, function (td) {
              return td.textContent; }); }),
          status: document.getElementById("status").textContent};
})()"""


def _near(rgb, target, slack=24):
    return all(abs(a - b) <= slack for a, b in zip(rgb, target, strict=True))


def _hex(colour):
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def _inside(box, margin=3):
    left, top, right, bottom = (round(v) for v in box)
    return (left + margin, top + margin, right - margin, bottom - margin)


async def test_a_stage_added_through_the_api_appears_on_an_open_page(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, viewer), open_browser() as page:
        run = await rt.start(held())
        await page.open(f"{rt.url}/runs/{run.id}?token={viewer}", **WINDOW)
        assert await page.evaluate(_READY) is True
        assert await page.evaluate("location.search") == ""  # the secret is gone
        before = await page.evaluate(_DOM)
        assert set(before["boxes"]) == {"hold"}
        assert before["trail"] == []

        waiting = await page.send_evaluate(_APPEARS % json.dumps("late"))
        added = await op.post(
            f"/api/runs/{run.id}/stages",
            json={
                "stage": "hold",
                "name": "late",
                "after": ["hold"],
                "reason": "a check",
            },
        )
        assert added.status_code == 201
        appeared = page.value(await page.reply(waiting))
        assert appeared is not None, "the added stage was not drawn within 2 seconds"
        assert "dynamic" in appeared["cls"]  # marked as added at run time

        dom = await page.evaluate(_DOM)
        assert dom["errors"] is None
        assert "running" in dom["boxes"]["hold"]["cls"]
        assert "pending" in dom["boxes"]["late"]["cls"]
        assert dom["trail"][0][:4] == ["0", "add_stage", "api:alice", "a check"]
        assert "late" in dom["trail"][0][4]
        assert "graph version 1" in dom["status"]

        shot = Screenshot(await page.screenshot(tmp_path / "live.png"))
        assert (shot.width, shot.height) == (1280, 900)
        # hold is drawn in the running colour, late with the violet mark of
        # a stage added at run time, and the page is not blank around them.
        running = _hex("#cce5ff")
        assert (
            shot.count(
                _inside(dom["boxes"]["hold"]["box"]), lambda c: _near(c, running)
            )
            > 200
        )
        late = dom["boxes"]["late"]["box"]
        corner = (
            round(late[2]) - 12,
            round(late[1]) - 6,
            round(late[2]) + 6,
            round(late[1]) + 12,
        )
        violet = _hex("#7b3fbf")
        assert shot.count(corner, lambda c: _near(c, violet, 40)) > 20
        assert shot.count((0, 0, 1280, 900), lambda c: c != (255, 255, 255)) > 5000
        await run.cancel()


async def test_hostile_names_and_reasons_are_drawn_as_text(tmp_path):
    async with served(tmp_path) as (rt, op, _, _, viewer), open_browser() as page:
        run = await rt.start(held())
        await page.open(f"{rt.url}/runs/{run.id}?token={viewer}", **WINDOW)
        assert await page.evaluate(_READY) is True
        title = await page.evaluate("document.title")
        waiting = await page.send_evaluate(_APPEARS % json.dumps(HOSTILE))
        added = await op.post(
            f"/api/runs/{run.id}/stages",
            json={"stage": "hold", "name": HOSTILE, "reason": HOSTILE_REASON},
        )
        assert added.status_code == 201
        assert page.value(await page.reply(waiting)) is not None
        dom = await page.evaluate(_DOM)
        assert dom["images"] == 0
        assert dom["scripts"] == 3  # dagre, the graph view, the live view
        assert dom["title"] == title
        assert dom["errors"] is None
        assert dom["trail"][0][3] == HOSTILE_REASON
        await run.cancel()


# Resolves with the runs listed once there are COUNT rows, or with null once
# four seconds passed on the page's clock (the list is read every two).
_LISTED = """new Promise(function (resolve) {
  var count = %d;
  function rows() {
    return Array.prototype.map.call(document.querySelectorAll("#runs-body tr"),
      function (tr) { var a = tr.querySelector("a");
        return {name: a.textContent, href: a.getAttribute("href"),
                status: tr.cells[1].textContent}; });
  }
  if (rows().length >= count) return resolve(rows());
  var watch = new MutationObserver(function () {
    if (rows().length >= count) { watch.disconnect(); resolve(rows()); }
  });
  watch.observe(document.getElementById("runs-body"), {childList: true});
  setTimeout(function () { watch.disconnect(); resolve(null); }, 4000);
})"""


async def test_the_runs_page_lists_a_run_started_while_it_is_open(tmp_path):
    async with served(tmp_path) as (rt, _, _, _, viewer), open_browser() as page:
        first = await rt.start(held())
        await page.open(f"{rt.url}/?token={viewer}", **WINDOW)
        assert await page.evaluate("location.search") == ""
        shown = await page.evaluate(_LISTED % 1)
        assert [row["href"] for row in shown] == [f"/runs/{first.id}"]
        waiting = await page.send_evaluate(_LISTED % 2)
        second = await rt.start(Pipeline(HOSTILE).add(hold))
        listed = page.value(await page.reply(waiting))
        assert listed is not None, "a run started was not listed within 4 seconds"
        assert {row["href"] for row in listed} == {
            f"/runs/{first.id}",
            f"/runs/{second.id}",
        }
        assert HOSTILE in {row["name"] for row in listed}  # drawn as text
        assert {row["status"] for row in listed} == {"running"}
        assert await page.evaluate('document.querySelectorAll("img").length') == 0
        assert await page.evaluate('document.body.getAttribute("data-errors")') is None
        await first.cancel()
        await second.cancel()
