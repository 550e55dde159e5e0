"""A process for the crash tests: runs a self-changing pipeline with a journal,
and kills itself with SIGKILL at a chosen point; or resumes a run, or
recovers the runs whose owner is gone.

Usage:
    python crash_child.py run JOURNAL LOG KILL      (KILL: none, time:S,
        sql:N (the N-th SQL statement of the journal writer), renew:N (right
        after the N-th lease renewal, inside its transaction), change:N
        (while the supervisor applies change N), stage:NAME (inside stage NAME))
    python crash_child.py resume JOURNAL LOG RUN_ID [KILL]   (KILL also
        takeover:insert, inside the takeover transaction once it wrote the
        lease, and takeover:commit, right after it committed)
    python crash_child.py recover JOURNAL LOG

Prints JSON lines: first the run id (``{"run_id": ...}``), or what the
takeover did (``{"took": RUN_ID}``, ``{"refused": ERROR, "message": ...}``,
``{"recovered": [RUN_ID, ...]}``), then the result of the run
(``{"outputs": ..., ...}``) if it ran one. Every stage body appends
``name attempt idempotency_key`` to LOG before it returns. With
``CRASH_GATE=1`` in the environment, stage bodies wait until a line arrives
on stdin before they do anything; ``CRASH_LEASE=SECONDS`` sets the journal's lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from typing import Literal

import trio
from writer_children import writers

from dagvisor import Pipeline, RunResult, runtime, stage
from dagvisor.errors import RunFailed, RunOwnedError
from dagvisor.supervisor import Journal
from dagvisor.supervisor._changes import Changes

N_ITEMS = 12


GATE: dict[str, trio.Event] = {}  # with CRASH_GATE=1: opened by a line on stdin


async def _gate() -> None:
    """Wait until the test opens the gate, if it set one."""
    if "open" in GATE:
        await GATE["open"].wait()


async def _open_gate_on_stdin() -> None:
    await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    GATE["open"].set()


def _side_effect(ctx) -> None:
    with open(ctx.run_inputs["log"], "a") as log:
        log.write(f"{ctx.name} {ctx.attempt} {ctx.idempotency_key}\n")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


KILL = {"at": "none"}  # where this process dies (not the run's recorded inputs)


async def _maybe_die_in(ctx) -> None:
    if KILL["at"] == f"stage:{ctx.name}":
        _die()


JOURNAL = {"path": ""}  # the journal this process writes


def _wait_until_on_disk(path: str, run_id: str) -> None:
    """Return once the journal file holds the run: its first records are durable."""
    while True:
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if db.execute(
                    "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone():
                    return
            finally:
                db.close()
        time.sleep(0.001)  # polling a condition, not ordering by time


@stage
async def source(ctx):
    await _gate()
    # The run's first records reach the disk before its first stage ends.
    await trio.to_thread.run_sync(
        _wait_until_on_disk, JOURNAL["path"], ctx.run_id, abandon_on_cancel=True
    )
    _side_effect(ctx)
    return list(range(N_ITEMS))


@stage
async def fan_out(ctx):
    await _gate()
    names = await ctx.expand(
        square, ctx.inputs["source"], key=str, reason="one per item"
    )
    await ctx.add_stage(total, after=names, reason="sum")
    await _maybe_die_in(ctx)
    _side_effect(ctx)
    return len(names)


@stage
async def square(ctx):
    await _gate()
    await trio.sleep(0.004 * (ctx.item % 5))  # spreads the run for time:S kill points
    if ctx.item % 4 == 0:
        # A check stage, added at run time, that total must also wait for.
        name = await ctx.add_stage(
            check.named(f"check{ctx.item}"),
            after=[ctx.name],
            before=["total"],
            reason=f"item {ctx.item} needs a check",
        )
        assert name == f"check{ctx.item}"
    await _maybe_die_in(ctx)
    _side_effect(ctx)
    return ctx.item * ctx.item


@stage
async def check(ctx):
    await _gate()
    await trio.sleep(0.003)  # spreads the run for time:S kill points
    (value,) = (v for k, v in ctx.inputs.items() if k.startswith("square"))
    await _maybe_die_in(ctx)
    _side_effect(ctx)
    return value % 7


@stage
async def total(ctx):
    await _gate()
    await _maybe_die_in(ctx)
    _side_effect(ctx)
    return sum(ctx.inputs.values())


PIPELINE = Pipeline("crashy").add(source).add(fan_out, after=["source"])


def _die_in_the_writer(kind: str, arg: str) -> None:
    """Die at a statement of the journal writer's transactions.

    ``sql:N``: before the N-th statement. ``renew:N``: right after the N-th
    lease renewal (inside its transaction, uncommitted). ``takeover:insert``:
    right after a resume wrote its lease (inside the takeover transaction);
    ``takeover:commit``: right after that transaction committed.
    """
    opened = Journal._writable
    count = [0]
    taking = [False]

    class Dying:
        def __init__(self, db):
            self._db = db

        def __getattr__(self, name):
            return getattr(self._db, name)

        def execute(self, sql, *args):
            count[0] += 1
            if kind == "sql" and count[0] == int(arg):
                _die()
            result = self._db.execute(sql, *args)
            if kind == "renew" and sql.startswith("UPDATE leases SET expires"):
                RENEWALS[0] += 1
                if RENEWALS[0] == int(arg):
                    _die()
            if kind == "takeover" and sql.startswith("INSERT INTO leases"):
                if arg == "insert":
                    _die()
                taking[0] = True
            if kind == "takeover" and taking[0] and sql == "COMMIT":
                _die()
            return result

        def executemany(self, *args):
            count[0] += 1
            if kind == "sql" and count[0] == int(arg):
                _die()
            return self._db.executemany(*args)

    def writable(self, *, create=True):
        return Dying(opened(self, create=create))

    Journal._writable = writable  # type: ignore[method-assign]


RENEWALS = [0]


def _arm(kill: str) -> None:
    """Make this process die at the chosen point."""
    kind, _, arg = kill.partition(":")
    if kind == "time":
        pass  # armed once the runtime is open (`_arm_timer`)
    elif kind in ("sql", "renew", "takeover"):
        _die_in_the_writer(kind, arg)
    elif kind == "change":
        limit = int(arg)
        record = Changes._record

        def dying_record(self, *args):
            if len(self._core.audit) == limit:
                _die()
            return record(self, *args)

        Changes._record = dying_record  # type: ignore[method-assign]


def _arm_timer(kill: str) -> None:
    """A ``time:SECONDS`` kill counts from when the runtime is open (its journal
    writer's process started), as the reference run's duration does."""
    kind, _, arg = kill.partition(":")
    if kind == "time":
        timer = threading.Timer(float(arg), _die)
        timer.daemon = True
        timer.start()


def _summary(result: RunResult) -> dict[str, object]:
    return {
        "status": result.status,
        "duration": result.stats.duration,
        "outputs": dict(result.outputs),
        "states": {name: state.value for name, state in result.states.items()},
        "dependencies": {
            name: sorted(deps) for name, deps in result.dependencies.items()
        },
        "audit": [
            [
                r.seq,
                r.kind,
                r.requester,
                r.accepted,
                list(r.added),
                sorted(map(list, r.edges)),
            ]
            for r in result.audit
        ],
    }


async def main(argv: list[str]) -> None:
    mode, journal, log = argv[:3]
    JOURNAL["path"] = journal
    lease = float(os.environ.get("CRASH_LEASE", "60"))
    if mode == "run":
        KILL["at"] = argv[3]
    elif mode == "resume":
        KILL["at"] = argv[4] if len(argv) > 4 else "none"
    _arm(KILL["at"])
    async with trio.open_nursery() as nursery:
        if os.environ.get("CRASH_GATE"):
            GATE["open"] = trio.Event()
            nursery.start_soon(_open_gate_on_stdin)
        await _serve(mode, journal, log, lease, argv)
        nursery.cancel_scope.cancel()


async def _serve(
    mode: str, journal: str, log: str, lease: float, argv: list[str]
) -> None:
    # Dying at a statement of the writer needs the writer in this process
    # (a thread); a kill at a moment takes its process with it either way.
    in_process = KILL["at"].partition(":")[0] in ("sql", "renew", "takeover")
    writer: Literal["process", "thread"] = "thread" if in_process else "process"
    async with runtime(journal=Journal(journal, lease=lease, writer=writer)) as rt:
        # Killed, this process leaves its journal writer's process to commit
        # what it was handed and end: the test waits for that (`_settled`).
        pids = json.dumps([child.pid for child in writers()])
        await trio.Path(log + ".writers").write_text(pids)
        _arm_timer(KILL["at"])
        if mode == "run":
            run = await rt.start(PIPELINE, inputs={"log": log})
            print(json.dumps({"run_id": run.id}), flush=True)
        elif mode == "resume":
            try:
                run = await rt.start_resumed(argv[3])
            except RunOwnedError as refused:
                line = {"refused": type(refused).__name__, "message": str(refused)}
                print(json.dumps(line), flush=True)
                return
            print(json.dumps({"took": run.id}), flush=True)
        else:
            recovery = await rt.recover()
            print(json.dumps({"recovered": [r.id for r in recovery.runs]}), flush=True)
            if not recovery.runs:
                return
            (run,) = recovery.runs
        try:
            result = await run.wait()
        except RunFailed as failed:
            result = failed.result
    print(json.dumps(_summary(result)), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
