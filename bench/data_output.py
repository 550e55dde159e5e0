"""A 100 MB DataFrame through the journal: encode, commit, read back.

python bench/data_output.py                    # 100 MB, DataCodec, and JSON for comparison
python bench/data_output.py --mb 20 --json out.json

A stage returns a DataFrame of ``--mb`` MB (float64, int64 and a string
column; ``memory_usage(deep=True)`` counts it) built before the run. The
run is journaled with `DataCodec` (Arrow IPC, a BLOB). Measured in one
process, each case in a fresh temporary directory:

* ``run_s``: the run, from ``rt.run`` to its result (encoding in a worker
  thread, the writer committing the BLOB piece by piece);
* ``longest_gap_s``: the longest gap between two ticks of a task sleeping
  1 ms meanwhile: how long the event loop was held;
* ``journal_mb``: the file after the runtime closed it (WAL checkpointed);
* ``read_s``: ``Journal.result`` in a new reader, the frame rebuilt;
* ``peak_rss_mb``: the process's peak RSS over the case, above its RSS
  before it (the frame itself, built before, is in the baseline).

`JsonCodec` refuses a DataFrame (it is not plain data); for comparison
the same columns as a dict of lists (``frame.to_dict("list")``) go
through the JSON codec, which is what a pipeline without `DataCodec`
would have to return.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
import trio
from _common import RssSampler, emit, machine

from dagvisor import Journal, Pipeline, runtime, stage
from dagvisor.errors import NotRestorableError, RunFailed

_VALUE: list[Any] = [None]  # the output, built before the run (not timed)


@stage
async def produce(ctx: Any) -> Any:
    """Returns the prepared value."""
    return _VALUE[0]


def _frame(mb: float) -> pd.DataFrame:
    """A frame of about ``mb`` MB: a float, an int and a short string a row."""

    def build(rows: int) -> pd.DataFrame:
        rng = np.random.default_rng(7)
        return pd.DataFrame(
            {
                "value": rng.random(rows),
                "id": np.arange(rows, dtype=np.int64),
                "group": rng.choice(["north", "south", "east", "west"], rows),
            }
        )

    sample = build(10_000)
    per_row = sample.memory_usage(deep=True).sum() / len(sample)
    return build(int(mb * 1e6 / per_row))


async def _case(path: Path, codec: str) -> dict[str, Any]:
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
        try:
            async with runtime(journal=path, codec=codec) as rt:
                result = await rt.run(Pipeline("data").add(produce))
        except RunFailed as exc:
            (error,) = exc.errors.values()
            assert isinstance(error, NotRestorableError)
            done.set()
            return {"codec": codec, "refused": str(error)[:120]}
        elapsed = time.perf_counter() - start
        done.set()
    assert result.status == "succeeded"
    return {"run_s": elapsed, "longest_gap_s": max(gaps), "ticks": len(gaps)}


def _measure(value: Any, codec: str) -> dict[str, Any]:
    _VALUE[0] = value
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp, RssSampler(0.01) as rss:
        path = Path(tmp) / "runs.db"
        row = trio.run(_case, path, codec)
        if "refused" in row:
            return row
        row["journal_mb"] = path.stat().st_size / 1e6
        start = time.perf_counter()
        with Journal(path, readonly=True) as journal:
            (listed,) = journal.runs()
            back = journal.result(listed["run_id"]).outputs["produce"]
        row["read_s"] = time.perf_counter() - start
        row["read_type"] = type(back).__name__
        del back
    row["peak_rss_mb"] = (rss.peak - rss.baseline) / 1e6
    row["codec"] = codec
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="the frame's size")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    frame = _frame(args.mb)
    size_mb = frame.memory_usage(deep=True).sum() / 1e6
    rows = [
        {"value": "DataFrame", **_measure(frame, "data")},
        {"value": "DataFrame", **_measure(frame, "json")},
    ]
    as_lists = frame.to_dict("list")
    del frame
    rows.append({"value": "dict of lists", **_measure(as_lists, "json")})
    emit(
        {
            "benchmark": "data_output",
            "frame_mb": round(size_mb, 1),
            "frame_rows": len(as_lists["id"]),
            "machine": machine(),
            "rows": rows,
        },
        args.json_path,
    )


if __name__ == "__main__":
    main()
