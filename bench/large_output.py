"""One large output through the journal: its size on disk and the event loop's stall.

python bench/large_output.py                   # a 50 MB Latin-1 string
python bench/large_output.py --mb 10 --kind ascii --json out.json

A stage returns a string of ``--mb`` million characters (``latin1``: every
character in U+0080-U+00FF, so UTF-8 takes two bytes for each and JSON with
``ensure_ascii`` six; ``ascii``: plain letters). Meanwhile a task sleeps
1 ms in a loop; the longest gap between two of its ticks is how long the
event loop was held by anything else: encoding, queueing, committing. The
journal's size is measured after the runtime closed it (WAL checkpointed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import emit, machine

from dagvisor import Pipeline, runtime, stage

_TEXT = [""]  # the output, built before the run (not timed)


@stage
async def big(ctx: Any) -> str:
    """Returns the prepared text."""
    return _TEXT[0]


def _text(mb: float, kind: str) -> str:
    count = int(mb * 1_000_000)
    if kind == "latin1":
        alphabet = "".join(chr(c) for c in range(0xC0, 0x100))
    else:
        alphabet = "abcdefghijklmnopqrstuvwxyz"
    return (alphabet * (count // len(alphabet) + 1))[:count]


async def _measure(path: Path) -> dict[str, Any]:
    gaps: list[float] = []
    done = trio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await trio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.05)  # the ticker is ticking
        start = time.perf_counter()
        async with runtime(journal=path) as rt:
            result = await rt.run(Pipeline("large").add(big))
        elapsed = time.perf_counter() - start
        done.set()
    assert result.status == "succeeded"
    return {"run_s": elapsed, "longest_gap_s": max(gaps), "ticks": len(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="million characters")
    parser.add_argument("--kind", choices=("latin1", "ascii"), default="latin1")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    text = _TEXT[0] = _text(args.mb, args.kind)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.db"
        row = trio.run(_measure, path)
        row["journal_mb"] = path.stat().st_size / 1e6
        row["output_chars"] = len(text)
        row["output_utf8_mb"] = len(text.encode("utf-8")) / 1e6
    emit(
        {
            "benchmark": "large_output",
            "kind": args.kind,
            "machine": machine(),
            "rows": [row],
        },
        args.json_path,
    )


if __name__ == "__main__":
    main()
