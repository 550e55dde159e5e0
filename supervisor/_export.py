"""Pictures of a run's graph: Mermaid and Graphviz DOT, whatever the names.

States are colours; stages added while the run ran are drawn differently
(rounded in Mermaid, dashed in DOT), so the picture shows how the graph
changed. Pure functions over read-only mappings: they never touch a live run.

Names are data, never syntax: every name and the title are escaped for the
format, and the text returned always encodes as UTF-8 (a lone surrogate, as
``os.listdir`` returns for a file name that is not UTF-8, is written as its
escape ``\\udXXX``). Mermaid labels get numeric entities (``#35;``) for
every character that is not a letter, a digit or plain punctuation, and the
title is a double-quoted YAML string in ASCII; DOT gets ``\\"`` and
``\\\\`` in quoted ids. In both, a control character other than tab and
newline is drawn as its escape (``\\x1b``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from dagvisor.actors import StageState

from ._result import renders
from ._text import utf8_text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._audit import AuditRecord
    from ._result import RunResult

__all__ = ["COLOURS", "result_dot", "result_mermaid", "to_dot", "to_mermaid"]

# Fill and stroke per state, shared by both formats.
COLOURS: dict[StageState, tuple[str, str]] = {
    StageState.PENDING: ("#eeeeee", "#999999"),
    StageState.QUEUED: ("#ece6f7", "#8066b3"),
    StageState.RUNNING: ("#cce5ff", "#3366cc"),
    StageState.SUCCEEDED: ("#d4f7d4", "#2e8b2e"),
    StageState.FAILED: ("#ffd6d6", "#cc2222"),
    StageState.SKIPPED: ("#f4f4f4", "#bbbbbb"),
    StageState.CANCELLED: ("#fff0cc", "#cc8800"),
    StageState.UPSTREAM_FAILED: ("#ffe8e0", "#dd6644"),
}


# Control characters other than tab and newline, as the escape they are drawn as.
_CONTROLS = {
    code: f"\\x{code:02x}"
    for code in (*range(32), *range(127, 160))
    if code not in (9, 10)
}


_HAS_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _drawable(text: str) -> str:
    """UTF-8 text in which every control but tab and newline is its escape ``\\xNN``."""
    text = utf8_text(text)
    return text.translate(_CONTROLS) if _HAS_CONTROL.search(text) else text


# Kept as they are in a Mermaid text: letters and digits of any script,
# underscore, and punctuation that means nothing inside a quoted label.
# Everything else (quotes, backticks, #, %, ;, <, >, &, |, tab, newline,
# spaces other than " ", marks, symbols) becomes a numeric entity, which
# Mermaid turns back into the character when it draws. (Controls are
# escapes by then: HTML reads ``&#128;``-``&#159;`` as Windows-1252.)
_MERMAID_ESCAPED = re.compile(r"[^\w .,:/()\[\]+=@'!?*-]")


def _mermaid_entity(found: re.Match[str]) -> str:
    return f"#{ord(found.group())};"


def _mermaid_text(text: str) -> str:
    if _MERMAID_ESCAPED.search(text) is None and text.strip(" ") == text:
        return text  # the common name: nothing to escape
    text = _MERMAID_ESCAPED.sub(_mermaid_entity, _drawable(text))
    # Mermaid trims a label's outer spaces: keep them as entities.
    if text.startswith(" ") or text.endswith(" "):
        stripped = text.strip(" ")
        lead = len(text) - len(text.lstrip(" "))
        trail = len(text) - len(text.rstrip(" "))
        if not stripped:
            lead, trail = len(text), 0
        text = "#32;" * lead + stripped + "#32;" * trail
    return text


def _yaml_quoted(text: str) -> str:
    """A double-quoted YAML string on one line, in ASCII (Mermaid shows the title
    as it is, without decoding entities)."""
    # JSON escapes are YAML escapes; controls are already drawn as escapes.
    return json.dumps(_drawable(text))


def to_mermaid(
    title: str,
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> str:
    """A Mermaid ``flowchart`` of the graph; see the module docstring."""
    ids = {name: f"n{i}" for i, name in enumerate(states)}
    lines = ["---", f"title: {_yaml_quoted(title)}", "---", "flowchart TD"]
    for name, state in states.items():
        label = _mermaid_text(name)
        shape = f'("{label}")' if origins.get(name) is not None else f'["{label}"]'
        lines.append(f"    {ids[name]}{shape}:::{state.value}")
    lines.extend(
        f"    {ids[dep]} --> {ids[name]}"
        for name in states
        for dep in dependencies.get(name, ())
        if dep in ids
    )
    for state, (fill, stroke) in COLOURS.items():
        lines.append(f"    classDef {state.value} fill:{fill},stroke:{stroke}")
    return "\n".join(lines) + "\n"


# In a quoted DOT string only a backslash before a quote means something to
# the parser; in a label a backslash starts an escape (``\\N``, ``\\l``) and
# ``&`` an entity, so both are escaped. A newline is a line break (``\\n``).
# Nodes are ``n0``, ``n1``, ... with the name as their label, as in Mermaid:
# no name can merge two stages, read as a keyword or as Graphviz's own
# ``%``-ids.
_DOT_ESCAPES = {
    ord("\n"): "\\n",
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("&"): "&amp;",
}


def _dot_quote(text: str) -> str:
    return '"' + _drawable(text).translate(_DOT_ESCAPES) + '"'


def to_dot(
    title: str,
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> str:
    """A Graphviz DOT digraph of the graph; see the module docstring."""
    ids = {name: f"n{i}" for i, name in enumerate(states)}
    lines = [
        f"digraph {_dot_quote(title)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for name, state in states.items():
        fill, stroke = COLOURS[state]
        style = (
            "rounded,filled,dashed"
            if origins.get(name) is not None
            else "rounded,filled"
        )
        lines.append(
            f'    {ids[name]} [label={_dot_quote(name)}, fillcolor="{fill}", '
            f'color="{stroke}", style="{style}", tooltip="{state.value}"];'
        )
    lines.extend(
        f"    {ids[dep]} -> {ids[name]};"
        for name in states
        for dep in dependencies.get(name, ())
        if dep in ids
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


@renders("mermaid")
def result_mermaid(result: RunResult) -> str:
    """A run's final graph as Mermaid (`RunResult.to_mermaid`)."""
    return to_mermaid(result.name, result.states, result.dependencies, result.origins)


@renders("dot")
def result_dot(result: RunResult) -> str:
    """A run's final graph as DOT (`RunResult.to_dot`)."""
    return to_dot(result.name, result.states, result.dependencies, result.origins)
