"""Every error dagvisor raises; all derive from `DagvisorError`."""

from dagvisor.actors import CycleError as CycleError
from dagvisor.actors import DagvisorError as DagvisorError
from dagvisor.actors import DuplicateStageError as DuplicateStageError
from dagvisor.actors import InternalError as InternalError
from dagvisor.actors import InvalidOutputError as InvalidOutputError
from dagvisor.actors import InvalidRequestError as InvalidRequestError
from dagvisor.actors import InvalidSignalError as InvalidSignalError
from dagvisor.actors import InvalidStageError as InvalidStageError
from dagvisor.actors import JournalError as JournalError
from dagvisor.actors import JournalWriteError as JournalWriteError
from dagvisor.actors import LeaseLostError as LeaseLostError
from dagvisor.actors import MissingExtraError as MissingExtraError
from dagvisor.actors import MissingMainGuardError as MissingMainGuardError
from dagvisor.actors import NoJsonFormError as NoJsonFormError
from dagvisor.actors import NotPicklableError as NotPicklableError
from dagvisor.actors import NotRestorableError as NotRestorableError
from dagvisor.actors import OutputTooLargeError as OutputTooLargeError
from dagvisor.actors import ReadOnlyInputError as ReadOnlyInputError
from dagvisor.actors import RecordedError as RecordedError
from dagvisor.actors import RemoteError as RemoteError
from dagvisor.actors import ResourceCloseError as ResourceCloseError
from dagvisor.actors import RunClosedError as RunClosedError
from dagvisor.actors import RunFailed as RunFailed
from dagvisor.actors import RunFailedError as RunFailedError
from dagvisor.actors import RunOwnedError as RunOwnedError
from dagvisor.actors import StageStateError as StageStateError
from dagvisor.actors import StageTimeoutError as StageTimeoutError
from dagvisor.actors import TokenFileError as TokenFileError
from dagvisor.actors import UnknownLimitError as UnknownLimitError
from dagvisor.actors import UnknownRunError as UnknownRunError
from dagvisor.actors import UnknownStageError as UnknownStageError

__all__ = [
    "CycleError",
    "DagvisorError",
    "DuplicateStageError",
    "InternalError",
    "InvalidOutputError",
    "InvalidRequestError",
    "InvalidSignalError",
    "InvalidStageError",
    "JournalError",
    "JournalWriteError",
    "LeaseLostError",
    "MissingExtraError",
    "MissingMainGuardError",
    "NoJsonFormError",
    "NotPicklableError",
    "NotRestorableError",
    "OutputTooLargeError",
    "ReadOnlyInputError",
    "RecordedError",
    "RemoteError",
    "ResourceCloseError",
    "RunClosedError",
    "RunFailed",
    "RunFailedError",
    "RunOwnedError",
    "StageStateError",
    "StageTimeoutError",
    "TokenFileError",
    "UnknownLimitError",
    "UnknownRunError",
    "UnknownStageError",
]
