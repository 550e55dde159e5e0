"""Reading runs back from a journal file: the runs, one run whole, one stage by index.

`JournalReads` is the reading half of `Journal`, which inherits it: the
file's connection (`_conn`), path and format are the journal's. Every
method here reads through a `RowReader`, so a file that is damaged or was
edited gives `JournalError` (or `UnknownRunError`), never another error,
and nothing here changes the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagvisor.actors import default_registry

from ._journal_rows import JournaledRun, RowReader, run_id_text

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

    from dagvisor.actors import StageRegistry

    from ._lineage import Lineage
    from ._result import RunResult
    from ._stage_read import StageOutput

__all__ = ["JournalReads"]


def _stage_text(stage: object) -> str:
    """A stage name given to a reading method: text, made a plain ``str``."""
    if not isinstance(stage, str):
        msg = f"a stage name is text (str), not {type(stage).__name__}"
        raise TypeError(msg)
    return str.__str__(stage)


class JournalReads:
    """What a journal reads back (see the module docstring)."""

    __slots__ = ()

    path: Path
    _format: int

    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - the journal's
        raise NotImplementedError

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query; a damaged file is a `JournalError`, not a crash."""
        return self._rows().query(sql, args)

    def _rows(self) -> RowReader:
        return RowReader(self._conn(), self.path, self._format)

    def runs(self) -> list[dict[str, Any]]:
        """Every run in the journal, oldest first, with how many events it has.

        Raises:
            JournalError: the file is damaged or was edited into nonsense.
        """
        return self._rows().runs()

    def find_run(self, prefix: str) -> str:
        """The full id of the run whose id starts with ``prefix`` (at least 4 characters).

        Raises:
            TypeError: the run id is not text (a run id is a ``str``).
            UnknownRunError: no run, or several, match.
            JournalError: the file is damaged.
        """
        return self._rows().find_run(run_id_text(prefix, "run id prefix"))

    def events(self, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """The events of a run as ``(seq, kind, payload)``, in order.

        A success's encoded output is in its payload as ``"output"``.

        Raises:
            TypeError: the run id is not text (a run id is a ``str``).
            JournalError: the file is damaged or was edited into nonsense.
        """
        return self._rows().events(run_id_text(run_id))

    def result(
        self, run_id: str, *, registry: StageRegistry | None = None
    ) -> RunResult:
        """A run read back from the journal, as a `RunResult` (nothing runs).

        Works after the run ended, crashed or was cancelled, in any process:
        stage functions need not be importable. No class is rebuilt: values
        are plain data, and a class value (or every value of a run journaled
        with another codec than `JsonCodec`) comes back as `Undecoded`.
        Stage times are wall-clock. ``result.lineage(stage)`` works as on a
        live run.

        Raises:
            TypeError: the run id is not text (a run id is a ``str``).
            UnknownRunError: the journal has no such run.
            JournalError: the file is damaged or was edited into nonsense.
        """
        from ._readback import result_from_journal

        return result_from_journal(
            self.load(run_id_text(run_id)), registry=registry or default_registry
        )

    def lineage(
        self, run_id: str, stage: str, *, registry: StageRegistry | None = None
    ) -> Lineage:
        """One stage's lineage, read from the journal by its index.

        The same answer as ``result(run_id).lineage(stage)``, in time and
        memory that do not grow with the run: the stage's own events, the
        changes that name it and its dependencies' ends are found through
        the journal's index by stage, written when the run ended. A run
        without that index (not ended, or written before journal format 4),
        or whose index disagrees with the journal, is read whole instead
        (the replay), with the same answer.

        Raises:
            TypeError: the run id or the stage name is not text.
            UnknownRunError: the journal has no such run.
            UnknownStageError: the run never had such a stage.
            JournalError: the file is damaged or was edited into nonsense.
        """
        from ._readback import result_from_journal
        from ._stage_read import read_lineage

        run_id, stage = run_id_text(run_id), _stage_text(stage)
        found = read_lineage(self._rows(), run_id, stage)
        if found is not None:
            return found
        result = result_from_journal(
            self.load(run_id), registry=registry or default_registry, attempts=stage
        )
        return result.lineage(stage)

    def stage_output(self, run_id: str, stage: str) -> StageOutput:
        """One stage's state and output (`StageOutput`), read by the journal's
        index as `lineage` reads it.

        Raises:
            TypeError: the run id or the stage name is not text.
            UnknownRunError: the journal has no such run.
            JournalError: the file is damaged or was edited into nonsense.
        """
        from ._readback import result_from_journal
        from ._stage_read import StageOutput, read_output

        run_id, stage = run_id_text(run_id), _stage_text(stage)
        found = read_output(self._rows(), run_id, stage)
        if found is not None:
            return found
        result = result_from_journal(
            self.load(run_id), registry=default_registry, attempts=False
        )
        state = result.states.get(stage)
        if state is None or stage not in result.outputs:
            return StageOutput(state, stored=False)
        return StageOutput(state, stored=True, value=result.outputs[stage])

    def load(self, run_id: str) -> JournaledRun:
        """Everything the journal holds about one run.

        Raises:
            TypeError: the run id is not text (a run id is a ``str``).
            UnknownRunError: the journal has no such run.
            JournalError: the file is damaged or was edited into nonsense.
        """
        return self._rows().load(run_id_text(run_id))
