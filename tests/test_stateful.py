"""The live runtime against a reference model, driven by Hypothesis.

How trio is driven from Hypothesis rules: each state machine instance runs
one trio loop in a background thread (``trio.run`` with a `MockClock` that
only moves when a rule jumps it) and keeps its token. Every rule calls into
the loop with ``trio.from_thread.run``; the async function it runs performs
one action and then waits with ``wait_all_tasks_blocked()`` until every task
of the runtime is blocked, so the runtime has settled when the rule returns
and the invariants can compare it with the model. Stages block on command
channels that the machine controls, so the machine decides when each stage
succeeds, fails, or asks for a change from inside.

The model is deliberately simple: a dict of states and ordered dependency
lists, settled by plain loops, predicting each request's outcome in the
supervisor's validation order. Concurrent requests are applied to the model
in the order the audit trail says the supervisor applied them.

Failure injection, by the prefix of a stage's name: ``bad`` (an interceptor
raises before it starts), ``t`` (a 10 s timeout, reached by jumping the
clock), ``slow`` (its resource's ``__aenter__`` never finishes: it can only
be cancelled there), ``stub`` (its resource's cleanup is shielded and takes
5 s of virtual time).

Limited stages: ``q`` holds the named limit ``"q"`` of size one. It is
``queued`` until it has the limit, then ``running``. Which of several queued
stages gets it is trio's to decide, so the model marks them queued and, once
the runtime has settled, adopts the one the run shows running (`Model.adopt`):
exactly one may run, and only one the model had queued.

Thread stages: ``w`` is a plain function in a worker thread, ``wt`` one
with a 10 s timeout. The thread blocks on a queue the machine controls
(``finish_thread``), so a cancellation (``cancel_stage``, or the run
stopping) or a timeout (the machine jumps the clock while the thread is
blocked) cannot interrupt it: the model predicts the outcome decided when
the function returns (cancelled, else failed by its timeout, else what the
machine told it). The clock never jumps by itself (no autojump), so a
thread's real run time never moves virtual time; after releasing a thread
the machine waits, in real time, until its stage has ended.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import outcome
import trio
import trio.lowlevel
import trio.testing
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from strategies import small_pipelines

from dagvisor import Journal, JsonCodec, Pipeline, StageState, runtime, stage
from dagvisor.errors import (
    CycleError,
    DuplicateStageError,
    RunClosedError,
    StageStateError,
    UnknownStageError,
)
from dagvisor.supervisor._writer import JournalWriter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

TERMINAL = {"succeeded", "failed", "skipped", "cancelled", "upstream_failed"}
BLOCKED = {
    "failed": "upstream_failed",
    "upstream_failed": "upstream_failed",
    "cancelled": "cancelled",
    "skipped": "skipped",
}
CATEGORIES = ("s", "s", "s", "t", "bad", "slow", "stub", "w", "wt", "q")
HANDOVER = "<handover>"  # the limit passes to one of the queued ``q`` stages
TIMEOUT = 10.0
CLEANUP = 5.0


class Boom(Exception):
    """A stage failing on the machine's command."""


# -- the stage every test stage runs -----------------------------------------------


class Controller:
    """Lets the machine drive running stages and counts their resources."""

    def __init__(self) -> None:
        self.inboxes: dict[str, trio.MemorySendChannel[Any]] = {}
        self.open_resources = 0
        self._gates: dict[str, queue.Queue[bool]] = {}
        self._gates_lock = threading.Lock()
        self._released = False

    def gate(self, name: str) -> queue.Queue[bool]:
        """What the thread of stage ``name`` waits on (made by whoever comes first)."""
        with self._gates_lock:
            gate = self._gates.get(name)
            if gate is None:
                gate = self._gates[name] = queue.Queue()
                if self._released:
                    gate.put(True)
            return gate

    def release_all(self) -> None:
        """Let every thread stage, now or later, return (the machine is closing)."""
        with self._gates_lock:
            self._released = True
            for gate in self._gates.values():
                gate.put(True)

    @asynccontextmanager
    async def resource(self, name: str):  # type: ignore[no-untyped-def]
        self.open_resources += 1
        try:
            if name.startswith("slow"):
                await trio.sleep_forever()  # cancelled here: inside __aenter__
            yield
        finally:
            if name.startswith("stub"):
                with trio.CancelScope(shield=True):
                    await trio.sleep(_delay(name, CLEANUP))
            self.open_resources -= 1


def _delay(name: str, base: float) -> float:
    # Distinct virtual times per stage, so that no two events coincide.
    return base + (sum(map(ord, name)) % 997) * 1e-3


async def controlled(ctx: Any) -> str:
    controller: Controller = ctx.run_inputs["controller"]
    send, receive = trio.open_memory_channel[Any](16)
    try:
        await ctx.enter(controller.resource(ctx.name))
        controller.inboxes[ctx.name] = send  # only now can it take commands
        async for command in receive:
            kind, payload = command
            if kind == "finish":
                if payload:
                    return str(ctx.name)
                raise Boom(ctx.name)
            action, results = payload
            results.append(await outcome.acapture(action, ctx))
        raise AssertionError("unreachable: the machine never closes an inbox")
    finally:
        controller.inboxes.pop(ctx.name, None)


