"""Hostile names and texts through every export: Mermaid, DOT, the HTML report.

Each document is checked by the real consumer: Mermaid 11's own parser in
headless chromium, Graphviz's ``dot``, the report's script in chromium. The
hand-picked hostile texts of ``strategies.HOSTILE_TEXTS`` go through with a
bounded number of Hypothesis draws, batched into one browser launch.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio
from browser import dot_or_none, dump_dom, mermaid_parse
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import HOSTILE_TEXTS, hostile_stage_names, hostile_texts

from dagvisor import Pipeline, runtime, stage
from dagvisor._cli_io import console, one_line
from dagvisor.actors import StageState
from dagvisor.errors import RunFailed
from dagvisor.supervisor import AuditRecord
from dagvisor.supervisor._export import to_dot, to_mermaid

if TYPE_CHECKING:
    from pathlib import Path

STATES = list(StageState)


def _shown(text: str) -> str:
    """How an export shows a text: lone surrogates as their escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _record(added: tuple[str, ...]) -> AuditRecord:
    return AuditRecord(
        seq=0,
        run_id="r",
        kind="add_stage",
        requester="x",
        reason="y",
        accepted=True,
        version_before=0,
        version_after=1,
        wall_time=0.0,
        monotonic_time=0.0,
        added=added,
    )


def _graph(
    names: list[str],
) -> tuple[dict[str, StageState], dict[str, tuple[str, ...]], dict[str, object]]:
    """A chain over ``names`` (distinct), every other stage added at run time."""
    states = {name: STATES[i % len(STATES)] for i, name in enumerate(names)}
    dependencies = {name: (names[i - 1],) if i else () for i, name in enumerate(names)}
    origins: dict[str, object] = {
        name: _record((name,)) if i % 2 else None for i, name in enumerate(names)
    }
    return states, dependencies, origins


def _drawn(strategy: st.SearchStrategy[str], count: int) -> list[str]:
    """``count`` Hypothesis draws (at most), collected to be checked in one batch."""
    found: list[str] = []

    @settings(max_examples=count, database=None)
    @given(strategy)
    def collect(value: str) -> None:
        found.append(value)

    collect()
    return found


def _documents(titles: list[str], stage_sets: list[list[str]], export) -> list[str]:
    documents = []
    for title, names in zip(titles, stage_sets, strict=True):
        states, dependencies, origins = _graph(names)
        documents.append(export(title, states, dependencies, origins))
    return documents


def _cases() -> tuple[list[str], list[list[str]]]:
    """Titles and stage names: each hostile text alone, all of them together,
    and Hypothesis draws."""
    titles = list(HOSTILE_TEXTS)
    stage_sets = [[text, f"{text}!"] for text in HOSTILE_TEXTS]
    titles.append("all of them")
    stage_sets.append(list(dict.fromkeys(HOSTILE_TEXTS)))
    drawn = _drawn(
        st.tuples(
            hostile_texts(),
            st.lists(hostile_texts(), min_size=1, max_size=6, unique=True),
        ),
        80,
    )
    for title, names in drawn:
        titles.append(title)
        stage_sets.append(names)
    return titles, stage_sets


# -- Mermaid ---------------------------------------------------------------------


def test_every_mermaid_document_is_plain_utf8_without_raw_syntax():
    titles, stage_sets = _cases()
    for document in _documents(titles, stage_sets, to_mermaid):
        document.encode("utf-8")  # no lone surrogate left
        head, _, _ = document.partition("flowchart TD\n")
        # The front matter holds one line: a quoted title.
        assert re.fullmatch(r'---\ntitle: "([^"\\\n]|\\.)*"\n---\n', head), head
        for line in document.splitlines()[4:]:
            assert line.isprintable(), repr(line)


def test_mermaid_11_parses_and_draws_every_name(tmp_path: Path):
    titles, stage_sets = _cases()
    documents = _documents(titles, stage_sets, to_mermaid)
    results = mermaid_parse(documents, tmp_path, render=True)
    failures = []
    for title, names, result in zip(titles, stage_sets, results, strict=True):
        if not result["ok"]:
            failures.append((title, names, result["error"]))
            continue
        # Drawn as given: the texts, not their escapes or markup.
        labels = sorted(_drawn_text(n) for n in names)
        if sorted(result["labels"]) != labels:
            failures.append((title, labels, result["labels"]))
        # Mermaid passes a title through its HTML sanitiser before drawing it
        # as text, so only a title without markup characters is drawn as given.
        if not set("<>&") & set(title) and result["title"] != _drawn_text(title):
            failures.append((title, _drawn_text(title), result["title"]))
    for failure in failures:
        print(repr(failure))
    assert failures == []


