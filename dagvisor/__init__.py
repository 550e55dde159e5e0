"""dagvisor: run DAG pipelines whose graph can change while they run.

Example:
    >>> import trio
    >>> from dagvisor import Pipeline, runtime, stage
    >>> @stage
    ... async def a(ctx):
    ...     return 1
    >>> @stage
    ... async def b(ctx):
    ...     return ctx.inputs["a"] + 1
    >>> async def main():
    ...     async with runtime() as rt:
    ...         return await rt.run(Pipeline("demo").add(a).add(b, after=["a"]))
    >>> trio.run(main).outputs["b"]
    2
"""

import logging as _logging

from dagvisor import errors as errors
from dagvisor.actors import NO_ITEM as NO_ITEM
from dagvisor.actors import ChangeBatch as ChangeBatch
from dagvisor.actors import ChangeKind as ChangeKind
from dagvisor.actors import Codec as Codec
from dagvisor.actors import DaskExecutor as DaskExecutor
from dagvisor.actors import DaskStatistics as DaskStatistics
from dagvisor.actors import DataCodec as DataCodec
from dagvisor.actors import Executor as Executor
from dagvisor.actors import ExecutorChoice as ExecutorChoice
from dagvisor.actors import JsonCodec as JsonCodec
from dagvisor.actors import PickleCodec as PickleCodec
from dagvisor.actors import Pipeline as Pipeline
from dagvisor.actors import StageContext as StageContext
from dagvisor.actors import StageFunction as StageFunction
from dagvisor.actors import StageRef as StageRef
from dagvisor.actors import StageRegistry as StageRegistry
from dagvisor.actors import StageSpec as StageSpec
from dagvisor.actors import StageState as StageState
from dagvisor.actors import StageView as StageView
from dagvisor.actors import StreamedPipeline as StreamedPipeline
from dagvisor.actors import StreamItem as StreamItem
from dagvisor.actors import Trigger as Trigger
from dagvisor.actors import compose as compose
from dagvisor.actors import default_registry as default_registry
from dagvisor.actors import stage as stage
from dagvisor.supervisor import Attempt as Attempt
from dagvisor.supervisor import AuditLog as AuditLog
from dagvisor.supervisor import AuditRecord as AuditRecord
from dagvisor.supervisor import ConsumedOutput as ConsumedOutput
from dagvisor.supervisor import Event as Event
from dagvisor.supervisor import EventsLost as EventsLost
from dagvisor.supervisor import EventStream as EventStream
from dagvisor.supervisor import FailurePolicy as FailurePolicy
from dagvisor.supervisor import GraphChanged as GraphChanged
from dagvisor.supervisor import GraphSnapshot as GraphSnapshot
from dagvisor.supervisor import Interruption as Interruption
from dagvisor.supervisor import Journal as Journal
from dagvisor.supervisor import JournaledRun as JournaledRun
from dagvisor.supervisor import Lineage as Lineage
from dagvisor.supervisor import Progress as Progress
from dagvisor.supervisor import Recovery as Recovery
from dagvisor.supervisor import RetainOutputs as RetainOutputs
from dagvisor.supervisor import Run as Run
from dagvisor.supervisor import RunEvent as RunEvent
from dagvisor.supervisor import RunResult as RunResult
from dagvisor.supervisor import RunStats as RunStats
from dagvisor.supervisor import RunStatus as RunStatus
from dagvisor.supervisor import Runtime as Runtime
from dagvisor.supervisor import StageFinished as StageFinished
from dagvisor.supervisor import StageLatency as StageLatency
from dagvisor.supervisor import StageOutput as StageOutput
from dagvisor.supervisor import StageQueued as StageQueued
from dagvisor.supervisor import StageStarted as StageStarted
from dagvisor.supervisor import StageTiming as StageTiming
from dagvisor.supervisor import Undecoded as Undecoded
from dagvisor.supervisor import runtime as runtime

__version__ = "0.1.0"

# Quiet unless the application configures logging (the library convention).
_logging.getLogger("dagvisor").addHandler(_logging.NullHandler())

__all__ = [
    "NO_ITEM",
    "Attempt",
    "AuditLog",
    "AuditRecord",
    "ChangeBatch",
    "ChangeKind",
    "Codec",
    "ConsumedOutput",
    "DaskExecutor",
    "DaskStatistics",
    "DataCodec",
    "Event",
    "EventStream",
    "EventsLost",
    "Executor",
    "ExecutorChoice",
    "FailurePolicy",
    "GraphChanged",
    "GraphSnapshot",
    "Interruption",
    "Journal",
    "JournaledRun",
    "JsonCodec",
    "Lineage",
    "PickleCodec",
    "Pipeline",
    "Progress",
    "Recovery",
    "RetainOutputs",
    "Run",
    "RunEvent",
    "RunResult",
    "RunStats",
    "RunStatus",
    "Runtime",
    "StageContext",
    "StageFinished",
    "StageFunction",
    "StageLatency",
    "StageOutput",
    "StageQueued",
    "StageRef",
    "StageRegistry",
    "StageSpec",
    "StageStarted",
    "StageState",
    "StageTiming",
    "StageView",
    "StreamItem",
    "StreamedPipeline",
    "Trigger",
    "Undecoded",
    "compose",
    "default_registry",
    "errors",
    "runtime",
    "stage",
]
