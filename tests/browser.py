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
import subprocess
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
