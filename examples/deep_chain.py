"""A 10,000-stage chain with live progress.

Run: python examples/deep_chain.py [stages]
"""

import sys

import trio

from dagvisor import Pipeline, runtime, stage


@stage
async def step(ctx):
    return sum(ctx.inputs.values()) + 1


def show(progress):
    print(
        f"\r{progress.done:>7,}/{progress.stages:,} stages  "
        f"{progress.stages_per_second:>9,.0f} stages/s  RSS {progress.rss / 2**20:5.1f} MB",
        end="",
        flush=True,
    )


async def main(stages: int) -> None:
    pipeline = Pipeline.chain((step.named(f"s{i}") for i in range(stages)), name="deep")
    async with runtime(on_progress=show, monitor_interval=0.1) as rt:
        result = await rt.run(pipeline)
    print(
        f"\nlast output: {result.outputs[f's{stages - 1}']}, in {result.stats.duration:.2f} s"
    )


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
