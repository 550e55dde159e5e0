"""What the `Journal` reading methods do with arguments that are not run ids.

A run id is text. Anything else (a dict, an int, bytes, None) is a mistake in
the caller's code, not damage in the file: it is a ``TypeError`` saying what
was given, and the file is neither read nor changed. Text that cannot be a
run id (a lone surrogate, a NUL, a huge string) is simply no such run.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import JournalError, UnknownRunError


@stage
async def one(ctx):
    return 1


@pytest.fixture(scope="module")
def journal_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("arguments") / "runs.db"

    async def main():
        async with runtime(journal=path) as rt:
            return (await rt.run(Pipeline("p").add(one))).run_id

    run_id = trio.run(main)
    return path, run_id


NOT_TEXT = [
    {"run_id": "x"},
    42,
    None,
    b"abcd",
    ["abcd"],
    3.5,
    object(),
]


def _methods(journal, bad):
    return [
        lambda: journal.result(bad),
        lambda: journal.load(bad),
        lambda: journal.events(bad),
        lambda: journal.find_run(bad),
    ]


@pytest.mark.parametrize("bad", NOT_TEXT, ids=lambda value: type(value).__name__)
def test_a_run_id_that_is_not_text_is_a_type_error(journal_path, bad):
    path, _ = journal_path
    before = path.read_bytes()
    with Journal(path, readonly=True) as journal:
        for call in _methods(journal, bad):
            with pytest.raises(TypeError, match="run id") as info:
                call()
            assert not isinstance(info.value, JournalError)
            assert type(bad).__name__ in str(info.value)
    assert path.read_bytes() == before


def test_a_str_subclass_is_read_as_its_text(journal_path):
    path, run_id = journal_path

    class Id(str):
        def __eq__(self, other):  # pragma: no cover - must never be called
            raise AssertionError("compared by the caller's __eq__")

        __hash__ = str.__hash__

    with Journal(path, readonly=True) as journal:
        assert journal.result(Id(run_id)).run_id == run_id
        assert type(journal.result(Id(run_id)).run_id) is str


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40) | st.sampled_from(["\ud800", "\x00", "a" * 100_000]))
def test_text_that_names_no_run_is_an_unknown_run(journal_path, text):
    path, run_id = journal_path
    if text == run_id:
        return
    with Journal(path, readonly=True) as journal:
        for call in _methods(journal, text)[:2] + _methods(journal, text)[3:]:
            with pytest.raises(UnknownRunError):
                call()
        assert journal.events(text) == []
