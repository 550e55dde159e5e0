"""The scripts a page of dagvisor ships inside itself: dagre, and the graph view.

dagre (``@dagrejs/dagre`` on the npm registry, MIT, with its graphlib, MIT)
lays graphs out in layers; it is vendored, minified, in ``_static/dagre``
with its licences and versions (``make vendor-dagre`` refreshes it), so a
report is one file that fetches nothing, and neither users nor the tests
need npm or the network. ``_static/graph_view.js`` draws a graph model
(`_report_data`) with it: zoom, pan, the stages of a box on demand. Both
load from a plain ``<script>`` (no bundler): the report inlines them, and
the live view of the control API can serve the same files.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

__all__ = ["DAGRE_VERSION", "dagre_script", "graph_view_script"]

DAGRE_VERSION: Final = "3.1.3"
"""The vendored dagre's version (the Makefile's ``DAGRE_VERSION``)."""

_SOURCE_MAP: Final = "//# sourceMappingURL="


def _read(*parts: str) -> str:
    return (
        resources.files(__package__ or "dagvisor.supervisor")
        .joinpath("_static", *parts)
        .read_text(encoding="utf-8")
    )


@functools.cache
def dagre_script() -> str:
    """dagre's minified script with its licence as a leading comment.

    The source map comment is left out: the page ships no map, and a
    browser's developer tools would otherwise try to fetch one.
    """
    code = "\n".join(
        line
        for line in _read("dagre", "dagre.min.js").splitlines()
        if not line.startswith(_SOURCE_MAP)
    )
    licence = _read("dagre", "LICENSE").strip()
    versions = _read("dagre", "VERSIONS").strip().replace("\n", ", ")
    return f"/*! {versions}\n\n{licence}\n*/\n{code}\n"


@functools.cache
def graph_view_script() -> str:
    """The script that draws a graph model with dagre (``dagvisorGraph.draw``)."""
    return _read("graph_view.js")
