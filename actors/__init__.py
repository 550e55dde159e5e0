"""Stages, pipelines, the stage actor and what a stage sees.

Installed as ``dagvisor.actors``. Depends on nothing else in dagvisor. Its
public names are the ones `dagvisor` re-exports; everything else lives in
private modules (``_spec``, ``_actor``, ...), for the supervisor's use.
"""

from ._codec import Codec as Codec
from ._codec import JsonCodec as JsonCodec
from ._codec import PickleCodec as PickleCodec
from ._context import NO_ITEM as NO_ITEM
from ._context import StageContext as StageContext
from ._dask import DaskExecutor as DaskExecutor
from ._dask import DaskStatistics as DaskStatistics
from ._datacodec import DataCodec as DataCodec
from ._declare import stage as stage
from ._errors import CycleError as CycleError
from ._errors import DagvisorError as DagvisorError
from ._errors import DuplicateStageError as DuplicateStageError
from ._errors import InternalError as InternalError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import InvalidSignalError as InvalidSignalError
from ._errors import InvalidStageError as InvalidStageError
from ._errors import MissingExtraError as MissingExtraError
from ._errors import NoJsonFormError as NoJsonFormError
from ._errors import RunClosedError as RunClosedError
from ._errors import RunFailed as RunFailed
from ._errors import RunFailedError as RunFailedError
from ._errors import StageStateError as StageStateError
from ._errors import TokenFileError as TokenFileError
from ._errors import UnknownLimitError as UnknownLimitError
from ._errors import UnknownStageError as UnknownStageError
from ._executors import Executor as Executor
from ._executors import StageView as StageView
from ._journal_errors import JournalError as JournalError
from ._journal_errors import JournalWriteError as JournalWriteError
from ._journal_errors import LeaseLostError as LeaseLostError
from ._journal_errors import NotRestorableError as NotRestorableError
from ._journal_errors import OutputTooLargeError as OutputTooLargeError
from ._journal_errors import RecordedError as RecordedError
from ._journal_errors import RunOwnedError as RunOwnedError
from ._journal_errors import UnknownRunError as UnknownRunError
from ._messages import ChangeKind as ChangeKind
from ._pipeline import Pipeline as Pipeline
from ._pipeline import StageRef as StageRef
from ._pipeline import StreamedPipeline as StreamedPipeline
from ._pipeline import StreamItem as StreamItem
from ._pipeline import compose as compose
from ._registry import StageRegistry as StageRegistry
from ._registry import default_registry as default_registry
from ._requests import ChangeBatch as ChangeBatch
from ._spec import ExecutorChoice as ExecutorChoice
from ._spec import StageFunction as StageFunction
from ._spec import StageSpec as StageSpec
from ._spec import Trigger as Trigger
from ._stage_errors import InvalidOutputError as InvalidOutputError
from ._stage_errors import MissingMainGuardError as MissingMainGuardError
from ._stage_errors import NotPicklableError as NotPicklableError
from ._stage_errors import ReadOnlyInputError as ReadOnlyInputError
from ._stage_errors import RemoteError as RemoteError
from ._stage_errors import ResourceCloseError as ResourceCloseError
from ._stage_errors import StageTimeoutError as StageTimeoutError
from ._state import StageState as StageState
