"""Every error dagvisor raises; all derive from `DagvisorError`."""

from dagvisor.actors import CycleError as CycleError
from dagvisor.actors import DagvisorError as DagvisorError
from dagvisor.actors import DuplicateStageError as DuplicateStageError
from dagvisor.actors import InternalError as InternalError
from dagvisor.actors import InvalidRequestError as InvalidRequestError
from dagvisor.actors import InvalidStageError as InvalidStageError
from dagvisor.actors import NotPicklableError as NotPicklableError
from dagvisor.actors import NotRestorableError as NotRestorableError
from dagvisor.actors import RunClosedError as RunClosedError
from dagvisor.actors import RunFailed as RunFailed
from dagvisor.actors import StageStateError as StageStateError
from dagvisor.actors import StageTimeoutError as StageTimeoutError
from dagvisor.actors import UnknownStageError as UnknownStageError

__all__ = [
    "CycleError",
    "DagvisorError",
    "DuplicateStageError",
    "InternalError",
    "InvalidRequestError",
    "InvalidStageError",
    "NotPicklableError",
    "NotRestorableError",
    "RunClosedError",
    "RunFailed",
    "StageStateError",
    "StageTimeoutError",
    "UnknownStageError",
]
