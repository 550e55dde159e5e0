"""Hypothesis strategies shared by the property-based tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Stage names drawn from a small alphabet, so that draws often collide with
# existing stages (duplicates, edges between existing stages, cycles).
stage_names = st.sampled_from([f"s{i}" for i in range(12)])


@st.composite
def small_pipelines(
    draw: st.DrawFn, max_stages: int = 4
) -> list[tuple[str, tuple[str, ...]]]:
    """A pipeline as ``[(name, deps)]``, each stage after some earlier ones."""
    count = draw(st.integers(1, max_stages))
    stages: list[tuple[str, tuple[str, ...]]] = []
    for i in range(count):
        earlier = [name for name, _ in stages]
        deps = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2))
            if earlier
            else []
        )
        stages.append((f"p{i}", tuple(deps)))
    return stages


# Any text Python can hold, lone surrogates included (os.listdir() returns
# them for file names that are not UTF-8); non-blank, as names must be.
any_text = st.text(
    st.characters(exclude_categories=()), min_size=1, max_size=24
).filter(lambda text: bool(text.strip()))
# Names and texts an attacker or an odd file system would give: markup and
# Mermaid/DOT syntax, quotes, controls, bidi overrides, lone surrogates
# (``os.listdir`` returns them for file names that are not UTF-8).
HOSTILE_TEXTS = (
    "etl: nightly",
    "[prod] nightly",
    "*nightly",
    "%pct",
    "%%{init: {'theme': 'dark'}}%%",
    "line\nbreak",
    "\n---\n",
    "cr\rreturn",
    'say "hi"',
    "it's",
    "`tick`",
    "```",
    "<script>alert(1)</script>",
    "<!--<script>",
    "</script>",
    "]]>",
    "<![CDATA[x",
    "-->",
    "A --> B",
    "end",
    "subgraph",
    "graph",
    "classDef",
    "click n0 call alert()",
    ":::failed",
    "a;b",
    "a|b",
    "a & b",
    "#quot;",
    "#35;",
    "&amp;",
    "\\",
    "back\\slash\\",
    "\\N\\G\\n",
    "tab\there",
    "\x00nul",
    "\x1b[31mred\x1b]0;title\x07",
    "\x7f\x85\x9b",
    "\u2028sep\u2029",
    "\ufeffbom",
    "\u202eevil",
    "e\u0301",
    "日本語",
    "emoji 😀",
    "\ud800",
    "lone \udfff end",
    "\udcff\udcfe",
    " leading",
    "trailing ",
    "{braces}",
    "((round))",
    "--",
    "---",
    "0",
    "null",
    "digraph",
    "node",
    "<b>html</b>",
    "x" * 300,
)

# Every code point, lone surrogates included.
_any_character = st.characters(exclude_categories=())


def hostile_texts(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    """Hand-picked hostile texts, arbitrary unicode, and mixes of the two."""
    pieces = st.one_of(
        st.sampled_from(HOSTILE_TEXTS),
        st.text(_any_character, min_size=1, max_size=8),
    )
    return st.one_of(
        st.sampled_from(HOSTILE_TEXTS),
        st.text(_any_character, min_size=min_size, max_size=max_size),
        st.lists(pieces, min_size=1, max_size=4).map("".join),
    ).filter(lambda text: min_size <= len(text))


def hostile_stage_names() -> st.SearchStrategy[str]:
    """Hostile texts that a stage may be named (not blank)."""
    return hostile_texts().filter(lambda name: bool(name.strip()))
