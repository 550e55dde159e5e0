"""The journal's index by stage (format 4): which events name a stage, built when a run ends.

Two ordinary tables, filled by SQLite in a few statements (`build_index`)
in a transaction of its own once a run's end is committed, so the run pays
nothing per stage while it goes and does not wait for its index when it
ends (a crash before the index is built leaves a run without one):

* ``stage_index``: one row a run, its anchor: the run's number in the index
  (``run``), the ``seq`` of the run's last event when the index was built
  (``last``), and the numbers of the run's rows in ``stage_rows`` (``first``
  and ``rows``: they are numbered ``first`` to ``first + rows - 1``).
* ``stage_rows``: one row ``(n, run, stage, seq)`` for each event of a
  stage (`STAGE_KINDS`, by the stage its payload names), for each stage a
  change (or signal) names in its ``added``, ``removed``, ``cancelled`` or
  ``edges``, and for each ``resumed`` event (under the name ``""``, which
  no stage can have). ``n`` (the rowid) numbers the run's rows one after
  the other in the order of ``(stage, seq)``, as they were inserted: a
  reader that finds a stage's rows numbered in a row, and the rows just
  before and just after them (by ``(stage, seq)``) numbered to fit, knows
  that none of the stage's rows was deleted, added or moved, without
  counting the run's rows.

A run that has not ended (crashed, or going on) has no index; a resumed run
loses its index when it resumes (`drop_index`) and gets it again when it
ends. A journal of format 3 or older gets the (empty) tables when a runtime
first writes to it: its runs have no index and are read by the replay. The
index is a hint: `_stage_rows` checks every row against the event it names
and the caller reads the run whole (`_replay`) when anything disagrees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "INDEX_SCHEMA",
    "INDEX_TABLES",
    "KINDS_SQL",
    "RESUMES",
    "STAGE_KINDS",
    "add_index",
    "build_index",
    "drop_index",
    "missing_index",
]

STAGE_KINDS: Final = (
    "stage_queued",
    "stage_started",
    "attempt_started",
    "attempt_failed",
    "stage_ended",
)
"""The kinds of event that belong to one stage (their payload's ``stage``)."""

KINDS_SQL: Final = "kind IN (" + ", ".join(f"'{kind}'" for kind in STAGE_KINDS) + ")"

RESUMES: Final = ""
"""The name the run's ``resumed`` events are indexed under (no stage's name)."""

INDEX_SCHEMA: Final = {
    "stage_index": (
        "CREATE TABLE stage_index (run INTEGER PRIMARY KEY, "
        "run_id TEXT NOT NULL UNIQUE, last INTEGER NOT NULL, "
        "first INTEGER NOT NULL, rows INTEGER NOT NULL)"
    ),
    "stage_rows": (
        "CREATE TABLE stage_rows (n INTEGER PRIMARY KEY, run INTEGER NOT NULL, "
        "stage TEXT NOT NULL, seq INTEGER NOT NULL, UNIQUE (run, stage, seq))"
    ),
}
"""The index's tables by name, as ``sqlite_master`` holds their SQL."""

INDEX_TABLES: Final = frozenset(INDEX_SCHEMA)

# A payload that is not JSON text (a row damaged or edited by hand) gives
# NULL, where the JSON functions would make the statement fail (CASE tries
# its branches in order). Three passes over the run's events (a stage's,
# the resumptions, the changes) cost less than one that joins them.
_JSON: Final = (
    "CASE WHEN typeof(payload) <> 'text' THEN NULL "
    "WHEN NOT json_valid(payload) THEN NULL ELSE {} END"
)
_STAGE: Final = _JSON.format("json_extract(payload, '$.stage')")
_NAMED: Final = (
    f"SELECT {_STAGE} AS stage, seq FROM events WHERE run_id = ?1 AND {KINDS_SQL}",
    f"SELECT '{RESUMES}', seq FROM events WHERE run_id = ?1 AND kind = 'resumed'",
    # The four lists of a change, taken from one parse of it (json_valid's,
    # which SQLite keeps for json_extract); a name it gives twice (added,
    # and in an edge) is one row.
    "SELECT DISTINCT t.value, e.seq FROM (SELECT seq, "
    + _JSON.format(
        "json_extract(payload, '$.added', '$.removed', '$.cancelled', '$.edges')"
    )
    + " AS lists FROM events WHERE run_id = ?1 AND kind IN ('change', 'signal')) e, "
    "json_tree(e.lists) t WHERE t.type = 'text'",
)
_BUILD_ROWS: Final = (
    "INSERT OR IGNORE INTO stage_rows (run, stage, seq) SELECT ?2, stage, seq FROM ("
    + " UNION ALL ".join(_NAMED)
    + ") WHERE typeof(stage) = 'text' AND typeof(seq) = 'integer' ORDER BY stage, seq"
)


def missing_index(db: sqlite3.Connection) -> set[str]:
    """The index's tables the file lacks, or holds with another definition."""
    found = {
        str(name): sql
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name IN (?, ?)",
            tuple(INDEX_SCHEMA),
        )
    }
    return {name for name, sql in INDEX_SCHEMA.items() if found.get(name) != sql}


def add_index(db: sqlite3.Connection) -> None:
    """Make the index's tables in a journal that lacks them (inside a write
    transaction); tables whose definition was altered are made again, empty."""
    missing = missing_index(db)
    if missing:  # derived data: both made again, whole (runs read by the replay)
        for name in INDEX_SCHEMA:
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute(INDEX_SCHEMA[name])


def drop_index(db: sqlite3.Connection, run_id: str) -> None:
    """Forget a run's index (it resumes: its events go on)."""
    db.execute(
        "DELETE FROM stage_rows WHERE run IN "
        "(SELECT run FROM stage_index WHERE run_id = ?)",
        (run_id,),
    )
    db.execute("DELETE FROM stage_index WHERE run_id = ?", (run_id,))


def build_index(db: sqlite3.Connection, run_id: str) -> None:
    """Index a run whose end is committed (in the transaction `index_runs` opens)."""
    drop_index(db, run_id)
    run = db.execute(
        "INSERT INTO stage_index (run_id, last, first, rows) "
        "SELECT ?1, coalesce(max(seq), -1), 0, 0 FROM events WHERE run_id = ?1",
        (run_id,),
    ).lastrowid
    # Rows get the rowids after the table's largest, in the order inserted.
    ((first,),) = db.execute("SELECT coalesce(max(n), 0) + 1 FROM stage_rows")
    rows = db.execute(_BUILD_ROWS, (run_id, run)).rowcount
    db.execute(
        "UPDATE stage_index SET first = ?, rows = ? WHERE run = ?", (first, rows, run)
    )