def threaded(ctx: Any) -> str:
    """A thread stage: returns or fails when the machine says (it cannot be interrupted)."""
    controller: Controller = ctx.run_inputs["controller"]
    if controller.gate(ctx.name).get(timeout=60):  # a guard against a hang
        return str(ctx.name)
    raise Boom(ctx.name)


def spec_for(name: str):  # type: ignore[no-untyped-def]
    if name.startswith("q"):
        return stage(name=name, limit="q")(controlled)
    if name.startswith("w"):
        timeout = _delay(name, TIMEOUT) if name.startswith("wt") else None
        return stage(name=name, executor="thread", timeout=timeout)(threaded)
    timeout = _delay(name, TIMEOUT) if name.startswith("t") else None
    return stage(name=name, timeout=timeout)(controlled)


class Picky:
    """An interceptor that refuses stages whose name starts with 'bad'."""

    name = "picky"

    async def before_stage(self, ctx: Any) -> None:
        if ctx.name.startswith("bad"):
            raise PermissionError(ctx.name)


# -- the trio loop in a thread ---------------------------------------------------------


class MachineCodec:
    """JSON, with the run's controller (an object, not data) as a placeholder.

    Every run of the machine is journaled, and the journal is read back at
    the end of each example and compared with the live run.
    """

    name = "machine"

    def __init__(self) -> None:
        self._json = JsonCodec()

    def encode(self, value: Any, *, allow: Collection[type] = ()) -> str:
        if isinstance(value, dict) and "controller" in value:
            value = {**value, "controller": "<controller>"}
        return self._json.encode(value, allow=allow)

    def decode(self, text: str, *, allow: Collection[type] = ()) -> Any:
        return self._json.decode(text, allow=allow)


async def _blocking_on_the_loop(
    self: JournalWriter, fn: Callable[..., Any], *args: Any
) -> Any:
    result = fn(*args)
    await trio.lowlevel.checkpoint()
    return result


