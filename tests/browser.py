"""Real renderers for the exports: headless chromium, Mermaid 11's parser, Graphviz.

Each helper skips the calling test, saying why, when its tool is missing:
``make test`` installs Debian's chromium and graphviz (when apt-get runs as
root) and Mermaid 11 from the npm registry into ``.cache/mermaid`` (git
ignored). Nothing here touches the network.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MERMAID_JS = ROOT / ".cache/mermaid/node_modules/mermaid/dist/mermaid.min.js"


def chromium_or_none() -> str | None:
    """The path of a chromium, if this machine has one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium() -> str:
    """The path of chromium, or skip the test."""
    found = chromium_or_none()
    if found is not None:
        return found
    pytest.skip(
        "no chromium on this machine: `make test` installs Debian's chromium "
        "when it can (apt-get as root); install it to run this test"
    )


def mermaid_js() -> Path:
    """Mermaid 11's browser bundle, or skip the test."""
    bundle = Path(os.environ.get("DAGVISOR_MERMAID_JS", MERMAID_JS))
    if not bundle.is_file():
        pytest.skip(
            f"no Mermaid bundle at {bundle}: `make mermaid` (part of `make test`) "
            "installs mermaid@11 from the npm registry when npm is present"
        )
    return bundle


def script_json(value: object) -> str:
    """JSON that is inert inside a ``<script>`` element, whatever its strings hold."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def dump_dom(page: Path, *, budget_ms: int = 60_000) -> tuple[str, list[str]]:
    """Load ``page`` in headless chromium; its DOM once scripts ran, and its console lines.

    ``--virtual-time-budget`` lets promises (Mermaid's parser is async)
    settle before the DOM is dumped.
    """
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    errors = done.stderr.decode(errors="replace")
    assert done.returncode == 0, errors
    console = [line for line in errors.splitlines() if ":CONSOLE" in line]
    return done.stdout.decode(errors="replace"), console


_PARSE_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mermaid parse</title></head><body>
<script src="{bundle}"></script>
<script id="documents" type="application/json">{documents}</script>
<script>
(async function () {{
  var out = [];
  try {{
    mermaid.initialize({{startOnLoad: false, securityLevel: "strict"}});
    var documents = JSON.parse(document.getElementById("documents").textContent);
    for (var i = 0; i < documents.length; i++) {{
      var entry = {{ok: false, labels: null, title: null, error: null}};
      try {{
        var parsed = await mermaid.parse(documents[i]);
        entry.ok = Boolean(parsed) && parsed.diagramType === "flowchart-v2";
        if (!entry.ok) entry.error = "parsed as " + JSON.stringify(parsed);
      }} catch (e) {{
        entry.error = String((e && e.message) || e);
      }}
      if (entry.ok && {render}) {{
        try {{
          var drawn = await mermaid.render("doc" + i, documents[i]);
          var holder = document.createElement("div");
          holder.innerHTML = drawn.svg;
          entry.labels = Array.prototype.map.call(
            holder.querySelectorAll("g.node .nodeLabel"),
            function (n) {{ return n.textContent; }});
          var title = holder.querySelector(".flowchartTitleText");
          entry.title = title ? title.textContent : null;
        }} catch (e) {{
          entry.ok = false;
          entry.error = "render: " + String((e && e.message) || e);
        }}
      }}
      out.push(entry);
    }}
  }} catch (e) {{
    out.push({{ok: false, error: "setup: " + String((e && e.message) || e)}});
  }}
  var pre = document.createElement("pre");
  pre.id = "results";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}})();
</script></body></html>
"""


def mermaid_parse(
    documents: list[str], workdir: Path, *, render: bool = False
) -> list[dict[str, object]]:
    """Each document through Mermaid 11's own parser, in one browser launch.

    Each answer is ``{"ok", "error", "labels", "title"}``; with ``render``,
    the documents that parse are also drawn, and ``labels`` and ``title``
    are the texts of the drawn nodes and title (in drawing order).
    """
    page = workdir / "mermaid-parse.html"
    page.write_text(
        _PARSE_PAGE.format(
            bundle=mermaid_js().as_uri(),
            documents=script_json(documents),
            render="true" if render else "false",
        ),
        encoding="utf-8",
    )
    dom, _console = dump_dom(page)
    found = re.search(r'<pre id="results">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom[-2000:]
    results: list[dict[str, object]] = json.loads(html.unescape(found.group(1)))
    assert len(results) == len(documents), results[-1:]
    return results


def dot_or_none() -> str | None:
    """Graphviz's ``dot``, if installed."""
    return shutil.which("dot")


# -- screenshots and where things are drawn ---------------------------------------


def _png_rows(data: bytes) -> tuple[int, int, list[bytes], int]:
    """Width, height, unfiltered rows and bytes per pixel of an 8-bit PNG.

    Enough of PNG for what chromium writes (RGB or RGBA, 8 bits, not
    interlaced): the tests need no imaging library.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), header
    assert colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows, bpp


class Screenshot:
    """A PNG screenshot's pixels, read without an imaging library."""

    def __init__(self, path: Path) -> None:
        self.width, self.height, self._rows, self._bpp = _png_rows(path.read_bytes())

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        """The RGB colour at ``(x, y)``."""
        at = x * self._bpp
        r, g, b = self._rows[y][at : at + 3]
        return r, g, b

    def count(
        self,
        box: tuple[int, int, int, int],
        match: object,
    ) -> int:
        """How many pixels of ``box`` (left, top, right, bottom) ``match(rgb)`` accepts."""
        left, top, right, bottom = box
        assert callable(match)
        return sum(
            1
            for y in range(max(top, 0), min(bottom, self.height))
            for x in range(max(left, 0), min(right, self.width))
            if match(self.pixel(x, y))
        )


def screenshot(page: Path, out: Path, *, width: int, height: int) -> Screenshot:
    """A ``width`` x ``height`` screenshot of ``page`` in headless chromium."""
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    print(f"screenshot: {out}")
    return Screenshot(out)


_PROBE = """<script>
(function () {
  %s
  var found = [];
  document.querySelectorAll(%s).forEach(function (el) {
    var r = el.getBoundingClientRect();
    var label = el.querySelector("text");
    var title = el.querySelector("title");
    found.push({text: (label || el).textContent,
                shown: el.textContent.slice(title ? title.textContent.length : 0), cls: el.getAttribute("class"),
                left: r.left, top: r.top, right: r.right, bottom: r.bottom});
  });
  var pre = document.createElement("pre");
  var details = document.getElementById("dag-details");
  var dag = document.getElementById("dag");
  pre.id = "probe";
  pre.textContent = JSON.stringify({width: window.innerWidth,
    height: window.innerHeight, found: found,
    details: details ? details.textContent : null,
    svg: dag ? [Number(dag.getAttribute("width")), Number(dag.getAttribute("height"))] : null,
    layout: dag ? dag.getAttribute("data-layout") : null});
  document.body.appendChild(pre);
})();
</script>"""


def where_drawn(
    page: Path, selector: str, *, width: int, height: int, clicks: tuple[str, ...] = ()
) -> dict[str, object]:
    """Where the elements ``selector`` picks are on screen, once the page's scripts ran.

    A copy of the page gets a script of the test's own, run after the
    page's; it answers ``{"width", "height", "found": [{"text", "cls",
    "left", "top", "right", "bottom"}]}`` in CSS pixels of a
    ``width`` x ``height`` window, with the text of the graph's details
    panel (``"details"``), the drawn graph's size (``"svg"``) and what laid
    it out (``"layout"``). Each of ``clicks`` (selectors) is clicked first,
    in order.
    """
    text = page.read_text(encoding="utf-8")
    click = "".join(
        f"document.querySelector({json.dumps(target)}).dispatchEvent("
        "new MouseEvent('click', {bubbles: true}));"
        for target in clicks
    )
    probe = _PROBE % (click, json.dumps(selector))
    assert "</body>" in text
    probed = page.with_name(page.stem + "-probed.html")
    probed.write_text(text.replace("</body>", probe + "</body>", 1), encoding="utf-8")
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    dom = done.stdout.decode(errors="replace")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom[-2000:]
    answer: dict[str, object] = json.loads(html.unescape(found.group(1)))
    return answer
