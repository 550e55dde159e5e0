"""The live graph, the GraphSupervisor actor, the journal and `runtime()`.

Installed as ``dagvisor.supervisor``. Imports `dagvisor.actors`, never the
reverse. Its public names are the ones `dagvisor` re-exports; everything
else lives in private modules.
"""

from . import _export, _report  # noqa: F401  # they register how results are drawn
from ._audit import AuditLog as AuditLog
from ._audit import AuditRecord as AuditRecord
from ._events import Event as Event
from ._events import EventsLost as EventsLost
from ._events import EventStream as EventStream
from ._events import GraphChanged as GraphChanged
from ._events import RunEvent as RunEvent
from ._events import StageFinished as StageFinished
from ._events import StageQueued as StageQueued
from ._events import StageStarted as StageStarted
from ._journal import Journal as Journal
from ._journal_rows import JournaledRun as JournaledRun
from ._monitor import Progress as Progress
from ._open import runtime as runtime
from ._options import FailurePolicy as FailurePolicy
from ._replay import Undecoded as Undecoded
from ._result import Attempt as Attempt
from ._result import ConsumedOutput as ConsumedOutput
from ._result import Interruption as Interruption
from ._result import Lineage as Lineage
from ._result import RunResult as RunResult
from ._result import RunStatus as RunStatus
from ._resume import Recovery as Recovery
from ._retention import RetainOutputs as RetainOutputs
from ._run import Run as Run
from ._runtime import Runtime as Runtime
from ._snapshot import GraphSnapshot as GraphSnapshot
from ._stage_read import StageOutput as StageOutput
from ._stats import RunStats as RunStats
from ._stats import StageLatency as StageLatency
from ._stats import StageTiming as StageTiming
