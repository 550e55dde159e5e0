"""The journal's index by stage (format 4): which events and changes name a stage.

Two parts, both kept by SQLite itself in the transaction that inserts an
event, with no Python per record on the writer's path:

* ``events_by_stage``: a partial expression index on ``events``, by run and
  ``json_extract(payload, '$.stage')``, over the events of a stage
  (`STAGE_KINDS`); ``events_resumed``, a partial index of the run's
  ``resumed`` events (which cut a stage's attempts).
* ``stage_changes``: one row ``(run_id, stage, seq, prev)`` for each stage a
  ``change`` (or ``signal``) record names in its ``added``, ``removed``,
  ``cancelled`` or ``edges``: what `AuditLog.for_stage` gives. A trigger on
  ``events`` fills it. ``prev`` is the ``seq`` of the stage's row before
  (NULL for its first): a chain a reader checks, so a row deleted from the
  middle is seen.

A journal of format 3 or older gets both when a runtime first writes to it
(`add_index`: the index is built by SQLite, the table filled from the
changes it holds, in one statement). The index is a hint: `_stage_read`
checks every row against the event it names, and reads the run whole
(`_replay`) when the index is missing, altered, or disagrees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "INDEX_OBJECTS",
    "INDEX_SCHEMA",
    "KINDS_SQL",
    "STAGE_KEY",
    "STAGE_KINDS",
    "add_index",
    "missing_index",
]

STAGE_KINDS: Final = (
    "stage_queued",
    "stage_started",
    "attempt_started",
    "attempt_failed",
    "stage_ended",
)
"""The kinds of event the expression index holds."""

KINDS_SQL: Final = "kind IN (" + ", ".join(f"'{kind}'" for kind in STAGE_KINDS) + ")"
"""The index's condition: a query must say it word for word to use the index."""

STAGE_KEY: Final = "json_extract(payload, '$.stage')"

_NAMES: Final = (
    "SELECT DISTINCT value AS name FROM ("
    "SELECT value FROM json_each(new.payload, '$.added') "
    "UNION ALL SELECT value FROM json_each(new.payload, '$.removed') "
    "UNION ALL SELECT value FROM json_each(new.payload, '$.cancelled') "
    "UNION ALL SELECT json_extract(value, '$[0]') FROM json_each(new.payload, '$.edges') "
    "WHERE type = 'array' "
    "UNION ALL SELECT json_extract(value, '$[1]') FROM json_each(new.payload, '$.edges') "
    "WHERE type = 'array') WHERE typeof(value) = 'text'"
)

INDEX_SCHEMA: Final = {
    "events_by_stage": (
        f"CREATE INDEX events_by_stage ON events (run_id, {STAGE_KEY}, seq) "
        f"WHERE {KINDS_SQL}"
    ),
    "events_resumed": (
        "CREATE INDEX events_resumed ON events (run_id, seq) WHERE kind = 'resumed'"
    ),
    "stage_changes": (
        "CREATE TABLE stage_changes (run_id TEXT NOT NULL, stage TEXT NOT NULL, "
        "seq INTEGER NOT NULL, prev INTEGER, PRIMARY KEY (run_id, stage, seq)) "
        "WITHOUT ROWID"
    ),
    "stage_changes_fill": (
        "CREATE TRIGGER stage_changes_fill AFTER INSERT ON events "
        "WHEN new.kind IN ('change', 'signal') BEGIN "
        "INSERT INTO stage_changes (run_id, stage, seq, prev) "
        "SELECT new.run_id, name, new.seq, (SELECT max(s.seq) FROM stage_changes s "
        "WHERE s.run_id = new.run_id AND s.stage = name) "
        f"FROM ({_NAMES}); END"
    ),
}
"""The index's objects by name, as ``sqlite_master`` holds their SQL."""

INDEX_OBJECTS: Final = frozenset(INDEX_SCHEMA)

# Filling the table for the changes a journal already holds: the same rows
# the trigger would have made, in one statement (a window gives each row its
# predecessor).
_SOURCE: Final = (
    "(SELECT run_id, seq, CASE WHEN json_valid(payload) AND json_type(payload) = "
    "'object' THEN payload ELSE '{}' END AS p FROM events WHERE kind IN "
    "('change', 'signal') AND typeof(run_id) = 'text' AND typeof(seq) = 'integer')"
)
_PICK: Final = (
    ("j.value", "'$.added'", ""),
    ("j.value", "'$.removed'", ""),
    ("j.value", "'$.cancelled'", ""),
    ("json_extract(j.value, '$[0]')", "'$.edges'", " AND j.type = 'array'"),
    ("json_extract(j.value, '$[1]')", "'$.edges'", " AND j.type = 'array'"),
)
_BACKFILL: Final = (
    "INSERT INTO stage_changes (run_id, stage, seq, prev) "
    "SELECT run_id, name, seq, lag(seq) OVER (PARTITION BY run_id, name ORDER BY seq) "
    "FROM (SELECT DISTINCT run_id, seq, name FROM ("
    + " UNION ALL ".join(
        f"SELECT e.run_id AS run_id, e.seq AS seq, {value} AS name "
        f"FROM {_SOURCE} e, json_each(e.p, {path}) j WHERE 1{where}"
        for value, path, where in _PICK
    )
    + ") WHERE typeof(name) = 'text')"
)


def missing_index(db: sqlite3.Connection) -> set[str]:
    """The index's objects the file lacks, or holds with another definition."""
    found = {
        str(name): sql
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE name IN (?, ?, ?, ?)",
            tuple(INDEX_SCHEMA),
        )
    }
    return {name for name, sql in INDEX_SCHEMA.items() if found.get(name) != sql}


def add_index(db: sqlite3.Connection) -> None:
    """Make the index in a journal that lacks it, or any part of it (inside a
    write transaction); a part whose definition was altered is made again."""
    missing = missing_index(db)
    if not missing:
        return
    tables = {
        row[0]
        for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    for name in ("stage_changes_fill", "events_by_stage", "events_resumed"):
        if name in missing:
            kind = "TRIGGER" if name == "stage_changes_fill" else "INDEX"
            db.execute(f"DROP {kind} IF EXISTS {name}")
            db.execute(INDEX_SCHEMA[name])
    if "stage_changes" in missing or "stage_changes_fill" in missing:
        # The trigger may not have filled it: fill it again, whole.
        if "stage_changes" in tables:
            db.execute("DROP TABLE stage_changes")
        db.execute(INDEX_SCHEMA["stage_changes"])
        db.execute(_BACKFILL)