def _drawn_text(text: str) -> str:
    """How the exports draw a text: lone surrogates and controls other than
    tab and newline as their escapes."""
    return "".join(
        c
        if c in "\n\t" or not (ord(c) < 32 or 127 <= ord(c) < 160)
        else f"\\x{ord(c):02x}"
        for c in _shown(text)
    )


# -- DOT -------------------------------------------------------------------------


def _dot_strings(document: str) -> list[str]:
    """The quoted strings of a DOT document, as Graphviz's lexer reads them."""
    strings = []
    i = 0
    while (start := document.find('"', i)) >= 0:
        j = start + 1
        chars = []
        while document[j] != '"':
            if document[j] == "\\":  # a pair: only \" and \<newline> mean something
                pair = document[j : j + 2]
                chars.append({'\\"': '"', "\\\n": ""}.get(pair, pair))
                j += 2
                continue
            chars.append(document[j])
            j += 1
        strings.append("".join(chars))
        i = j + 1
    return strings


def _dot_drawn(label: str) -> str:
    """What Graphviz draws for a label: ``\\n`` a line break, ``\\\\`` a
    backslash, entities decoded."""
    text = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label)
    return html.unescape(text)


def test_dot_labels_draw_every_name_and_ids_stay_apart():
    titles, stage_sets = _cases()
    for title, names, document in zip(
        titles, stage_sets, _documents(titles, stage_sets, to_dot), strict=True
    ):
        document.encode("utf-8")
        assert "\x00" not in document
        strings = _dot_strings(document)
        assert _dot_drawn(strings[0]) == _drawn_text(title)  # the graph's id
        labels = re.findall(r"^    (n\d+) \[label=", document, re.MULTILINE)
        assert labels == [f"n{i}" for i in range(len(names))]  # one id per stage
        drawn = [
            _dot_drawn(s)
            for s in _dot_strings(
                "\n".join(re.findall(r"label=(\"(?:[^\"\\]|\\.)*\")", document))
            )
        ]
        assert drawn == [_drawn_text(name) for name in names]


