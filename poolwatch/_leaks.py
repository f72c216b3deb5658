"""Where a request was made: the call site recorded for every response, so a
body that is never drained or closed can be traced to the code that owns it
(R6)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, NamedTuple

__all__ = ["CallSite", "OpenBody", "capture_call_site", "skip_module_directory"]

# Frames in these directories are library code, not the caller's: the call
# site is the first frame outside them. Adapters add their client library.
# The demo and the command line are poolwatch's own users, so not skipped.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_DIRS: list[str] = [
    os.path.join(_PACKAGE_DIR, sub) + os.sep for sub in ("_sync", "_async", "adapters")
]


# The event loop's own frames, under the caller's (asyncio runs a
# coroutine from them): never shown, nor counted in the depth.
_LOOP_DIR = os.path.join(os.path.dirname(os.path.abspath(os.__file__)), "asyncio") + os.sep


def skip_module_directory(path: str) -> None:
    """Treat frames under ``path`` (a package directory) as library code."""
    directory = os.path.dirname(os.path.abspath(path)) + os.sep
    if directory not in _SKIPPED_DIRS:
        _SKIPPED_DIRS.append(directory)


class CallSite:
    """A short stack of the caller's frames, innermost first.

    Capturing keeps only code objects and line numbers (no frame, so no
    locals stay alive); file and function names are looked up when the call
    site is shown, which happens only for the few bodies that are reported.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: tuple[tuple[CodeType | _Code, int], ...]) -> None:
        self._raw = raw

    def __reduce__(self) -> tuple[Any, ...]:
        # Code objects cannot be pickled: a copy (for a leak_detected event
        # sent to another process) keeps the names only.
        return (_from_frames, (self.frames,))

    @property
    def frames(self) -> tuple[tuple[str, int, str], ...]:
        """``(filename, line number, function name)`` for each frame."""
        return tuple((code.co_filename, line, code.co_name) for code, line in self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallSite) and self.frames == other.frames

    def __hash__(self) -> int:
        return hash(self.frames)

    def __repr__(self) -> str:
        return f"CallSite({self.frames!r})"

    def __str__(self) -> str:
        if not self._raw:
            return "<unknown>"
        code, line = self._raw[0]
        return f"{code.co_filename}:{line} in {code.co_name}"

    def format(self) -> str:
        """Every recorded frame, one per line, innermost first."""
        return "\n".join(f"  {f}:{n} in {fn}" for f, n, fn in self.frames)


class _Code(NamedTuple):
    """What a call site reads of a code object, for one rebuilt from a copy."""

    co_filename: str
    co_name: str


def _from_frames(frames: tuple[tuple[str, int, str], ...]) -> CallSite:
    """A call site unpickled, from its frames."""
    return CallSite(tuple((_Code(name, function), line) for name, line, function in frames))


_UNKNOWN = CallSite(())


def capture_call_site(depth: int) -> CallSite:
    """The first ``depth`` frames of the stack outside poolwatch and the HTTP
    client libraries. Cheap: walks frames and formats nothing."""
    if depth <= 0:
        return _UNKNOWN
    frame: FrameType | None = sys._getframe(1)
    skipped = tuple(_SKIPPED_DIRS)
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame = frame.f_back
    raw: list[tuple[CodeType, int]] = []
    while frame is not None and len(raw) < depth:
        if not frame.f_code.co_filename.startswith(_LOOP_DIR):
            raw.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    return CallSite(tuple(raw))


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
