"""HTTP/1.1 message heads on the wire, the common case done without h11.

Most responses a client sees are plain: ``HTTP/1.1``, a final status, a few
well-formed header lines, a ``Content-Length``. :func:`parse_plain_head`
reads such a head line by line, judging each line with a regular expression
the first time it is seen and from memory after that (most lines repeat from
one response to the next). It declines anything else (interim responses,
``Transfer-Encoding``, HTTP/1.0, a body read until the server closes, a
head not yet complete, obsolete line folding, a character h11 would
refuse), which then goes through h11 as before. A ``Connection: close`` is
noted on the head (:attr:`Head.closes`), read as h11 reads it: a ``close``
token among the header's comma-separated values. Declining is always safe; accepting is only
allowed for heads h11 would read the same way, so the character rules below
are h11's own (RFC 9110 section 5.5, RFC 9112 sections 4 and 5).

:func:`plain_request_head` is the matching writer: the request line and the
header lines of a request whose headers need no normalisation, in the order
h11 writes them (``Host`` first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

__all__ = [
    "Head",
    "closes_connection",
    "is_field_value",
    "is_target",
    "is_token",
    "parse_plain_head",
    "plain_request_head",
]

# token = 1*tchar (RFC 9110 section 5.6.2)
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
# field-value: visible characters and obs-text, with single spaces or tabs
# only between them (leading and trailing whitespace is not part of it).
_FIELD_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"

is_token = re.compile(_TOKEN).fullmatch
is_field_value = re.compile(_FIELD_VALUE).fullmatch
is_target = re.compile(rb"[\x21-\x7e]+").fullmatch

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: ((?:[ \t]|[^\x00\s])*))?").fullmatch
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*").fullmatch
# Longer than any length poolwatch could be sent; h11 allows 20 digits.
_MAX_LENGTH_DIGITS = 18


class Head:
    """A response head: status, reason, version and header lines."""

    __slots__ = (
        "_lowered",
        "closes",
        "content_length",
        "http_version",
        "raw_headers",
        "reason",
        "status_code",
    )

    def __init__(
        self,
        status_code: int,
        reason: bytes,
        http_version: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        lowered: list[tuple[bytes, bytes]] | None = None,
        closes: bool = False,
    ) -> None:
        self.status_code = status_code
        self.reason = reason
        self.http_version = http_version  # b"1.1" or b"1.0"
        #: The header lines as received: name and value bytes, in order.
        self.raw_headers = raw_headers
        #: The declared body length, or ``None`` if the body is not
        #: length-delimited (``Transfer-Encoding``, or read until close).
        self.content_length = content_length
        #: Whether the server said ``Connection: close``.
        self.closes = closes
        self._lowered = lowered

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The header lines with lower-case names."""
        lowered = self._lowered
        if lowered is None:
            lowered = self._lowered = [(name.lower(), value) for name, value in self.raw_headers]
        return lowered

    def __repr__(self) -> str:
        return f"<Head {self.status_code} {self.reason!r} HTTP/{self.http_version.decode()}>"


def parse_plain_head(data: bytes, limit: int) -> tuple[Head, int] | None:
    """The plain response head at the start of ``data`` and the offset of the
    first byte after it, or ``None`` if the head is anything but plain (see
    the module docstring) or is longer than ``limit`` bytes."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > limit:
        return None
    lines = data[:end].split(b"\r\n")
    status = _status_line(lines[0])
    if status is None:
        return None
    raw_headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    closes = False
    for line in lines[1:]:
        field = _LINES.get(line) or _header_line(line)
        if field is _DECLINE:
            return None
        name, value, declared, close = field
        if declared is not None:
            if length is not None:
                return None  # a second Content-Length: h11's case
            length = declared
        closes = closes or close
        raw_headers.append((name, value))
    code, reason = status
    if length is None and code not in (204, 304):
        return None  # a body read until the server closes: h11's case
    head = Head(code, reason, b"1.1", raw_headers, length, closes=closes)
    return head, end + 4


def closes_connection(value: bytes) -> bool:
    """Whether a ``Connection`` header value holds the ``close`` token."""
    return any(token.strip(b" \t").lower() == b"close" for token in value.split(b","))


# Most responses repeat most of their lines (the status line, Server,
# Content-Type, Connection, even Content-Length): each line is judged once
# and remembered, bounded, as the name, the value, the declared length and
# whether it closes the connection (or _DECLINE for a line that sends the
# whole head to h11). Set-Cookie lines are not kept: they carry session
# secrets, and rarely repeat.
_Field = tuple[bytes, bytes, "int | None", bool]
_DECLINE: _Field = (b"", b"", None, False)
_LINES: dict[bytes, _Field] = {}
_STATUSES: dict[bytes, tuple[int, bytes] | None] = {}
_CACHE_MAX = 1024
_CACHED_LINE_MAX = 256  # longer lines are judged every time


def _status_line(line: bytes) -> tuple[int, bytes] | None:
    try:
        return _STATUSES[line]
    except KeyError:
        pass  # not seen yet
    match = _STATUS_LINE(line)
    status = None if match is None else (int(match[1]), match[2] or b"")
    _remember(_STATUSES, line, status)
    return status


def _header_line(line: bytes) -> _Field:
    field = _HEADER_LINE(line)
    if field is None:
        judged = _DECLINE  # obsolete folding, a bare CR or LF, a bad character
    else:
        name, value = field.groups()
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                judged = _DECLINE
            else:
                judged = (name, value, int(value), False)
        elif lowered == b"transfer-encoding":
            judged = _DECLINE
        else:
            close = lowered == b"connection" and closes_connection(value)
            judged = (name, value, None, close)
            if lowered == b"set-cookie":
                return judged
    _remember(_LINES, line, judged)
    return judged


_T = TypeVar("_T")


def _remember(cache: dict[bytes, _T], line: bytes, judged: _T) -> None:
    if len(line) <= _CACHED_LINE_MAX:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[line] = judged


def plain_request_head(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The request line and header lines, ``Host`` first, as h11 writes them.
    The caller has checked every part (:func:`is_token`,
    :func:`is_field_value`, :func:`is_target`)."""
    host = b""
    lines = [method, b" ", target, b" HTTP/1.1\r\n", b""]
    for name, value in headers:
        if host == b"" and name.lower() == b"host":
            host = name + b": " + value + b"\r\n"
        else:
            lines += (name, b": ", value, b"\r\n")
    lines[4] = host
    lines.append(b"\r\n")
    return b"".join(lines)
