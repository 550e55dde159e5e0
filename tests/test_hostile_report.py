"""Hostile outputs and parameters in the HTML report: shown short, as text, inert.

A stage's output is any Python value: huge, deeply nested, a ``__repr__``
that raises or returns markup, lone surrogates. Parameters are plain JSON
data holding any text. The report must stay small, encodable, its script
must run, and what it shows must be text.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from browser import dump_dom, where_drawn
from hypothesis import given
from hypothesis import strategies as st
from strategies import hostile_texts

from dagvisor import Pipeline, runtime, stage
from dagvisor.errors import RunFailed
from dagvisor.supervisor import Journal
from dagvisor.supervisor._report_data import OUTPUT_WIDTH
from dagvisor.supervisor._text import preview


class RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr </script>")


class MarkupRepr:
    def __repr__(self) -> str:
        return "</script><!--<script>\n\x1b[31m \ud800 ]]>"


class NotTextRepr:
    def __repr__(self):
        return 42


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")


def _deep(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_OUTPUTS = [
    "</script><!--<script>",
    "lone \ud800 \udcff",
    "x" * 10_000_000,
    b"\x00</script>" * 1_000_000,
    _deep(100_000),
    list(range(1_000_000)),
    {f"key {i} </script>": i for i in range(10_000)},
    RaisingRepr(),
    MarkupRepr(),
    NotTextRepr(),
    [RaisingEq()],
    10**100_000,
    "\u2028\u2029 line breaks",
]


@stage
async def emit(ctx):
    return HOSTILE_OUTPUTS[ctx.item]


@stage
async def fan(ctx):
    await ctx.expand(
        emit,
        range(len(HOSTILE_OUTPUTS)),
        params=lambda i: {"which </script>": f"\u2028<!--{i}", "i": i},
        reason="every hostile output",
    )


def _graph(page: str) -> tuple[str, dict]:
    found = re.search(
        r'<script id="graph-data" type="application/json">(.*?)</script>',
        page,
        re.DOTALL,
    )
    assert found is not None
    return found.group(1), json.loads(found.group(1))


@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | hostile_texts()
        | st.binary(max_size=50)
        # built, not sampled: Hypothesis would call their repr to describe them
        | st.builds(RaisingRepr)
        | st.builds(MarkupRepr)
        | st.builds(NotTextRepr)
        | st.builds(pow, st.just(10), st.integers(4000, 6000)),
        lambda inner: (
            st.lists(inner, max_size=5)
            | st.tuples(inner, inner)
            | st.dictionaries(hostile_texts(), inner, max_size=4)
        ),
        max_leaves=30,
    ),
    width=st.integers(1, 300),
)
def test_a_preview_of_any_value_is_one_short_line_of_utf8(value, width):
    text = preview(value, width)
    assert isinstance(text, str)
    assert len(text) <= width
    text.encode("utf-8")
    assert not [c for c in text if ord(c) < 32 or 127 <= ord(c) < 160]


async def test_hostile_outputs_and_parameters_are_shown_short_and_inert(tmp_path):
    async with runtime() as rt:
        result = await rt.run(Pipeline("hostile").add(fan))
    assert len(result.outputs) == len(HOSTILE_OUTPUTS) + 1
    page = result.to_html()
    page.encode("utf-8")
    assert len(page.encode()) < 150_000  # not the 10 MB string, not 10**100000
    raw, graph = _graph(page)
    assert not set("<>&\u2028\u2029") & set(raw)
    listed = [s for s in graph["stages"] if s["name"].startswith("emit[")]
    assert len(listed) == len(HOSTILE_OUTPUTS)
    for entry in listed:
        assert len(entry["output"]) <= OUTPUT_WIDTH
        assert len(entry["params"]) <= OUTPUT_WIDTH
        assert "\u2028" in entry["params"]
    outputs = {entry["name"]: entry["output"] for entry in listed}
    assert outputs["emit[0]"] == "'</script><!--<script>'"
    assert outputs["emit[1]"] == "'lone \\ud800 \\udcff'"
    assert outputs["emit[7]"].startswith("<RaisingRepr instance at")
    assert outputs["emit[9]"].startswith("<NotTextRepr instance at")
    assert "repr failed" in outputs["emit[11]"]  # past Python's digit limit
    # In a browser: the script runs, and the group's stages list as text.
    report = tmp_path / "hostile.html"
    report.write_text(page, encoding="utf-8")
    dom, console = dump_dom(report)
    assert console == []
    assert 'data-ready="yes"' in dom
    (group,) = (i for i, box in enumerate(graph["boxes"]) if box["label"] == "emit[…]")
    drawn = where_drawn(
        report,
        "#dag-details tbody td",
        clicks=(f'[data-box="{group}"]',),
        width=1280,
        height=900,
    )
    cells = [cell["shown"] for cell in drawn["found"]]
    assert "'</script><!--<script>'" in cells
    assert "'lone \\ud800 \\udcff'" in cells
    assert any(
        cell.startswith('{"i": 0, "which </script>": "\u2028<!--0"}') for cell in cells
    )


@stage
async def stored(ctx):
    return {"text": "</script><!--<script> ]]>", "rows": list(range(100_000))}


async def test_a_report_read_back_from_a_journal_shows_outputs_short(tmp_path):
    async with runtime(journal=tmp_path / "runs.db") as rt:
        result = await rt.run(
            Pipeline("stored").add(stored.named("s", params={"day": "</script>"}))
        )
    with Journal(tmp_path / "runs.db", readonly=True) as journal:
        page = journal.result(result.run_id).to_html()
    raw, graph = _graph(page)
    assert not set("<>&") & set(raw)
    (entry,) = graph["stages"]
    assert entry["output"] == (
        "{'text': '</script><!--<script> ]]>', 'rows': [0, 1, 2, 3, 4, 5, 6, 7, ...]}"
    )
    assert entry["params"] == '{"day": "</script>"}'
    assert html.escape("</script>") not in raw  # JSON escapes, not HTML's


@stage
async def named_badly(ctx):
    await ctx.add_stage(
        zero.named("\x1b[31mred\x1b]0;title\x07 \ud800\nnext"),
        after=[ctx.name],
        reason="why \x1b[2J\r\n",
    )


@stage
async def zero(ctx):
    return 0


async def test_names_and_reasons_are_one_line_of_text_in_the_graph():
    async with runtime() as rt:
        result = await rt.run(Pipeline("names").add(zero).add(named_badly))
    _raw, graph = _graph(result.to_html())
    texts = [box["label"] for box in graph["boxes"]]
    texts += [value for entry in graph["stages"] for value in entry.values()]
    texts = [text for text in texts if isinstance(text, str)]
    assert "\\x1b[31mred\\x1b]0;title\\x07 \\ud800\\nnext" in texts
    for text in texts:
        text.encode("utf-8")
        assert not [c for c in text if ord(c) < 32 or 127 <= ord(c) < 160], text


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


@stage
async def fails_badly(ctx):
    raise Unprintable


@stage
async def fails_long(ctx):
    raise ValueError("</script>\n\ud800" + "x" * 100_000)


async def test_errors_that_cannot_be_printed_or_are_huge_are_shown_short():
    pipeline = Pipeline("errors").add(fails_badly).add(fails_long)
    async with runtime(on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    _raw, graph = _graph(info.value.result.to_html())
    errors = {entry["name"]: entry["error"] for entry in graph["stages"]}
    assert errors["fails_badly"] == (
        "Unprintable: (the message of this Unprintable cannot be shown)"
    )
    assert "'fails_badly' (Unprintable: (the message" in str(info.value)
    assert errors["fails_long"].startswith("ValueError: </script>\\n\\ud800xxx")
    assert len(errors["fails_long"]) == OUTPUT_WIDTH