def test_graphviz_draws_every_dot_document(tmp_path: Path):
    dot = dot_or_none()
    if dot is None:
        pytest.skip(
            "Graphviz's dot is not installed (`make test` installs Debian's "
            "graphviz when it can); the quoting rules are checked without it"
        )
    titles, stage_sets = _cases()
    documents = _documents(titles, stage_sets, to_dot)
    failures = []
    for title, names, document in zip(titles, stage_sets, documents, strict=True):
        done = subprocess.run(
            [dot, "-Tsvg"],
            input=document.encode("utf-8"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (title, names, done.stderr)
        assert done.stderr == b"", (title, names, done.stderr)
        svg = done.stdout.decode("utf-8")
        nodes = re.findall(r'<g id="node\d+" class="node">(.*?)</g>', svg, re.DOTALL)
        edges = re.findall(r'<g id="edge\d+" class="edge">\s*<title>(.*?)</title>', svg)
        assert len(nodes) == len(names), names
        # Each edge joins the two stages it was drawn for.
        assert sorted(html.unescape(e) for e in edges) == sorted(
            f"n{i - 1}&#45;&gt;n{i}".replace("&#45;", "-").replace("&gt;", ">")
            for i in range(1, len(names))
        )
        # Each node shows its name (Graphviz leaves out empty lines).
        for name, node in zip(names, nodes, strict=True):
            lines = [
                html.unescape(text)
                for text in re.findall(r"<text[^>]*>(.*?)</text>", node, re.DOTALL)
            ]
            expected = [line for line in _drawn_text(name).split("\n") if line.strip()]
            # SVG keeps a run of spaces as space and no-break space.
            drawn = [line.replace("\xa0", " ") for line in lines if line.strip()]
            if drawn != [line.replace("\xa0", " ") for line in expected]:
                failures.append((name, lines))
    assert failures == []


# -- the HTML report ---------------------------------------------------------------

REPORT_NAMES = (
    "<!--<script>",
    "</script>",
    "]]>",
    "<b>bold</b>",
    "a & b",
    "x\u2028y\u2029",
    "lone \ud800",
    "\udcff tail",
    'q"uote',
)


@stage
async def hostile_plan(ctx):
    for i, name in enumerate(REPORT_NAMES):
        await ctx.add_stage(
            hostile_leaf.named(name),
            after=["hostile_plan"],
            reason=f"reason {i}: {name} <!--<script> ]]> \ud800",
        )


@stage
async def hostile_leaf(ctx):
    if ctx.name == "</script>":
        raise ValueError("bad </script><!--<script> ]]> \ud800 value")
    return f"output {ctx.name}"


async def _hostile_result(journal=None):
    pipeline = Pipeline("<!--<script> \ud800 ]]>").add(hostile_plan)
    async with runtime(on_failure="continue", journal=journal) as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    return info.value.result


async def test_the_report_of_hostile_names_is_utf8_and_its_data_is_inert():
    page = (await _hostile_result()).to_html()
    page.encode("utf-8")
    data = re.search(
        r'<script id="summary-data" type="application/json">(.*?)</script>',
        page,
        re.DOTALL,
    )
    assert data is not None
    assert not set("<>&\u2028\u2029") & set(data.group(1))
    assert json.loads(data.group(1))["name"] == "<!--<script> \ud800 ]]>"
    # Markup never reaches the page as markup.
    assert "<!--<script>" not in page
    assert "<b>bold</b>" not in page


async def test_the_report_of_hostile_names_runs_its_script_in_a_browser(tmp_path):
    page = (await _hostile_result()).to_html()
    report = tmp_path / "hostile.html"
    report.write_text(page, encoding="utf-8")
    dom, console = dump_dom(report)
    assert 'data-ready="yes"' in dom  # the script ran to its end
    assert "data-errors" not in dom
    assert console == []
    # The names are shown as text.
    heading = re.search(r"<h1>(.*?)</h1>", dom, re.DOTALL)
    assert heading is not None
    assert html.unescape(heading.group(1)).startswith("Run <!--<script> \\ud800 ]]>")
    shown = html.unescape(dom)
    for name in REPORT_NAMES:
        assert _shown(name) in shown, name
    assert "bad </script><!--<script> ]]> \\ud800 value" in shown


@stage
async def hostile_named(ctx):
    if ctx.run_inputs["fail"] == ctx.name:
        raise RuntimeError(ctx.run_inputs["message"])
    return ctx.run_inputs["message"]


@stage
async def hostile_grower(ctx):
    await ctx.add_stage(
        hostile_named.named(ctx.run_inputs["added"]),
        after=[ctx.name],
        reason=ctx.run_inputs["message"],
    )


@settings(max_examples=25)
@given(
    title=hostile_texts().filter(lambda text: bool(text.strip())),
    names=st.lists(hostile_stage_names(), min_size=2, max_size=4, unique=True),
    # The message is also the change's reason, which must not be blank.
    message=hostile_texts().filter(lambda text: bool(text.strip())),
)
def test_a_live_run_exports_whatever_its_names_and_texts(title, names, message):
    assume("grower" not in names)
    *declared, added = names
    pipeline = Pipeline(title).add(hostile_grower.named("grower"))
    for name in declared:
        pipeline = pipeline.add(hostile_named.named(name), after=["grower"])
    inputs = {"fail": declared[0], "message": message, "added": added}

    async def main():
        async with runtime(on_failure="continue") as rt:
            with pytest.raises(RunFailed) as info:
                await rt.run(pipeline, inputs=inputs)
        return info.value.result

    result = trio.run(main)
    assert result.audit[0].reason == message
    assert result.states[declared[0]] is StageState.FAILED
    for text in (result.to_html(), result.to_mermaid(), result.to_dot()):
        text.encode("utf-8")
    page = result.to_html()
    data = re.search(
        r'<script id="summary-data" type="application/json">(.*?)</script>',
        page,
        re.DOTALL,
    )
    assert data is not None
    assert not set("<>&") & set(data.group(1))
    assert json.loads(data.group(1))["name"] == title
    assert f"<h1>Run {html.escape(_shown(title))} <small>" in page


# -- the command line on a journal holding hostile text ----------------------------

HOSTILE = "lone \ud800 \x1b[31mred\x1b]0;owned\x07 \udcff\nnext line"


@stage
async def hostile_source(ctx):
    return {"text": HOSTILE}


@stage
async def hostile_fail(ctx):
    raise ValueError(HOSTILE)


@stage
async def hostile_legacy(ctx):
    raise AssertionError("removed before it runs")


@stage
async def hostile_changes(ctx):
    await ctx.add_stage(
        hostile_source.named(f"added {HOSTILE}"),
        after=["hostile_changes"],
        reason=f"why {HOSTILE}",
    )
    await ctx.remove_stage("legacy", reason=f"retired {HOSTILE}")
    # A name a shell can type: bytes that are not UTF-8 (os.fsencode's form).
    await ctx.add_stage(
        hostile_source.named("bytes \udcff"), after=["hostile_changes"], reason="x"
    )


async def _hostile_journal(path):
    pipeline = (
        Pipeline("hostile")
        .add(hostile_source.named(f"src {HOSTILE}"))
        .add(hostile_fail)
        .add(hostile_changes)
        .add(hostile_legacy.named("legacy"), after=["hostile_changes"])
    )
    async with runtime(journal=path, on_failure="continue") as rt:
        with pytest.raises(RunFailed) as info:
            await rt.run(pipeline)
    return info.value.result.run_id


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagvisor", *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


ENCODINGS = [
    pytest.param({}, id="default"),
    pytest.param({"PYTHONIOENCODING": "ascii"}, id="ascii"),
    pytest.param({"PYTHONIOENCODING": "latin-1:strict"}, id="latin-1-strict"),
    pytest.param(
        {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
        id="C-locale",
    ),
]


@pytest.mark.parametrize("env", ENCODINGS)
async def test_reading_commands_print_hostile_text_as_escapes(tmp_path, env):
    journal = tmp_path / "runs.db"
    run_id = await _hostile_journal(journal)
    before = journal.read_bytes()
    for args in (
        ("runs",),
        ("show", run_id, "--tracebacks"),
        ("audit", run_id),
        ("audit", run_id, "--stage", "legacy"),
        ("lineage", run_id, "legacy"),
        ("lineage", run_id, "bytes \udcff"),
        ("graph", run_id),
        ("graph", run_id, "--format", "dot"),
    ):
        done = _cli(*args, "--journal", str(journal), env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == b"", args
        out = done.stdout
        # Nothing reaches the terminal as a control sequence.
        assert b"\x1b" not in out, args
        assert b"\x07" not in out, args
        if env:
            out.decode("ascii" if "latin" not in str(env) else "latin-1")
        else:
            out.decode("utf-8")
        text = out.decode("utf-8", "replace")
        if args[0] in ("show", "audit", "lineage"):
            # A name or reason holding a line break stays on its line.
            assert "\nnext line" not in text, args
            assert "\\ud" in text, args
    show = _cli("show", run_id, "--journal", str(journal), env=env).stdout.decode()
    assert "hostile_fail: ValueError: lone \\ud800 \\x1b[31mred" in show
    audit = _cli(
        "audit", run_id, "--stage", "legacy", "--journal", str(journal), env=env
    ).stdout.decode()
    assert (
        "remove_stage by hostile_changes: removed legacy - retired lone \\ud800"
        in audit
    )
    lineage = _cli("lineage", run_id, "legacy", "--journal", str(journal), env=env)
    assert "removed by change #1 (remove_stage)" in lineage.stdout.decode()
    assert journal.read_bytes() == before  # reading changes nothing


async def test_report_and_graph_files_are_whole_utf8(tmp_path):
    journal = tmp_path / "runs.db"
    run_id = await _hostile_journal(journal)
    report = tmp_path / "report.html"
    graph = tmp_path / "graph.dot"
    for args, path in (
        (("report", run_id, "-o", str(report)), report),
        (("graph", run_id, "--format", "dot", "-o", str(graph)), graph),
    ):
        done = _cli(*args, "--journal", str(journal), env={"PYTHONIOENCODING": "ascii"})
        assert done.returncode == 0, done.stderr
        assert done.stderr == b""
        text = path.read_bytes().decode("utf-8")  # whole, and valid UTF-8
        assert "ud800" in text
    assert report.read_text(encoding="utf-8").rstrip().endswith("</html>")
    assert graph.read_text(encoding="utf-8").rstrip().endswith("}")
    dom, console = dump_dom(report)
    assert 'data-ready="yes"' in dom
    assert console == []


async def test_a_pipeline_name_with_a_lone_surrogate_reads_back_and_prints(tmp_path):
    journal = tmp_path / "runs.db"
    async with runtime(journal=journal) as rt:
        result = await rt.run(Pipeline(f"name {HOSTILE}").add(hostile_source))
    for args in (("runs",), ("show", result.run_id), ("graph", result.run_id)):
        done = _cli(*args, "--journal", str(journal), env={"PYTHONIOENCODING": "ascii"})
        assert done.returncode == 0, done.stderr
        assert (
            b"name lone \\ud800" in done.stdout or b"name lone \\\\ud800" in done.stdout
        )


@settings(max_examples=200)
@given(
    text=hostile_texts(max_size=60),
    encoding=st.sampled_from(["ascii", "latin-1", "utf-8"]),
)
def test_the_console_prints_any_text_as_escapes_on_its_own_lines(text, encoding):
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="\n")
    saved = sys.stdout
    sys.stdout = stream
    try:
        with console() as output:
            print(text)
            print(one_line(text))
    finally:
        sys.stdout = saved
    assert output.error is None
    assert stream.errors == "strict"  # the stream is given back as it was
    data = raw.getvalue()
    shown = data.decode(encoding)  # what the encoding lacks became an escape
    # No control character reaches the terminal but newline and tab.
    assert not [
        c for c in shown if c not in "\n\t" and (ord(c) < 32 or 127 <= ord(c) < 160)
    ]
    # one_line keeps the text on one line.
    assert data.endswith(
        one_line(text).encode(encoding, "backslashreplace").replace(b"\n", b"") + b"\n"
    )
    assert data.count(b"\n") == text.count("\n") + 2
