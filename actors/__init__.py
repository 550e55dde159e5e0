"""Stages, the stage actor, its context, and the messages actors send.

Installed as ``dagvisor.actors``. Depends on nothing else in dagvisor.
"""

from ._actor import run_stage as run_stage
from ._context import NO_ITEM as NO_ITEM
from ._context import Hooks as Hooks
from ._context import RunEnv as RunEnv
from ._context import Sentinel as Sentinel
from ._context import StageContext as StageContext
from ._context import add_edge_request as add_edge_request
from ._context import add_stage_request as add_stage_request
from ._context import ask as ask
from ._context import check_reason as check_reason
from ._context import expand_request as expand_request
from ._context import remove_stage_request as remove_stage_request
from ._context import replace_pending_request as replace_pending_request
from ._errors import CycleError as CycleError
from ._errors import DagvisorError as DagvisorError
from ._errors import DuplicateStageError as DuplicateStageError
from ._errors import InternalError as InternalError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import InvalidStageError as InvalidStageError
from ._errors import NotRestorableError as NotRestorableError
from ._errors import RunClosedError as RunClosedError
from ._errors import RunFailed as RunFailed
from ._errors import StageStateError as StageStateError
from ._errors import StageTimeoutError as StageTimeoutError
from ._errors import UnknownStageError as UnknownStageError
from ._messages import AddEdge as AddEdge
from ._messages import AddStage as AddStage
from ._messages import CancelRun as CancelRun
from ._messages import CancelStage as CancelStage
from ._messages import Expand as Expand
from ._messages import Message as Message
from ._messages import RemoveStage as RemoveStage
from ._messages import ReplacePending as ReplacePending
from ._messages import Request as Request
from ._messages import StageCancelled as StageCancelled
from ._messages import StageFailed as StageFailed
from ._messages import StageOutcome as StageOutcome
from ._messages import StagesEnded as StagesEnded
from ._messages import StageSkipped as StageSkipped
from ._messages import StageSucceeded as StageSucceeded
from ._pipeline import Pipeline as Pipeline
from ._pipeline import StageRef as StageRef
from ._pipeline import StreamedPipeline as StreamedPipeline
from ._pipeline import StreamItem as StreamItem
from ._pipeline import compose as compose
from ._pipeline import ref_names as ref_names
from ._spec import StageSpec as StageSpec
from ._spec import Trigger as Trigger
from ._spec import stage as stage
from ._state import StageState as StageState
