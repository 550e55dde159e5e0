"""What the ``dagvisor`` command writes, and how it writes it.

* stdout and stderr, while a command runs (`console`): any text is printed
  (a lone surrogate or a character the terminal's encoding lacks as its
  escape, whatever the locale or ``PYTHONIOENCODING``; control characters
  other than newline and tab as ``\\x1b`` so a name cannot drive the
  terminal), and a reader that goes away (``dagvisor runs | head -1``)
  ends the output quietly: the command finishes with its own exit status.
* files (`write_file`): written whole or not at all, through a temporary
  file in the same directory renamed over the target.
* commands printed for pasting (`shell_command`): quoted for a POSIX shell;
  an argument holding a line break, a control or format character, or
  bytes that are not UTF-8 is written in bash's ``$'...'`` form instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["Output", "console", "one_line", "raw_stream", "shell_command", "write_file"]

# Controls but newline and tab, as the escape Python would write for them.
_CONTROLS = {
    code: f"\\x{code:02x}"
    for code in (*range(32), *range(127, 160))
    if code not in (9, 10)
}
_CONTROLS_AND_BREAKS = {**_CONTROLS, 9: "\\t", 10: "\\n"}


def one_line(text: str) -> str:
    """``text`` on one line: every control character, newlines too, as its escape."""
    return text.translate(_CONTROLS_AND_BREAKS)


class _Outlet(io.TextIOBase):
    """stdout or stderr for a command: safe text, quiet about a closed pipe."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.closed_pipe = False
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            shown = text.translate(_CONTROLS)
            try:
                try:
                    self.stream.write(shown)
                except UnicodeEncodeError:  # a stream that could not be made lenient
                    encoding = self.stream.encoding or "utf-8"
                    self.stream.write(
                        shown.encode(encoding, "backslashreplace").decode(encoding)
                    )
            except OSError as exc:
                self._stop(exc)
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except OSError as exc:
                self._stop(exc)

    def _stop(self, error: OSError) -> None:
        """Nothing more can be written: send the rest, buffered output too, to devnull.

        Python's recipe for a closed pipe (the ``signal`` module's notes):
        without it, flushing the buffer at exit fails again and Python prints
        a traceback and exits 120. Another write error (a full disk) is kept
        for the command to report once it has ended.
        """
        self.closed_pipe = True
        if not isinstance(error, BrokenPipeError):
            self.error = error
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase types it loosely
        return self.stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]  # as above
        return self.stream.errors


def _lenient(stream: TextIO | None) -> tuple[TextIO | None, str | None]:
    """Make ``stream`` write unencodable characters as escapes; its old setting."""
    if stream is None or not isinstance(stream, io.TextIOWrapper):
        return stream, None
    before = stream.errors
    with contextlib.suppress(ValueError, OSError):  # a closed or odd stream
        stream.reconfigure(errors="backslashreplace")
    return stream, before


class Output:
    """What became of a command's output (see `console`)."""

    def __init__(self) -> None:
        self.error: OSError | None = None
        """The first write error other than a closed pipe (a full disk), if any."""


@contextlib.contextmanager
def console() -> Iterator[Output]:
    """Route stdout and stderr through outlets for the block (see the module doc).

    Writing never raises: a closed pipe silences the rest of the output,
    another write error (a full disk) too, and is kept in the `Output`
    yielded, for the caller to report when the block has ended.
    """
    saved = sys.stdout, sys.stderr
    out, out_errors = _lenient(sys.stdout)
    err, err_errors = _lenient(sys.stderr)
    outlets = [_Outlet(stream) if stream is not None else None for stream in (out, err)]
    if outlets[0] is not None:
        sys.stdout = cast("TextIO", outlets[0])
    if outlets[1] is not None:
        sys.stderr = cast("TextIO", outlets[1])
    state = Output()
    try:
        yield state
    finally:
        for outlet in outlets:
            if outlet is not None:
                outlet.flush()
                state.error = state.error or outlet.error
        sys.stdout, sys.stderr = saved
        for stream, errors in ((out, out_errors), (err, err_errors)):
            if isinstance(stream, io.TextIOWrapper) and errors is not None:
                with contextlib.suppress(ValueError, OSError):
                    stream.reconfigure(errors=errors)


def raw_stream(stream: TextIO) -> TextIO:
    """The stream under an outlet (for a live display that writes escapes)."""
    return stream.stream if isinstance(stream, _Outlet) else stream


def write_file(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path``, whole or not at all; the path written.

    The text goes to a temporary file beside the target, is synced, and is
    renamed over it: a reader sees the old file or the new one, never a part,
    and a failure leaves the target as it was. A lone surrogate is written as
    its escape. A symbolic link is followed: the file it names is replaced.
    What is not a regular file (``/dev/stdout``, a FIFO) is written as it is.

    Raises:
        OSError: the directory is missing or not writable, the target is a
            directory, or the disk is full.
    """
    data = text.encode("utf-8", "backslashreplace")
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        # /dev/stdout, a FIFO: written as it is, nothing renamed over it.
        with open(path, "wb") as stream:
            stream.write(data)
        return Path(path)
    target = Path(os.path.realpath(path))
    if target.is_dir():
        msg = f"{os.fspath(path)} is a directory; give the name of a file"
        raise IsADirectoryError(msg)
    if not target.parent.is_dir():
        msg = f"cannot write {os.fspath(path)}: its directory does not exist"
        raise FileNotFoundError(msg)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    descriptor, temporary = tempfile.mkstemp(
        prefix=".dagvisor-", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return Path(path)


def _shell_quote(argument: str) -> str:
    if argument.replace("\t", " ").isprintable():
        return shlex.quote(argument)
    # A line break, a control or format character (a bidi override), bytes
    # that are not UTF-8 in a path: printed as they are, these would break
    # the line or hide what runs. bash, zsh and ksh's $'...' with each byte
    # outside printable ASCII as \xNN (POSIX sh has no such quoting).
    try:
        data = os.fsencode(argument)
    except UnicodeEncodeError:
        data = argument.encode("utf-8", "backslashreplace")
    quoted = []
    for byte in data:
        char = chr(byte)
        if char in "'\\":
            quoted.append("\\" + char)
        elif 32 <= byte < 127:
            quoted.append(char)
        else:
            quoted.append(f"\\x{byte:02x}")
    return "$'" + "".join(quoted) + "'"


def shell_command(arguments: Iterable[str]) -> str:
    """A command line that a shell runs as these ``arguments``, for pasting."""
    return " ".join(_shell_quote(argument) for argument in arguments)
