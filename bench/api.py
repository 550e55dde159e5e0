"""What the control API costs a run, and how many changes it takes a second.

    python bench/api.py                          # both measures, a few minutes
    python bench/api.py --measures chain --stages 100000 --rounds 3
    python bench/api.py --measures changes --requests 3000 --clients 8

``chain``: a 100,000-stage chain of no-op stages with the control API off,
served with nobody following the run, and on while ``--readers`` clients
(in another process, over loopback) follow the run's event stream from its
first stage to its end (httpx asks for ``deflate``, as browsers do; the
count is of the decoded text). The modes alternate, each round in a fresh
process, and the ratio of the medians is reported (target: on at most
1.1x off), with the ratio of the run's process CPU time. The chain's first stage
waits until every reader has its stream open, and the clock runs from then
until the run has ended; the readers count the events they saw and those
the stream told them they lost.

``changes``: authenticated change requests on loopback: ``--clients``
concurrent httpx clients in another process, each with its own
connection, post ``POST /api/runs/{id}/stages`` (an operator's token, a
registered stage, a reason) to a served runtime until ``--requests`` were
answered; every answer must be 201 (target: at least 500 a second).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import emit, machine, progress, trio_floor

from dagvisor import Pipeline, StageRegistry, runtime, stage

GATE: list[trio.Event] = []
_LOST = re.compile(rb'event: lost\ndata: \{"count":(\d+)\}')


@stage
async def gate(ctx: Any) -> int:
    """The chain's first stage: waits until the clock starts."""
    await GATE[0].wait()
    return 1


@stage
async def step(ctx: Any) -> int:
    for value in ctx.inputs.values():
        return int(value) + 1
    return 0  # pragma: no cover


@stage
async def hold(ctx: Any) -> None:
    """Keeps the run of the ``changes`` measure going until it is cancelled."""
    await trio.sleep_forever()


async def noop(ctx: Any) -> int:
    """What each change request adds."""
    return 0


def _token(directory: str) -> tuple[Path, str]:
    from dagvisor.supervisor._control._tokens import add_token

    path = Path(directory) / "tokens.txt"
    return path, add_token(path, "bench", "operator")


async def _lines(process: trio.Process) -> Any:
    """The lines a child process prints, as they come."""
    assert process.stdout is not None
    pending = b""
    async for chunk in process.stdout:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode()
    if pending:
        yield pending.decode()


# -- chain: in the measured process ------------------------------------------------


def _chain(n: int, readers: int) -> dict[str, Any]:
    """One round of the chain: the API off (readers == 0), on with nobody
    following the run (readers == -1), or on with ``readers`` clients."""
    stages = [gate.named("s0"), *(step.named(f"s{i}") for i in range(1, n))]
    pipeline = Pipeline.chain(stages, name="chain")

    async def main() -> dict[str, Any]:
        GATE[:] = [trio.Event()]
        with tempfile.TemporaryDirectory() as directory:
            options: dict[str, Any] = {}
            if readers:
                path, secret = _token(directory)
                options = {"serve": "127.0.0.1:0", "tokens": path}
            async with runtime(**options) as rt:
                run = await rt.start(pipeline)
                seen: dict[str, Any] = {}
                if readers > 0:
                    assert rt.url is not None
                    process = await trio.lowlevel.open_process(
                        [
                            sys.executable,
                            __file__,
                            "--readers-child",
                            json.dumps([rt.url, run.id, secret, readers]),
                        ],
                        stdout=subprocess.PIPE,
                    )
                    lines = _lines(process)
                    async for line in lines:
                        if line == "ready":
                            break
                    else:
                        raise SystemExit("the readers did not start")
                start = time.perf_counter()
                cpu = time.process_time()
                times = os.times()
                collected = [gen["collections"] for gen in gc.get_stats()]
                GATE[0].set()
                result = await run.wait()
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu
                system = os.times().system - times.system
                collected = [
                    gen["collections"] - before
                    for gen, before in zip(gc.get_stats(), collected, strict=True)
                ]
                if readers > 0:
                    async for line in lines:
                        seen = json.loads(line)
                    if await process.wait() != 0 or not seen:
                        raise SystemExit("the readers failed")
        if result.outputs[f"s{n - 1}"] != n:
            raise SystemExit("wrong result")
        return {
            "stages": n,
            "readers": readers,
            "run_s": elapsed,
            "per_stage_us": elapsed / n * 1e6,
            "cpu_s": cpu,
            "system_cpu_s": system,
            "gc_collections": collected,
            **seen,
        }

    return trio.run(main)


# -- chain: the readers, in their own process --------------------------------------


def _readers_child(url: str, run_id: str, secret: str, count: int) -> None:
    import httpx

    async def read(
        client: httpx.AsyncClient, opened: trio.Semaphore, out: list[int]
    ) -> None:
        events = lost = losses = 0
        async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            response.raise_for_status()
            encodings.add(response.headers.get("content-encoding", "identity"))
            pending = b""
            announced = False
            async for chunk in response.aiter_bytes():
                if not announced:
                    announced = True
                    opened.release()
                # Counted in C (a Python loop per event would cost this
                # process more than the server spends sending them).
                whole, _, pending = (pending + chunk).rpartition(b"\n\n")
                events += whole.count(b"event: ")
                for count in _LOST.findall(whole):
                    losses += 1
                    lost += int(count)
            events -= losses
        out.extend([events, lost, losses])

    encodings: set[str] = set()

    async def main() -> None:
        opened = trio.Semaphore(0)
        results: list[list[int]] = [[] for _ in range(count)]
        headers = {"Authorization": f"Bearer {secret}"}
        timeout = httpx.Timeout(10.0, read=None)
        async with trio.open_nursery() as nursery:
            clients = [
                httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout)
                for _ in range(count)
            ]
            for client, out in zip(clients, results, strict=True):
                nursery.start_soon(read, client, opened, out)
            for _ in range(count):
                await opened.acquire()
            print("ready", flush=True)
        for client in clients:
            await client.aclose()
        print(
            json.dumps(
                {
                    "events_seen": [out[0] for out in results],
                    "events_lost": [out[1] for out in results],
                    "lost_notices": [out[2] for out in results],
                    "content_encoding": sorted(encodings),
                    "readers_cpu_s": time.process_time(),
                }
            ),
            flush=True,
        )

    trio.run(main)