class Loop:
    """A trio loop with a journaled runtime, in a background thread."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self.controller = Controller()
        self.directory = tempfile.mkdtemp(prefix="dagvisor-machine-")
        self.journal = Path(self.directory) / "runs.db"
        self._errors: list[BaseException] = []
        handoff: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(
            target=self._thread_main, args=(handoff,), daemon=True
        )
        self._thread.start()
        self.token, self.rt, self._scope, self.host = handoff.get(timeout=30)

    def _thread_main(self, handoff: queue.Queue[Any]) -> None:
        try:
            trio.run(self._main, handoff, clock=self.clock)
        except BaseException as exc:  # reported by close()
            self._errors.append(exc)
            handoff.put((None, None, None, None))

    async def _main(self, handoff: queue.Queue[Any]) -> None:
        # pytest-trio seeds trio's scheduler per Hypothesis example, so an
        # example replays the same way; a journal writer committing in a
        # worker thread or process would wake at real-time moments and break
        # that. Here the writer commits on the loop (briefly blocking it: fine
        # in a test).
        threaded = JournalWriter._blocking
        JournalWriter._blocking = _blocking_on_the_loop  # type: ignore[method-assign]
        try:
            await self._serve(handoff)
        finally:
            JournalWriter._blocking = threaded  # type: ignore[method-assign]

    async def _serve(self, handoff: queue.Queue[Any]) -> None:
        with trio.CancelScope() as scope:
            async with runtime(
                interceptors=[Picky()],
                cleanup_timeout=1000,
                thread_limit=1000,  # a blocked thread stage never waits for a thread
                limits={"q": 1},
                # A thread worker, which the seam above runs on the loop.
                journal=Journal(self.journal, writer="thread"),
                codec=MachineCodec(),
            ) as rt:
                handoff.put(
                    (
                        trio.lowlevel.current_trio_token(),
                        rt,
                        scope,
                        trio.lowlevel.current_task(),
                    )
                )
                await trio.sleep_forever()

    def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        async def settled() -> Any:
            result = await fn()
            await trio.testing.wait_all_tasks_blocked()
            # Let the journal writer commit what was queued (a run ends only
            # once its records are on disk).
            await self.rt._journal.flush()
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(settled, trio_token=self.token)

    def close(self) -> None:
        self.controller.release_all()  # a blocked thread would keep trio.run alive
        if self.token is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self.token)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._errors:
            raise self._errors[0]


# -- the model ------------------------------------------------------------------------


class Model:
    """What the live graph must be, computed naively."""

    def __init__(self, policy: str, clock: float) -> None:
        self.policy = policy
        self.state: dict[str, str] = {}
        self.deps: dict[str, list[str]] = {}
        # How each stage was added: (requester, spec name, item); None for
        # the pipeline's own. Mapped stages also have a key.
        self.origin: dict[str, tuple[str, str, int | None] | None] = {}
        self.keys: dict[str, str] = {}
        self.version = 0
        self.records = 0
        self.stopping = False
        self.ended = False
        self.clock = clock
        self.timers: dict[str, tuple[float, str]] = {}  # name -> (when, state then)
        self.finishing: set[str] = set()  # commanded to end or cancelled, not yet ended
        # Running thread stages: cancelled? timed out? (decided when released)
        self.threads: dict[str, dict[str, bool]] = {}
        self.thread_deadlines: dict[str, float] = {}
        # The ``q`` stage holding the limit, HANDOVER while one of the queued
        # ones is getting it, or None.
        self.holder: str | None = None

    # settling -----------------------------------------------------------------

    def running(self) -> list[str]:
        return [n for n, s in self.state.items() if s == "running"]

    def queued(self) -> list[str]:
        return [n for n, s in self.state.items() if s == "queued"]

    def adopt(self, live: dict[str, str]) -> None:
        """The runtime has settled: the queued ``q`` stage it let run holds the limit."""
        if self.holder != HANDOVER:
            return
        queued = self.queued()
        if not queued:
            self.holder = None
            return
        winners = [n for n in queued if live.get(n) == "running"]
        assert len(winners) == 1, (queued, {n: live.get(n) for n in queued})
        self.holder = winners[0]
        self.state[winners[0]] = "running"
        many = "3 or more" if len(queued) >= 3 else str(len(queued))
        event(f"the limit went to one of {many} queued stages")

    def _finish(self, name: str, state: str) -> None:
        was = self.state[name]
        self.state[name] = state
        if name == self.holder or (was == "queued" and self.holder == HANDOVER):
            self.holder = HANDOVER if self.queued() else None
        self.timers.pop(name, None)
        self.finishing.discard(name)
        self.threads.pop(name, None)
        self.thread_deadlines.pop(name, None)
        work = [name]
        while work:
            parent = work.pop()
            for child, deps in self.deps.items():
                if (
                    self.state[child] == "pending"
                    and parent in deps
                    and self.state[parent] != "succeeded"
                ):
                    self.state[child] = BLOCKED[self.state[parent]]
                    work.append(child)
        if state == "succeeded":
            self._start_ready()
        if state == "failed" and self.policy == "cancel":
            self._stop()
        self._maybe_end()

    def _start_ready(self) -> None:
        if self.stopping:
            return
        for name in list(self.state):
            if self.state[name] == "pending" and all(
                self.state[d] == "succeeded" for d in self.deps[name]
            ):
                self._start(name)

    def _start(self, name: str) -> None:
        if name.startswith("q"):  # waits for the limit; `adopt` says who has it
            self.state[name] = "queued"
            if self.holder is None:
                self.holder = HANDOVER
            return
        self.state[name] = "running"
        if name.startswith("bad"):
            self._finish(name, "failed")
        elif name.startswith("t"):
            self.timers[name] = (self.clock + _delay(name, TIMEOUT), "failed")
        elif name.startswith("w"):
            self.threads[name] = {"cancelled": False, "timed_out": False}
            if name.startswith("wt"):
                self.thread_deadlines[name] = self.clock + _delay(name, TIMEOUT)

    def thread_returns(self, name: str, ok: bool) -> None:
        """The thread of stage ``name`` returned (or raised): its outcome is decided now."""
        thread = self.threads[name]
        if thread["cancelled"]:
            self._finish(name, "cancelled")
        elif thread["timed_out"]:
            self._finish(name, "failed")  # StageTimeoutError; its value is dropped
        else:
            self._finish(name, "succeeded" if ok else "failed")

    def _settle_new(self, name: str) -> None:
        if self.state[name] != "pending":
            return
        for dep in self.deps[name]:
            if self.state[dep] in TERMINAL and self.state[dep] != "succeeded":
                self._finish(name, BLOCKED[self.state[dep]])
                return
        if (
            all(self.state[d] == "succeeded" for d in self.deps[name])
            and not self.stopping
        ):
            self._start(name)

    def _stop(self) -> None:
        self.stopping = True
        for name in self.queued():  # waiting for the limit: cancelled at once
            self._finish(name, "cancelled")
        for name in self.running():
            if name in self.finishing:
                continue  # its body already ended; its cleanup decides
            if name in self.threads:  # cancelled, but its thread runs on
                self.threads[name]["cancelled"] = True
                continue
            if name.startswith("stub"):  # cancelled, but its cleanup takes time
                self.timers[name] = (self.clock + _delay(name, CLEANUP), "cancelled")
                self.finishing.add(name)
            else:
                self._finish(name, "cancelled")
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self.ended:
            return
        if self.stopping and not self.running():
            for name, state in self.state.items():
                if state == "pending":
                    self.state[name] = "cancelled"
        if all(s in TERMINAL for s in self.state.values()):
            self.ended = True

    def advance_to(self, when: float) -> None:
        self.clock = when
        for name, deadline in list(self.thread_deadlines.items()):
            if deadline <= when:  # the timer fires; the thread cannot be stopped
                self.threads[name]["timed_out"] = True
                del self.thread_deadlines[name]
        due = sorted((t, name) for name, (t, _) in self.timers.items() if t <= when)
        for _, name in due:
            _, state = self.timers.pop(name)
            if self.state[name] == "running":
                self._finish(name, state)

    def next_event(self) -> float | None:
        return min(
            [*(t for t, _ in self.timers.values()), *self.thread_deadlines.values()],
            default=None,
        )

    # requests ----------------------------------------------------------------

    def request(
        self, kind: str, requester: str, **args: Any
    ) -> tuple[bool, type[Exception] | None, Any]:
        """Predict and apply one request: (audited, error type or None, value)."""
        if self.ended:
            return False, RunClosedError, None
        self.records += 1
        if self.stopping:
            return True, RunClosedError, None
        try:
            value, changed = getattr(self, f"_{kind}")(requester, **args)
        except (
            CycleError,
            DuplicateStageError,
            StageStateError,
            UnknownStageError,
        ) as exc:
            return True, type(exc), None
        if changed:
            self.version += 1
        self._maybe_end()
        return True, None, value

    def _check_deps(self, name: str, after: list[str]) -> None:
        for dep in after:
            if dep not in self.state:
                raise UnknownStageError(dep, referrer=name)

    def _reaches(self, start: str, target: str) -> bool:
        stack, seen = [start], {start}
        while stack:
            node = stack.pop()
            if node == target:
                return True
            for child, deps in self.deps.items():
                if node in deps and child not in seen:
                    seen.add(child)
                    stack.append(child)
        return False

    def _same_addition(
        self, name: str, after: list[str], origin: tuple[str, str, int | None]
    ) -> bool:
        return self.origin.get(name) == origin and set(after) <= set(self.deps[name])

    def _add(
        self, name: str, after: list[str], origin: tuple[str, str, int | None] | None
    ) -> None:
        self.state[name] = "pending"
        self.deps[name] = list(after)
        self.origin[name] = origin

    def _add_stage(
        self, requester: str, name: str, after: list[str], before: list[str]
    ) -> tuple[Any, bool]:
        if name in self.state:
            if self._same_addition(name, after, (requester, name, None)):
                return name, False
            raise DuplicateStageError(name)
        self._check_deps(name, after)
        for later in before:
            if later not in self.state:
                raise UnknownStageError(later)
            if self.state[later] != "pending":
                raise StageStateError(later, self.state[later], "x")
            for dep in after:
                if dep == later or self._reaches(later, dep):
                    raise CycleError([name])
        self._add(name, after, (requester, name, None))
        for later in before:
            self.deps[later].append(name)
        self._settle_new(name)
        return name, True

    def _add_edge(self, requester: str, up: str, down: str) -> tuple[Any, bool]:
        if up not in self.state:
            raise UnknownStageError(up)
        if down not in self.state:
            raise UnknownStageError(down)
        if self.state[down] != "pending":
            raise StageStateError(down, self.state[down], "x")
        if up in self.deps[down]:
            return None, False
        if up == down or self._reaches(down, up):
            raise CycleError([up])
        self.deps[down].append(up)
        self._settle_new(down)
        return None, True

    def _expand(
        self, requester: str, base: str, count: int, after: list[str]
    ) -> tuple[Any, bool]:
        prefix = f"{self.keys[requester]}." if requester in self.keys else ""
        names = [f"{base}[{prefix}{i}]" for i in range(count)]
        existing = [n for n in names if n in self.state]
        if existing:
            if len(existing) == len(names) and all(
                self._same_addition(n, after, (requester, base, i))
                for i, n in enumerate(names)
            ):
                return names, False
            raise DuplicateStageError(existing[0])
        self._check_deps(names[0] if names else base, after)
        for i, name in enumerate(names):
            self._add(name, after, (requester, base, i))
            self.keys[name] = f"{prefix}{i}"
        for name in names:
            self._settle_new(name)
        return names, bool(names)

    def _remove_stage(self, requester: str, name: str) -> tuple[Any, bool]:
        if name not in self.state:
            raise UnknownStageError(name)
        if self.state[name] != "pending":
            raise StageStateError(name, self.state[name], "x")
        del self.state[name], self.deps[name]
        self.origin.pop(name, None)
        self.keys.pop(name, None)
        children = [c for c, deps in self.deps.items() if name in deps]
        for child in children:
            self.deps[child].remove(name)
        for child in children:
            self._settle_new(child)
        return None, True

    def _replace_pending(
        self, requester: str, stages: list[tuple[str, tuple[str, ...]]]
    ) -> tuple[Any, bool]:
        pending = [n for n, s in self.state.items() if s == "pending"]
        for name in pending:
            del self.state[name], self.deps[name]
            self.origin.pop(name, None)
            self.keys.pop(name, None)
        gone = set(pending)
        for name, deps in self.deps.items():  # a settled stage names no removed one
            self.deps[name] = [dep for dep in deps if dep not in gone]
        added = []
        for name, deps in stages:
            if name in self.state:
                continue
            self._add(name, list(deps), (requester, name, None))
            added.append(name)
        for name in added:
            self._settle_new(name)
        return None, bool(pending or added)

    def _cancel_stage(self, requester: str, name: str) -> tuple[Any, bool]:
        if name not in self.state:
            raise UnknownStageError(name)
        state = self.state[name]
        if state in TERMINAL:
            raise StageStateError(name, state, "x")
        if state == "pending":
            self._finish(name, "cancelled")
        elif name in self.threads:
            self.threads[name]["cancelled"] = True  # decided when its thread returns
        elif name not in self.finishing:
            if name.startswith("stub"):
                self.timers[name] = (self.clock + _delay(name, CLEANUP), "cancelled")
                self.finishing.add(name)
            else:
                self._finish(name, "cancelled")
        return None, True


# -- the machine ------------------------------------------------------------------------


KINDS = {
    "add_stage": "add_stage",
    "add_edge": "add_edge",
    "expand": "expand",
    "remove_stage": "remove_stage",
    "replace_pending": "replace_pending",
    "cancel_stage": "cancel_stage",
}


class RuntimeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = Loop()
        self.run: Any = None
        self.model: Model | None = None
        self.counter = 0

    def teardown(self) -> None:
        try:
            if self.run is not None and not self.run.done:
                # Cancel the run, let blocked threads return, and move
                # virtual time on until shielded cleanups are done; then
                # nothing may be left open.
                run, clock = self.run, self.loop.clock
                self.loop.controller.release_all()

                async def cancel_and_drain() -> None:
                    trio.lowlevel.spawn_system_task(run.cancel)
                    deadline = time.monotonic() + 30  # threads end in real time
                    jumps = 0
                    while not run.done and time.monotonic() < deadline:
                        await trio.testing.wait_all_tasks_blocked()
                        if jumps < 20:
                            clock.jump(100)
                            jumps += 1
                        await trio.lowlevel.checkpoint()

                self.loop.call(cancel_and_drain)
                assert self.run.done
                states = self.run.snapshot().states.values()
                assert all(state.is_terminal for state in states)
            if self.run is not None:
                self._check_the_journal()
            assert self.loop.controller.open_resources == 0
            assert self.loop.controller.inboxes == {}
        finally:
            self.loop.close()

    def _check_the_journal(self) -> None:
        """The run read back from its journal is the run as it ended."""
        with Journal(self.loop.journal, readonly=True) as journal:
            stored = journal.result(self.run.id)
        snapshot = self.run.snapshot()
        assert dict(stored.states) == dict(snapshot.states)
        assert dict(stored.dependencies) == dict(snapshot.dependencies)
        assert stored.audit == self.run.audit().snapshot()
        assert stored.status == snapshot.status

    # helpers -----------------------------------------------------------------------

    def fresh(self, category: str) -> str:
        self.counter += 1
        return f"{category}{self.counter}"

    def names(self) -> list[str]:
        return sorted(self.model.state) if self.model else []

    def blocked_threads(self) -> list[str]:
        assert self.model is not None
        return sorted(self.model.threads)

    def commandable(self) -> list[str]:
        assert self.model is not None
        return [
            n
            for n in self.model.running()
            if n in self.loop.controller.inboxes and n not in self.model.finishing
        ]

    def _advance(self, when: float) -> None:
        assert self.model is not None
        clock = self.loop.clock

        async def jump() -> None:
            clock.jump(max(0.0, when - trio.current_time()) + 1e-6)

        self.loop.call(jump)
        self.model.advance_to(when + 1e-6)

    def check_request(
        self,
        kind: str,
        requester: str,
        action: Callable[[Any], Awaitable[Any]],
        **args: Any,
    ) -> None:
        """Send one request (from outside or from a running stage) and compare."""
        assert self.model is not None
        before = len(self.run.audit())
        if requester == "external":
            result = self.loop.call(lambda: outcome.acapture(action, self.run))
        else:
            results: list[Any] = []
            send = self.loop.controller.inboxes[requester]
            self.loop.call(lambda: send.send(("do", (action, results))))
            (result,) = results
        audited, error, value = self.model.request(kind, requester, **args)
        log = self.run.audit()
        assert len(log) == before + (1 if audited else 0)
        if error is None:
            assert isinstance(result, outcome.Value), result
            if value is not None:
                assert (
                    result.value == value
                    or result.value == tuple(value)
                    or list(result.value) == value
                )
        else:
            assert isinstance(result, outcome.Error), (kind, args, result)
            assert type(result.error) is error, (kind, args, result.error, error)
        if audited:
            record = log[-1]
            assert record.kind == kind
            assert record.requester == requester
            assert record.accepted == (error is None)
            assert record.version_after == self.model.version

    # rules --------------------------------------------------------------------------

    @initialize(
        policy=st.sampled_from(["continue", "cancel"]),
        pipeline=small_pipelines(),
        data=st.data(),
    )
    def start_run(
        self,
        policy: str,
        pipeline: list[tuple[str, tuple[str, ...]]],
        data: st.DataObject,
    ) -> None:
        # Some of the pipeline's own stages run in threads (``w``, ``wt``).
        kinds = {
            name: data.draw(st.sampled_from(["p", "p", "w", "wt", "q"]))
            for name, _ in pipeline
        }
        renamed = {name: kinds[name] + name[1:] for name, _ in pipeline}
        pipeline = [
            (renamed[name], tuple(renamed[dep] for dep in deps))
            for name, deps in pipeline
        ]
        built = Pipeline("machine")
        for name, deps in pipeline:
            built = built.add(spec_for(name), after=list(deps))
        controller = self.loop.controller

        async def start() -> Any:
            return await self.loop.rt.start(
                built, inputs={"controller": controller}, on_failure=policy
            )

        self.run = self.loop.call(start)
        self.model = Model(policy, 0.0)
        for name, deps in pipeline:
            self.model._add(name, list(deps), None)
        self.model._start_ready()
        self.model._maybe_end()

    @precondition(lambda self: self.model is not None and bool(self.commandable()))
    @rule(data=st.data(), ok=st.booleans())
    def finish_stage(self, data: st.DataObject, ok: bool) -> None:
        assert self.model is not None
        name = data.draw(st.sampled_from(self.commandable()))
        send = self.loop.controller.inboxes[name]
        self.loop.call(lambda: send.send(("finish", ok)))
        state = "succeeded" if ok else "failed"
        if name.startswith("stub"):
            self.model.timers[name] = (self.model.clock + _delay(name, CLEANUP), state)
            self.model.finishing.add(name)
        else:
            self.model._finish(name, state)

    @precondition(lambda self: self.model is not None and bool(self.blocked_threads()))
    @rule(data=st.data(), ok=st.booleans())
    def finish_thread(self, data: st.DataObject, ok: bool) -> None:
        """A thread stage's function returns (or raises): its outcome is decided then."""
        assert self.model is not None
        name = data.draw(st.sampled_from(self.blocked_threads()))
        self.loop.controller.gate(name).put(ok)

        async def until_it_ended() -> None:
            # The thread returns in real time; virtual time does not move.
            deadline = time.monotonic() + 30
            while self.run.snapshot().states[name] is StageState.RUNNING:
                assert time.monotonic() < deadline, f"{name} did not end"
                await trio.lowlevel.checkpoint()

        self.loop.call(until_it_ended)
        self.model.thread_returns(name, ok)
        event(f"a thread stage ended {self.model.state[name]}")

    @precondition(
        lambda self: self.model is not None and self.model.next_event() is not None
    )
    @rule()
    def advance_clock(self) -> None:
        assert self.model is not None
        when = self.model.next_event()
        assert when is not None
        self._advance(when)

    def _requester(self, data: st.DataObject) -> str:
        choices = ["external", *self.commandable()]
        return data.draw(st.sampled_from(choices))

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data(), category=st.sampled_from(CATEGORIES), reuse=st.booleans())
    def add_stage(self, data: st.DataObject, category: str, reuse: bool) -> None:
        names = self.names()
        name = (
            data.draw(st.sampled_from(names))
            if reuse and names
            else self.fresh(category)
        )
        after = data.draw(
            st.lists(st.sampled_from([*names, "ghost"]), unique=True, max_size=3)
        )
        before = data.draw(
            st.lists(st.sampled_from([*names, "ghost"]), unique=True, max_size=2)
        )
        requester = self._requester(data)
        spec = spec_for(name)

        async def action(target: Any) -> Any:
            return await target.add_stage(
                spec, after=after, before=before, reason="machine"
            )

        self.check_request(
            "add_stage", requester, action, name=name, after=after, before=before
        )

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data(), timeout=st.booleans())
    def add_thread_stage(self, data: st.DataObject, timeout: bool) -> None:
        """A thread stage, most often free to start at once."""
        name = self.fresh("wt" if timeout else "w")
        after = data.draw(st.lists(st.sampled_from(self.names()), max_size=1))
        requester = self._requester(data)
        spec = spec_for(name)

        async def action(target: Any) -> Any:
            return await target.add_stage(spec, after=after, reason="machine")

        self.check_request(
            "add_stage", requester, action, name=name, after=after, before=[]
        )

    @precondition(lambda self: self.model is not None and len(self.names()) >= 1)
    @rule(data=st.data())
    def add_edge(self, data: st.DataObject) -> None:
        names = [*self.names(), "ghost"]
        up = data.draw(st.sampled_from(names))
        down = data.draw(st.sampled_from(names))
        requester = self._requester(data)

        async def action(target: Any) -> Any:
            return await target.add_edge(up, down, reason="machine")

        self.check_request("add_edge", requester, action, up=up, down=down)

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data(), count=st.integers(0, 3))
    def expand(self, data: st.DataObject, count: int) -> None:
        names = self.names()
        base = data.draw(st.sampled_from(["e1", "e2", "e3"]))
        after = data.draw(
            st.lists(st.sampled_from([*names, "ghost"]), unique=True, max_size=2)
        )
        requester = self._requester(data)
        spec = spec_for(base)

        async def action(target: Any) -> Any:
            return await target.expand(
                spec, range(count), after=after, reason="machine"
            )

        self.check_request(
            "expand", requester, action, base=base, count=count, after=after
        )

    @precondition(lambda self: self.model is not None and len(self.names()) >= 1)
    @rule(data=st.data())
    def remove_stage(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([*self.names(), "ghost"]))
        requester = self._requester(data)

        async def action(target: Any) -> Any:
            return await target.remove_stage(name, reason="machine")

        self.check_request("remove_stage", requester, action, name=name)

    @precondition(lambda self: self.model is not None)
    @rule(data=st.data(), pipeline=small_pipelines(max_stages=3))
    def replace_pending(
        self, data: st.DataObject, pipeline: list[tuple[str, tuple[str, ...]]]
    ) -> None:
        built = Pipeline("swap")
        for name, deps in pipeline:
            built = built.add(spec_for(name), after=list(deps))
        requester = self._requester(data)

        async def action(target: Any) -> Any:
            return await target.replace_pending(built, reason="machine")

        self.check_request("replace_pending", requester, action, stages=pipeline)

    @precondition(lambda self: self.model is not None and len(self.names()) >= 1)
    @rule(data=st.data())
    def cancel_stage(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([*self.names(), "ghost"]))

        async def action(target: Any) -> Any:
            return await target.cancel_stage(name, reason="machine")

        self.check_request("cancel_stage", "external", action, name=name)

    @precondition(lambda self: self.model is not None and len(self.commandable()) >= 2)
    @rule(data=st.data())
    def burst(self, data: st.DataObject) -> None:
        """Several running stages request changes at once."""
        assert self.model is not None
        requesters = data.draw(
            st.lists(
                st.sampled_from(self.commandable()), min_size=2, max_size=4, unique=True
            )
        )
        names = self.names()
        plans = {}
        for requester in requesters:
            if data.draw(st.booleans()):
                name = self.fresh("s")
                after = data.draw(
                    st.lists(st.sampled_from(names), unique=True, max_size=2)
                )
                plans[requester] = (
                    "add_stage",
                    {"name": name, "after": after, "before": []},
                )
            else:
                up, down = (
                    data.draw(st.sampled_from(names)),
                    data.draw(st.sampled_from(names)),
                )
                plans[requester] = ("add_edge", {"up": up, "down": down})
        results: dict[str, list[Any]] = {r: [] for r in requesters}
        before = len(self.run.audit())

        async def fire() -> None:
            for requester, (kind, args) in plans.items():
                if kind == "add_stage":
                    spec = spec_for(args["name"])

                    async def action(
                        ctx: Any, spec: Any = spec, args: Any = args
                    ) -> Any:
                        return await ctx.add_stage(
                            spec, after=args["after"], reason="burst"
                        )
                else:

                    async def action(ctx: Any, args: Any = args) -> Any:
                        return await ctx.add_edge(
                            args["up"], args["down"], reason="burst"
                        )

                self.loop.controller.inboxes[requester].send_nowait(
                    ("do", (action, results[requester]))
                )

        self.loop.call(fire)
        records = list(self.run.audit())[before:]
        assert sorted(r.requester for r in records) == sorted(requesters)
        for record in records:  # the model applies them in the supervisor's order
            kind, args = plans[record.requester]
            audited, error, _ = self.model.request(kind, record.requester, **args)
            assert audited
            assert record.accepted == (error is None), (record, error)
            (result,) = results[record.requester]
            assert (
                type(result.error) if isinstance(result, outcome.Error) else None
            ) is error
            assert record.version_after == self.model.version

    # invariants -----------------------------------------------------------------------

    @invariant()
    def graph_matches_the_model(self) -> None:
        if self.model is None:
            return
        snapshot = self.run.snapshot()
        states = {name: state.value for name, state in snapshot.states.items()}
        self.model.adopt(states)
        assert states == self.model.state
        for name, deps in snapshot.dependencies.items():
            assert list(deps) == self.model.deps[name], name
        assert snapshot.version == self.model.version

    @invariant()
    def audit_is_complete_and_in_order(self) -> None:
        if self.model is None:
            return
        log = self.run.audit()
        assert len(log) == self.model.records
        assert [r.seq for r in log] == list(range(len(log)))
        version = 0
        for record in log:
            assert record.version_before == version
            assert record.version_after - record.version_before in (0, 1)
            assert record.accepted or record.version_after == record.version_before
            version = record.version_after

    @invariant()
    def the_run_ends_exactly_when_every_stage_is_terminal(self) -> None:
        if self.model is None:
            return
        live = self.run.snapshot().states
        self.model.adopt({name: state.value for name, state in live.items()})
        assert (
            sum(  # the limit of one is never exceeded
                1
                for name, state in live.items()
                if name.startswith("q") and state is StageState.RUNNING
            )
            <= 1
        )
        assert self.run.done == self.model.ended
        if self.model.ended:
            assert all(s.is_terminal for s in self.run.snapshot().states.values())
            runs_left = self.loop.rt._nursery.child_tasks
            assert not runs_left, runs_left
        # Every running stage's actor exists; no finished stage still has one.
        running = {n for n, s in self.model.state.items() if s == "running"}
        for name in self.loop.controller.inboxes:
            assert name in running, name
        assert set(self.model.threads) <= running


