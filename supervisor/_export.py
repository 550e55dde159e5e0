"""Pictures of a run's graph: Mermaid and Graphviz DOT.

States are colours; stages added while the run ran are drawn differently
(rounded in Mermaid, dashed in DOT), so the picture shows how the graph
changed. Pure functions over read-only mappings: they never touch a live run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagvisor.actors import StageState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._audit import AuditRecord

__all__ = ["to_dot", "to_mermaid"]

# Fill and stroke per state, shared by both formats.
COLOURS: dict[StageState, tuple[str, str]] = {
    StageState.PENDING: ("#eeeeee", "#999999"),
    StageState.RUNNING: ("#cce5ff", "#3366cc"),
    StageState.SUCCEEDED: ("#d4f7d4", "#2e8b2e"),
    StageState.FAILED: ("#ffd6d6", "#cc2222"),
    StageState.SKIPPED: ("#f4f4f4", "#bbbbbb"),
    StageState.CANCELLED: ("#fff0cc", "#cc8800"),
    StageState.UPSTREAM_FAILED: ("#ffe8e0", "#dd6644"),
}


def _mermaid_label(name: str) -> str:
    return name.replace('"', "#quot;")


def to_mermaid(
    title: str,
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> str:
    """A Mermaid ``flowchart`` of the graph; see the module docstring."""
    ids = {name: f"n{i}" for i, name in enumerate(states)}
    lines = ["---", f"title: {_mermaid_label(title)}", "---", "flowchart TD"]
    for name, state in states.items():
        label = _mermaid_label(name)
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


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(
    title: str,
    states: Mapping[str, StageState],
    dependencies: Mapping[str, tuple[str, ...]],
    origins: Mapping[str, AuditRecord | None],
) -> str:
    """A Graphviz DOT digraph of the graph; see the module docstring."""
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
            f"    {_dot_quote(name)} [fillcolor={_dot_quote(fill)}, color={_dot_quote(stroke)}, "
            f"style={_dot_quote(style)}, tooltip={_dot_quote(state.value)}];"
        )
    lines.extend(
        f"    {_dot_quote(dep)} -> {_dot_quote(name)};"
        for name in states
        for dep in dependencies.get(name, ())
        if dep in states
    )
    lines.append("}")
    return "\n".join(lines) + "\n"