# -- changes -----------------------------------------------------------------------


def _changes(requests: int, clients: int) -> dict[str, Any]:
    registry = StageRegistry()
    registry.register(noop, name="noop")

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as directory:
            path, secret = _token(directory)
            async with runtime(
                serve="127.0.0.1:0", tokens=path, registry=registry
            ) as rt:
                assert rt.url is not None
                run = await rt.start(Pipeline("held").add(hold))
                arguments = [rt.url, run.id, secret, requests, clients]
                cpu = time.process_time()
                done = await trio.run_process(
                    [
                        sys.executable,
                        __file__,
                        "--clients-child",
                        json.dumps(arguments),
                    ],
                    capture_stdout=True,
                )
                cpu = time.process_time() - cpu
                await run.cancel(reason="measured")
                figures: dict[str, Any] = json.loads(done.stdout)
                added = sum(1 for r in run.audit() if r.kind == "add_stage")
        return {**figures, "server_cpu_s": cpu, "audited": added}

    return trio.run(main)


def _clients_child(
    url: str, run_id: str, secret: str, requests: int, clients: int
) -> None:
    import httpx

    async def main() -> None:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        names = iter(range(requests))
        headers = {"Authorization": f"Bearer {secret}"}

        async def client() -> None:
            async with httpx.AsyncClient(base_url=url, headers=headers) as http:
                for i in names:
                    body = {"stage": "noop", "name": f"n{i}", "reason": "measured"}
                    sent = time.perf_counter()
                    response = await http.post(f"/api/runs/{run_id}/stages", json=body)
                    latencies.append(time.perf_counter() - sent)
                    statuses[response.status_code] = (
                        statuses.get(response.status_code, 0) + 1
                    )

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)
        elapsed = time.perf_counter() - start
        latencies.sort()
        print(
            json.dumps(
                {
                    "requests": requests,
                    "clients": clients,
                    "elapsed_s": elapsed,
                    "per_second": requests / elapsed,
                    "p50_ms": latencies[len(latencies) // 2] * 1e3,
                    "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
                    "statuses": {str(k): v for k, v in sorted(statuses.items())},
                    "client_cpu_s": time.process_time(),
                }
            )
        )

    trio.run(main)


# -- the parent --------------------------------------------------------------------


def _fresh(*arguments: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *arguments],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measures", default="chain,changes")
    parser.add_argument("--stages", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measure")
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", dest="json_path", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--readers-child", help=argparse.SUPPRESS)
    parser.add_argument("--clients-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.readers_child:
        _readers_child(*json.loads(args.readers_child))
        return
    if args.clients_child:
        _clients_child(*json.loads(args.clients_child))
        return
    if args.child:
        kind, *rest = json.loads(args.child)
        if kind == "chain":
            print(json.dumps(_chain(*rest)))
        else:
            print(json.dumps(_changes(*rest)))
        return
    measures = [m for m in args.measures.split(",") if m]
    out: dict[str, Any] = {"benchmark": "api", "machine": machine()}
    if "chain" in measures:
        modes = (("off", 0), ("served", -1), ("on", args.readers))
        rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _ in modes}
        for k in range(args.rounds):
            for mode, readers in modes:
                progress(f"chain {args.stages:,} stages, API {mode}, round {k + 1} ...")
                row = _fresh("--child", json.dumps(["chain", args.stages, readers]))
                progress(f"  {row['per_stage_us']:.1f} µs a stage")
                rounds[mode].append(row)
        off, served, on = (
            [r["per_stage_us"] for r in rounds[mode]] for mode, _ in modes
        )
        cpu_off, cpu_on = ([r["cpu_s"] for r in rounds[m]] for m in ("off", "on"))
        out["chain"] = {
            "stages": args.stages,
            "readers": args.readers,
            "off_per_stage_us": _spread(off),
            "served_no_reader_per_stage_us": _spread(served),
            "on_per_stage_us": _spread(on),
            "ratio_of_medians": statistics.median(on) / statistics.median(off),
            "ratios_by_round": [b / a for a, b in zip(off, on, strict=True)],
            "served_ratio_of_medians": statistics.median(served)
            / statistics.median(off),
            "cpu_ratio_of_medians": statistics.median(cpu_on)
            / statistics.median(cpu_off),
            "trio_floor_per_stage_us": trio_floor(100_000) / 100_000 * 1e6,
            "rounds": rounds,
        }
        progress(f"  on / off: {out['chain']['ratio_of_medians']:.3f}")
    if "changes" in measures:
        rows = []
        for k in range(args.rounds):
            progress(f"changes: {args.requests:,} requests, round {k + 1} ...")
            row = _fresh(
                "--child", json.dumps(["changes", args.requests, args.clients])
            )
            progress(f"  {row['per_second']:.0f} a second, {row['statuses']}")
            rows.append(row)
        out["changes"] = {
            "requests": args.requests,
            "clients": args.clients,
            "per_second": _spread([r["per_second"] for r in rows]),
            "rounds": rows,
        }
    emit(out, args.json_path)


if __name__ == "__main__":
    main()