RuntimeMachine.TestCase.settings = settings(
    settings.default,  # the profile's example count: ci or thorough
    stateful_step_count=int(os.environ.get("DAGVISOR_STATEFUL_STEPS", "30")),
    deadline=None,
)
TestRuntimeMachine = RuntimeMachine.TestCase


# -- signals: a run's mailbox against a model ------------------------------------
#
# The mailbox is the supervisor's and synchronous: it is driven here directly,
# as its supervisor drives it between messages, with stages that wait, take,
# withdraw a wait (a cancelled waiter, before or after the answer), fail an
# attempt (a retry) and end. The model says who gets which signal.


class _Stage:
    """A running stage's token, as the mailbox sees it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = StageState.RUNNING


class _Core:
    """What a mailbox reads of its run (no journal)."""

    def __init__(self) -> None:
        from dagvisor.supervisor._audit import AuditLog
        from dagvisor.supervisor._events import EventLog

        self.run_id = "signals"
        self.version = 0
        self.audit = AuditLog()
        self.events = EventLog()
        self.records = None

    def now(self) -> float:
        return 0.0


SIGNAL_NAMES = ("a", "b")


class SignalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        from dagvisor.supervisor._mailbox import Mailbox

        self.mailbox = Mailbox(_Core())  # type: ignore[arg-type]  # a stand-in core
        self.stages: dict[str, _Stage] = {}
        self.count = 0
        self.sent = 0
        # The model: kept ids per name, waiting stages per name, what each
        # stage holds, its outstanding wait (name, request, answer id or None).
        self.kept: dict[str, list[int]] = {name: [] for name in SIGNAL_NAMES}
        self.waiting: dict[str, list[str]] = {name: [] for name in SIGNAL_NAMES}
        self.held: dict[str, list[int]] = {}
        self.wait: dict[str, tuple[str, Any, int | None]] = {}
        self.consumed: set[int] = set()
        self.names: dict[int, str] = {}

    def running(self) -> list[str]:
        return sorted(self.stages)

    def _pump(self, name: str) -> None:
        kept, waiting = self.kept[name], self.waiting[name]
        while kept and waiting:
            stage_name = waiting.pop(0)
            signal = kept.pop(0)
            self.held[stage_name].append(signal)
            wait_name, request, _ = self.wait[stage_name]
            self.wait[stage_name] = (wait_name, request, signal)

    @rule()
    def start_stage(self) -> None:
        name = f"s{self.count}"
        self.count += 1
        self.stages[name] = _Stage(name)
        self.held[name] = []

    @rule(name=st.sampled_from(SIGNAL_NAMES))
    def send(self, name: str) -> None:
        from dagvisor.actors._messages import ReplySlot, SendSignal

        text = str(self.sent)
        request = SendSignal(
            name=name,
            text=text,
            summary=text,
            reason="r",
            requester="external",
            reply=ReplySlot(),
        )
        self.mailbox.send(request)
        assert request.reply.answered
        self.kept[name].append(self.sent)
        self.names[self.sent] = name
        self.sent += 1
        self._pump(name)

    @precondition(lambda self: any(s not in self.wait for s in self.stages))
    @rule(data=st.data(), name=st.sampled_from(SIGNAL_NAMES))
    def wait_for(self, data: st.DataObject, name: str) -> None:
        from dagvisor.actors._messages import ReplySlot, WaitSignal

        idle = [s for s in self.running() if s not in self.wait]
        stage_name = data.draw(st.sampled_from(idle))
        request = WaitSignal(name, self.stages[stage_name], ReplySlot())
        self.wait[stage_name] = (name, request, None)
        self.waiting[name].append(stage_name)
        self.mailbox.wait(request)
        self._pump(name)

    @precondition(lambda self: bool(self.wait))
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        """An answered wait returns its payload to the stage."""
        answered = [s for s, (_, _, got) in self.wait.items() if got is not None]
        if not answered:
            return
        stage_name = data.draw(st.sampled_from(sorted(answered)))
        _, request, got = self.wait.pop(stage_name)
        assert request.reply.answered
        assert request.reply._answer.unwrap() == str(got)

    @precondition(lambda self: bool(self.wait))
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        """The waiter is cancelled: before its answer, or after it (then it goes back)."""
        stage_name = data.draw(st.sampled_from(sorted(self.wait)))
        name, request, got = self.wait.pop(stage_name)
        self.mailbox.withdraw(request)
        if got is None:
            self.waiting[name].remove(stage_name)
        else:
            self.held[stage_name].remove(got)
            self.kept[name].insert(0, got)
            self._pump(name)

    def _give_back(self, stage_name: str) -> None:
        touched = set()
        for signal in reversed(self.held[stage_name]):
            name = self.names[signal]
            self.kept[name].insert(0, signal)
            touched.add(name)
        self.held[stage_name] = []
        for name in sorted(touched):
            self._pump(name)

    @precondition(lambda self: any(s not in self.wait for s in self.stages))
    @rule(data=st.data())
    def attempt_fails(self, data: st.DataObject) -> None:
        """An attempt that took signals failed and is retried."""
        idle = [s for s in self.running() if s not in self.wait]
        stage_name = data.draw(st.sampled_from(idle))
        self.mailbox.returned(self.stages[stage_name])  # type: ignore[arg-type]
        self._give_back(stage_name)

    @precondition(lambda self: any(s not in self.wait for s in self.stages))
    @rule(data=st.data(), succeeded=st.booleans())
    def stage_ends(self, data: st.DataObject, succeeded: bool) -> None:
        idle = [s for s in self.running() if s not in self.wait]
        stage_name = data.draw(st.sampled_from(idle))
        node = self.stages.pop(stage_name)
        node.state = StageState.SUCCEEDED if succeeded else StageState.FAILED
        self.mailbox.ended(node, succeeded=succeeded)  # type: ignore[arg-type]
        if succeeded:
            self.consumed.update(self.held.pop(stage_name))
        else:
            self._give_back(stage_name)
            del self.held[stage_name]

    @invariant()
    def every_signal_is_in_one_place(self) -> None:
        kept = [s for name in SIGNAL_NAMES for s in self.kept[name]]
        held = [s for signals in self.held.values() for s in signals]
        places = kept + held + sorted(self.consumed)
        assert sorted(places) == list(range(self.sent))
        for name in SIGNAL_NAMES:
            assert self.mailbox.pending(name) == len(self.kept[name])
        live = {
            node.name: [signal[0] for signal, _ in entries]
            for node, entries in self.mailbox.held.items()
        }
        assert live == {name: got for name, got in self.held.items() if got}


SignalMachine.TestCase.settings = settings(
    settings.default, stateful_step_count=40, deadline=None
)
TestSignalMachine = SignalMachine.TestCase
