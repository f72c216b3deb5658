"""Where a request was made: the call site recorded for every response, so a
body that is never drained or closed can be traced to the code that owns it
(R6)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import FrameType

__all__ = ["CallSite", "OpenBody", "capture_call_site", "skip_module_directory"]

# Frames in these directories are library code, not the caller's: the call
# site is the first frame outside them. Adapters add their client library.
# The demo and the command line are poolwatch's own users, so not skipped.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_DIRS: list[str] = [
    os.path.join(_PACKAGE_DIR, sub) + os.sep for sub in ("_sync", "_async", "adapters")
]


def skip_module_directory(path: str) -> None:
    """Treat frames under ``path`` (a package directory) as library code."""
    directory = os.path.dirname(os.path.abspath(path)) + os.sep
    if directory not in _SKIPPED_DIRS:
        _SKIPPED_DIRS.append(directory)


@dataclass(frozen=True)
class CallSite:
    """A short stack of the caller's frames, innermost first:
    ``(filename, line number, function name)`` each."""

    frames: tuple[tuple[str, int, str], ...]

    def __str__(self) -> str:
        if not self.frames:
            return "<unknown>"
        filename, lineno, function = self.frames[0]
        return f"{filename}:{lineno} in {function}"

    def format(self) -> str:
        """Every recorded frame, one per line, innermost first."""
        return "\n".join(f"  {f}:{n} in {fn}" for f, n, fn in self.frames)


_UNKNOWN = CallSite(())


def capture_call_site(depth: int) -> CallSite:
    """The first ``depth`` frames of the stack outside poolwatch and the HTTP
    client libraries. Cheap: walks frames without formatting them."""
    if depth <= 0:
        return _UNKNOWN
    frame: FrameType | None = sys._getframe(1)
    skipped = tuple(_SKIPPED_DIRS)
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame = frame.f_back
    frames: list[tuple[str, int, str]] = []
    while frame is not None and len(frames) < depth:
        code = frame.f_code
        frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    return CallSite(tuple(frames))


@dataclass(frozen=True)
class OpenBody:
    """A response whose body is still checked out: neither read to the end
    nor closed. ``age`` is in seconds since the response head arrived."""

    method: str
    url: str
    status: int
    age: float
    call_site: CallSite
    connection_id: int
