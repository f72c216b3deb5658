"""A chunked response body's framing taken off (RFC 9112 section 7.1), with
no I/O: as h11 reads it, a chunk at a time, at a fraction of h11's cost per
chunk (several microseconds, which small chunks multiply).

What h11 accepts is accepted, and what it refuses refused with its
messages: a chunk size of 1 to 20 hex digits, any extension after ``;``
(ignored), spaces or tabs before the line's CRLF, the CRLF after each
chunk's data, and trailer field lines (checked, then dropped: poolwatch
never hands them over) to the blank line that ends them. Bad framing
raises ``h11.RemoteProtocolError``.
"""

from __future__ import annotations

import re

import h11

__all__ = ["ChunkedBody"]

_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*").fullmatch
# h11's header field line, and a continuation of one (obsolete line folding).
_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*"
_FIELD_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[ \t]*" + _VALUE).fullmatch
_FOLDED_LINE = re.compile(rb"[ \t]+" + _VALUE).fullmatch

# Where the decoder is: before a chunk's size line, in its data, before the
# CRLF after its data, in the trailer, or past the end.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedBody:
    """The state of one chunked body being read."""

    __slots__ = ("_fields", "_left", "_line_limit", "_state", "_trailer_size")

    def __init__(self, line_limit: int) -> None:
        self._state = _SIZE
        self._left = 0  # data bytes of the current chunk still to come
        self._line_limit = line_limit  # for a size line, and the trailer
        self._trailer_size = 0
        self._fields = 0  # trailer field lines so far

    @property
    def done(self) -> bool:
        """Whether the body has ended (the trailer's blank line read)."""
        return self._state == _DONE

    def take(self, buffer: bytes, pos: int) -> tuple[bytes, int]:
        """The body bytes in ``buffer`` from ``pos`` on, their framing taken
        off, and the position after what was used: what there is of the
        next chunk (a chunk at a time, as h11 hands them over and requests
        users iterate them), or ``b""`` if ``buffer`` ends first, or the
        body does (see :attr:`done`)."""
        state, left = self._state, self._left
        size = len(buffer)
        data = b""
        while pos < size and state != _DONE:
            if state == _DATA:
                end = min(pos + left, size)
                data = buffer if pos == 0 and end == size else buffer[pos:end]
                left -= end - pos
                pos = end
                if not left:
                    state = _DATA_END
                break
            if state == _DATA_END:
                footer = buffer[pos : pos + 2]
                if footer != b"\r\n"[: len(footer)]:
                    raise h11.RemoteProtocolError(
                        f"malformed chunk footer: {footer!r} (expected b'\\r\\n')"
                    )
                if len(footer) < 2:
                    break
                pos += 2
                state = _SIZE
            elif state == _SIZE:
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > self._line_limit:
                        raise h11.RemoteProtocolError("chunk size line too long")
                    break
                match = _SIZE_LINE(buffer, pos, end)
                if match is None:
                    raise h11.RemoteProtocolError(f"illegal chunk header: {buffer[pos:end]!r}")
                left = int(match[1], 16)
                pos = end + 2
                state = _DATA if left else _TRAILER
            else:  # the trailer: field lines, then a blank one
                end = buffer.find(b"\n", pos)
                if end < 0:
                    if self._trailer_size + size - pos > self._line_limit:
                        raise h11.RemoteProtocolError("chunked trailer too long")
                    break
                line = buffer[pos : end - 1 if end > pos and buffer[end - 1] == 13 else end]
                self._trailer_size += end + 1 - pos
                if self._trailer_size > self._line_limit:
                    raise h11.RemoteProtocolError("chunked trailer too long")
                pos = end + 1
                if not line:
                    state = _DONE
                else:
                    self._check_field(line)
        self._state, self._left = state, left
        return data, pos

    def _check_field(self, line: bytes) -> None:
        """Refuse a trailer line h11 would refuse."""
        if line[0] in b" \t":
            if not self._fields:
                raise h11.RemoteProtocolError("continuation line at start of headers")
            if _FOLDED_LINE(line) is None:
                raise h11.RemoteProtocolError(f"illegal header line: {line!r}")
        elif _FIELD_LINE(line) is None:
            raise h11.RemoteProtocolError(f"illegal header line: {line!r}")
        self._fields += 1
