"""The journal's index by stage (format 4): which events name a stage, built when a run ends.

Two ordinary tables, filled by SQLite in a few statements in the transaction
that writes a run's end (`build_index`), so the run itself pays nothing per
stage while it goes:

* ``stage_index``: one row a run, its anchor: the run's number in the index
  (``run``), the ``seq`` of the run's last event when the index was built
  (``last``) and how many rows the run has in ``stage_rows`` (``rows``).
* ``stage_rows``: one row ``(run, stage, seq, n)`` for each event of a stage
  (`STAGE_KINDS`, by the stage its payload names), for each stage a change
  (or signal) names in its ``added``, ``removed``, ``cancelled`` or
  ``edges``, and for each ``resumed`` event (under the name ``""``, which
  no stage can have). ``n`` numbers the run's rows in the table's order
  (by stage, then ``seq``) from 0: a reader that finds a stage's rows
  numbered one after the other, and the rows just before and just after
  them numbered to fit (the first 0, the last ``rows - 1``), knows that no
  row of the stage was deleted, added or moved, without counting the run.

A run that has not ended (crashed, or going on) has no index; a resumed run
loses its index when it resumes (`drop_index`) and gets it again when it
ends. A journal of format 3 or older gets the (empty) tables when a runtime
first writes to it: its runs have no index and are read by the replay. The
index is a hint: `_stage_read` checks every row against the event it names
and reads the run whole (`_replay`) when anything disagrees.
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
        "run_id TEXT NOT NULL UNIQUE, last INTEGER NOT NULL, rows INTEGER NOT NULL)"
    ),
    "stage_rows": (
        "CREATE TABLE stage_rows (run INTEGER NOT NULL, stage TEXT NOT NULL, "
        "seq INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (run, stage, seq)) "
        "WITHOUT ROWID"
    ),
}
"""The index's tables by name, as ``sqlite_master`` holds their SQL."""

INDEX_TABLES: Final = frozenset(INDEX_SCHEMA)

# One pass over the run's events (materialized, small): the stage an event
# of a stage names, "" for a resumption, a change's JSON; NULL where a row
# damaged or edited by hand is not such JSON (the JSON functions then give
# nothing, where they would make the statement fail; CASE tries in order).
_VALID: Final = (
    "WHEN typeof(payload) <> 'text' THEN NULL WHEN NOT json_valid(payload) THEN NULL "
    "WHEN json_type(payload) <> 'object' THEN NULL"
)
_EVENTS: Final = (
    "WITH e AS MATERIALIZED (SELECT seq, "
    f"CASE WHEN kind = 'resumed' THEN '{RESUMES}' WHEN NOT {KINDS_SQL} THEN NULL "
    f"{_VALID} ELSE json_extract(payload, '$.stage') END AS stage, "
    f"CASE WHEN kind NOT IN ('change', 'signal') THEN NULL {_VALID} "
    "ELSE payload END AS p "
    "FROM events WHERE run_id = ?1 AND typeof(seq) = 'integer')"
)
_NAMED: Final = (
    "SELECT stage, seq FROM e WHERE stage IS NOT NULL",
    *(
        f"SELECT {value}, e.seq FROM e, json_each(e.p, '$.{key}') j "
        f"WHERE e.p IS NOT NULL{where}"
        for value, key, where in (
            ("j.value", "added", ""),
            ("j.value", "removed", ""),
            ("j.value", "cancelled", ""),
            ("json_extract(j.value, '$[0]')", "edges", " AND j.type = 'array'"),
            ("json_extract(j.value, '$[1]')", "edges", " AND j.type = 'array'"),
        )
    ),
)
_BUILD_ROWS: Final = (
    "INSERT INTO stage_rows (run, stage, seq, n) "
    + _EVENTS
    + " SELECT ?2, stage, seq, row_number() OVER (ORDER BY stage, seq) - 1 "
    "FROM (SELECT DISTINCT stage, seq FROM ("
    + " UNION ALL ".join(_NAMED)
    + ") WHERE typeof(stage) = 'text') ORDER BY stage, seq"
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
    """Index a run that ends, in the transaction that writes its end."""
    drop_index(db, run_id)
    run = db.execute(
        "INSERT INTO stage_index (run_id, last, rows) "
        "SELECT ?1, coalesce(max(seq), -1), 0 FROM events WHERE run_id = ?1",
        (run_id,),
    ).lastrowid
    rows = db.execute(_BUILD_ROWS, (run_id, run)).rowcount
    db.execute("UPDATE stage_index SET rows = ? WHERE run = ?", (rows, run))
