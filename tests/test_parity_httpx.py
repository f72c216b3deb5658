"""Parity with httpx's own transport: every case runs through a stock
``httpx.Client`` and through ``httpx.Client(transport=poolwatch.HTTPXTransport(...))``
(each made with the same arguments), and what the user sees must be the
same: status, headers, bytes, decoded content, cookies, redirects,
streaming, uploads, auth, the exception type raised, the warnings, and what
the server received (README: "everything else stays as it was")."""

from __future__ import annotations

import asyncio
import gzip
import io
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest

import poolwatch
from poolwatch.adapters.httpx import AsyncHTTPXTransport, HTTPXTransport
from tests.parity_support import (
    BAD_CHUNK_SIZE,
    BIG_UPLOAD,
    BYTES_AFTER_BODY,
    CUSTOM_REASON,
    ENCODINGS,
    GARBAGE,
    HEADER_WITHOUT_COLON,
    HTTP10_KEEP_ALIVE,
    HTTP10_TO_CLOSE,
    HTTP11_TO_CLOSE,
    INTERIM_100,
    INTERIM_103,
    LATIN_1_HEADER,
    LINES,
    MISSING,
    NO_REASON,
    OK,
    PASSWORD,
    POOLWATCH,
    SHORT,
    TEXT,
    TRUNCATED_CHUNKED,
    TRUNCATED_LENGTH,
    TRUNCATED_STREAM,
    USER,
    Case,
    Certs,
    Env,
    Observation,
    Run,
    ScriptedServer,
    assert_parity,
    differs,
    hang_up_after_head,
    inspected,
    observe_both,
    reply_and_close,
    reply_and_wait,
    reply_each,
    serve_backlog,
    serve_raw,
    serve_refused,
    serve_silent_tls,
    serve_tls,
    table,
    visible_headers,
)

Client = httpx.Client
T = TypeVar("T")


@contextmanager
def open_client(flavour: str, options: dict[str, Any]) -> Iterator[Client]:
    """A stock client, or one over poolwatch's transport, made with the
    same transport ``options``; closed at the end (which closes the
    transport)."""
    if flavour == POOLWATCH:
        client = httpx.Client(transport=HTTPXTransport(**options))
    elif options:
        client = httpx.Client(transport=httpx.HTTPTransport(**options))
    else:
        client = httpx.Client()
    with client:
        yield client


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The test CA and its certificates, made once for the module."""
    return Certs(tmp_path_factory.mktemp("certs"))


def test_http2_is_refused() -> None:
    """poolwatch speaks HTTP/1.1 only: asking for HTTP/2 is a ValueError at
    construction, not a silent downgrade (README, known differences)."""
    assert poolwatch.HTTPXTransport is HTTPXTransport  # the public name
    with pytest.raises(ValueError, match=r"HTTP/1\.1 only"):
        HTTPXTransport(http2=True)


# -- what a user sees ------------------------------------------------------------


def seen(resp: httpx.Response) -> Observation:
    """A read response as its user sees it."""
    raw = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in resp.headers.raw]
    return {
        "status": resp.status_code,
        "reason": resp.reason_phrase,
        "version": resp.http_version,
        "headers": visible_headers(resp.headers.multi_items()),
        "raw_headers": visible_headers(raw),
        "content": resp.content,
        "encoding": resp.encoding,
        "url": str(resp.url),
        "history": [(r.status_code, str(r.url)) for r in resp.history],
        "downloaded": resp.num_bytes_downloaded,
    }


def jar(client: Client) -> list[tuple[Any, ...]]:
    """The client's cookies with their attributes."""
    cookies = client.cookies.jar
    return sorted((c.name, c.value, c.domain, c.path, c.secure) for c in cookies)


def fetch(path: str, method: str = "GET", **kwargs: Any) -> Run[Client]:
    """One request; everything about its response."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        obs.update(seen(c.request(method, env.url(path), **kwargs)))

    return run


def body(path: str) -> Run[Client]:
    """One GET: its status, then its body."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        with c.stream("GET", env.url(path)) as resp:
            obs["status"] = resp.status_code
            obs["content"] = resp.read()

    return run


def steps(*paths: str, **kwargs: Any) -> Run[Client]:
    """GETs in turn: each status and body, then the cookie jar."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        obs["steps"] = []
        for path in paths:
            resp = c.get(env.url(path), **kwargs)
            obs["steps"].append((resp.status_code, resp.content))
        obs["cookies"] = jar(c)

    return run


def case(name: str, run: Run[Client], expect: dict[str, Any], **options: Any) -> Case[Client]:
    """A row of the table (see :class:`Case` for ``options``)."""
    return Case[Client](name, run, expect, **options)


def ok(content: bytes, **more: Any) -> dict[str, Any]:
    """Expect a 200 with ``content`` (and ``more``)."""
    return {"status": 200, "content": content, **more}


def error(kind: type[BaseException]) -> dict[str, Any]:
    """Expect an exception of exactly this type."""
    return {"error": kind}


def digest(method: str, password: str, **kwargs: Any) -> Run[Client]:
    """A request with digest authentication; the auth object (which keeps
    the server's nonce) is made per run."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        auth = httpx.DigestAuth(USER, password)
        obs.update(seen(c.request(method, env.url("/digest"), auth=auth, **kwargs)))

    return run


def mixed_headers(c: Client, env: Env, obs: Observation) -> None:
    resp = c.get(env.url("/headers"))
    obs.update(seen(resp))
    obs["multi"] = resp.headers.get_list("x-multi")


def stale_after_server_close(c: Client, env: Env, obs: Observation) -> None:
    """The server closes a kept-alive connection; the next request, sent
    once the server is done with it, gets a new connection."""
    obs["first"] = c.get(env.url("/first")).content
    assert cast(ScriptedServer, env.server).wait_handlers_done(1)
    obs["second"] = c.get(env.url("/second")).content


# -- streaming -----------------------------------------------------------------


def chunk_sizes(path: str, size: int | None, via: str = "iter_bytes") -> Run[Client]:
    """iter_bytes or iter_raw with ``size``: the size of each chunk."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        with c.stream("GET", env.url(path)) as resp:
            chunks = resp.iter_raw(size) if via == "iter_raw" else resp.iter_bytes(size)
            obs["chunks"] = [len(chunk) for chunk in chunks]

    return run


def joined(path: str, via: str) -> Run[Client]:
    """A streamed body joined: iter_bytes, iter_raw or iter_text as they
    arrive (their boundaries depend on arrival, so only the whole counts)."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        with c.stream("GET", env.url(path)) as resp:
            obs["joined"] = (
                "".join(resp.iter_text())
                if via == "iter_text"
                else b"".join(resp.iter_raw() if via == "iter_raw" else resp.iter_bytes())
            )
            obs["downloaded"] = resp.num_bytes_downloaded

    return run


def lines(path: str) -> Run[Client]:
    def run(c: Client, env: Env, obs: Observation) -> None:
        with c.stream("GET", env.url(path)) as resp:
            obs["lines"] = list(resp.iter_lines())

    return run


def first_item(via: str) -> Run[Client]:
    """The first line or raw chunk of a chunked body whose first line has
    arrived and whose rest never comes (log tails, server-sent events)."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        timeout = httpx.Timeout(5, read=0.5)
        with c.stream("GET", env.url("/trickle"), timeout=timeout) as resp:
            items = resp.iter_lines() if via == "iter_lines" else resp.iter_raw()
            obs["first"] = next(iter(items))

    return run


def close_early(c: Client, env: Env, obs: Observation) -> None:
    """Read a little of an endless body, close it, then make another request."""
    with c.stream("GET", env.url("/stream")) as resp:
        chunks = resp.iter_bytes(1024)
        obs["chunks"] = [len(next(chunks)) for _ in range(3)]
    obs["next"] = c.get(env.url("/")).content


def read_all_unclosed(c: Client, env: Env, obs: Observation) -> None:
    """A streamed body read to its end but not closed: the connection is
    reused by the next request all the same."""
    resp = c.send(c.build_request("GET", env.url("/bytes/5000")), stream=True)
    try:
        obs["size"] = sum(len(chunk) for chunk in resp.iter_bytes(1000))
        obs["next"] = c.get(env.url("/")).content
    finally:
        resp.close()


def read_after_stream(c: Client, env: Env, obs: Observation) -> None:
    with c.stream("GET", env.url("/chunked/3000")) as resp:
        obs["closed_before"] = resp.is_closed
        obs["content"] = resp.read()
        obs["closed_after"] = resp.is_stream_consumed


def stall_mid_body(c: Client, env: Env, obs: Observation) -> None:
    """A body that stops after three of its bytes, with a short read timeout."""
    with c.stream("GET", env.url("/stall-body"), timeout=SHORT) as resp:
        chunks = resp.iter_bytes(3)
        obs["first"] = next(chunks)
        list(chunks)


def pool_zero(c: Client, env: Env, obs: Observation) -> None:
    """``pool=0``: never wait for a connection. A free one is taken; with
    none free, the pool times out at once."""
    obs["free"] = c.get(env.url("/bytes/3"), timeout=httpx.Timeout(5, pool=0)).content
    pool_timeout(c, env, obs, pool=0)


async def async_pool_zero(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    """``pool=0``, as :func:`pool_zero`."""
    response = await c.get(env.url("/bytes/3"), timeout=httpx.Timeout(5, pool=0))
    obs["free"] = response.content
    await async_pool_timeout(c, env, obs, pool=0)


def pool_timeout(c: Client, env: Env, obs: Observation, pool: float = SHORT) -> None:
    """With one connection allowed and held by an open response, a second
    request waits for the pool, then times out."""
    with c.stream("GET", env.url("/bytes/10")) as first:
        try:
            c.get(env.url("/"), timeout=httpx.Timeout(5, pool=pool))
        except httpx.HTTPError as exc:
            obs["second"] = type(exc)
        obs["first"] = first.read()


# -- uploads -------------------------------------------------------------------


def upload(
    make: Callable[[Env], Any], method: str = "POST", path: str = "/echo", via: str = "content"
) -> Run[Client]:
    """Send the body ``make(env)`` returns as ``content=`` (or ``data=``,
    ``json=``), closing it if it is a file."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        payload = make(env)
        try:
            obs.update(seen(c.request(method, env.url(path), **{via: payload})))
        finally:
            if hasattr(payload, "close"):
                payload.close()

    return run


def a_file(env: Env) -> io.BufferedReader:
    path = env.tmp_path / "upload.bin"
    path.write_bytes(b"file body, sent by length\n")
    return path.open("rb")


def generator(*chunks: bytes) -> Callable[[Env], Iterator[bytes]]:
    return lambda env: (chunk for chunk in chunks)


def post_multipart(with_data: bool) -> Run[Client]:
    """A multipart upload (``files=``), echoed with its random boundary
    replaced (the server's record of it is normalised the same way)."""

    def run(c: Client, env: Env, obs: Observation) -> None:
        files: dict[str, Any] = {"f": ("a.txt", b"file content\n", "text/plain"), "g": b"raw"}
        data = {"field": "value"} if with_data else None
        resp = c.post(env.url("/echo"), files=files, data=data)
        boundary = resp.request.headers["Content-Type"].split("boundary=")[1].encode()
        obs["status"] = resp.status_code
        obs["content"] = resp.content.replace(boundary, b"BOUNDARY")

    return run


def too_many_redirects(c: Client, env: Env, obs: Observation) -> None:
    c.max_redirects = 3
    c.get(env.url("/loop"), follow_redirects=True)


def not_followed(c: Client, env: Env, obs: Observation) -> None:
    resp = c.get(env.url("/redirect/302?to=/inspect"))
    obs.update(seen(resp))
    obs["is_redirect"] = resp.is_redirect
    obs["next"] = str(resp.next_request.url) if resp.next_request is not None else None


def redirect_generator(c: Client, env: Env, obs: Observation) -> None:
    """A 307 must re-send a body that was a one-shot generator."""
    once = (chunk for chunk in [b"once"])
    c.post(env.url("/redirect/307?to=/echo"), content=once, follow_redirects=True)


def with_cookie(c: Client, env: Env, obs: Observation) -> None:
    c.cookies.set("x", "y")
    steps("/cookies")(c, env, obs)


# -- TLS -----------------------------------------------------------------------


def trusting(env: Env) -> dict[str, Any]:
    """Transport options trusting the test CA (``verify=ssl_context``)."""
    return {"verify": env.certs.client_context()}


def tls_upload(c: Client, env: Env, obs: Observation) -> None:
    payload = bytes(range(256)) * 1024
    resp = c.post(env.url("/echo"), content=payload)
    obs["echoed"] = resp.content == payload
    obs["status"] = resp.status_code


def traced(c: Client, env: Env, obs: Observation) -> None:
    """The ``trace`` extension: the head it reports, and the phase that
    failed, if one did (httpcore's ``<phase>.failed``)."""
    heads: list[Any] = []
    failed: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith("receive_response_headers.complete"):
            heads.append(info["return_value"])
        elif name.endswith(".failed"):
            failed.append(name)

    try:
        c.get(env.url("/inspect"), extensions={"trace": trace}).read()
    finally:
        obs["trace"] = {"heads": heads, "failed": failed}


def trace_details(c: Client, env: Env, obs: Observation) -> None:
    """The ``trace`` extension's details, as httpcore gives them: each
    event's keys, each heard on the caller's thread, where the new
    connection goes and comes from."""
    heard: list[tuple[str, list[str], bool]] = []
    caller = threading.get_ident()

    def trace(name: str, info: dict[str, Any]) -> None:
        heard.append((name, sorted(info), threading.get_ident() == caller))
        if name == "connection.connect_tcp.started":
            obs["dial"] = (info["host"], info["timeout"], info["local_address"])
        elif name == "connection.connect_tcp.complete":
            obs["from"] = info["return_value"].get_extra_info("client_addr")[0]

    c.get(env.url("/"), extensions={"trace": trace}, timeout=4.0).read()
    obs["trace"] = heard


TRACED = [
    (
        "connection.connect_tcp.started",
        ["host", "local_address", "port", "socket_options", "timeout"],
    ),
    ("connection.connect_tcp.complete", ["return_value"]),
    ("http11.send_request_headers.started", ["request"]),
    ("http11.send_request_headers.complete", ["return_value"]),
    ("http11.send_request_body.started", ["request"]),
    ("http11.send_request_body.complete", ["return_value"]),
    ("http11.receive_response_headers.started", ["request"]),
    ("http11.receive_response_headers.complete", ["return_value"]),
    ("http11.receive_response_body.started", ["request"]),
    ("http11.receive_response_body.complete", ["return_value"]),
    ("http11.response_closed.started", []),
    ("http11.response_closed.complete", ["return_value"]),
]


# -- the table -------------------------------------------------------------------

JSON_GET = inspected("GET")
PLAIN = {"status": 200, "content": b"hello world!\n"}
FOLLOW: dict[str, Any] = {"follow_redirects": True}
MULTIPART = (
    b'--BOUNDARY\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\nfile content\n\r\n"
    b'--BOUNDARY\r\nContent-Disposition: form-data; name="g"; filename="upload"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\nraw\r\n--BOUNDARY--\r\n"
)
FIELD_PART = b'--BOUNDARY\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n'

CASES: list[Case[Client]] = [
    # -- responses: status, reason, headers, framing
    case("get-text", fetch("/"), {**PLAIN, "version": "HTTP/1.1", "downloaded": 13}),
    case("get-content-length-large", fetch("/bytes/300000"), ok(b"x" * 300000)),
    case("get-chunked", fetch("/chunked/70001"), ok(b"x" * 70001)),
    case("get-zero-length", fetch("/zero"), ok(b"")),
    case("status-404", fetch("/status/404"), {"status": 404, "content": b"status 404\n"}),
    case("status-500", fetch("/status/500"), {"status": 500, "content": b"status 500\n"}),
    case(
        "reason-custom",
        fetch("/"),
        {"status": 299, "reason": "Very Custom", "content": b"ok"},
        serve=serve_raw(reply_and_wait(CUSTOM_REASON)),
    ),
    case(
        "reason-missing",
        fetch("/"),
        {"status": 200, "reason": "", "content": b"ok"},
        serve=serve_raw(reply_and_wait(NO_REASON)),
    ),
    case(
        "headers-repeated-interleaved-and-cased",
        mixed_headers,
        {
            "multi": ["a", "b", "c"],
            "raw_headers": [
                ("Content-Type", "text/plain"),
                ("X-Multi", "a"),
                ("X-Other", "1"),
                ("X-Multi", "b"),
                ("X-Case", "MiXeD"),
                ("x-lower", "v"),
                ("X-MULTI", "c"),
                ("Content-Length", "8"),
            ],
        },
    ),
    case(
        "header-value-latin-1",
        fetch("/"),
        {"headers": [("x-latin", "caf\u00e9"), ("content-length", "2")]},
        serve=serve_raw(reply_and_wait(LATIN_1_HEADER)),
    ),
    case(
        "http-1.0-read-to-close",
        fetch("/"),
        {"version": "HTTP/1.0", "content": b"until the end"},
        serve=serve_raw(reply_and_close(HTTP10_TO_CLOSE)),
    ),
    case(
        "http-1.1-read-to-close",
        fetch("/"),
        {"version": "HTTP/1.1", "content": b"until the end"},
        serve=serve_raw(reply_and_close(HTTP11_TO_CLOSE)),
    ),
    case(
        "interim-100-skipped", fetch("/"), ok(b"ok"), serve=serve_raw(reply_and_wait(INTERIM_100))
    ),
    case(
        "interim-103-skipped", fetch("/"), ok(b"ok"), serve=serve_raw(reply_and_wait(INTERIM_103))
    ),
    # -- requests: query, headers, methods, and what the server received
    case(
        "query-params",
        fetch("/inspect", params={"q": "a b", "n": ["1", "2"]}),
        {"url": "http://127.0.0.1:PORT/inspect?q=a+b&n=1&n=2"},
    ),
    case(
        "request-headers",
        fetch("/inspect", headers={"X-Token": "abc", "Accept": "text/plain"}),
        ok(JSON_GET),
    ),
    case(
        "request-header-latin-1-bytes",
        fetch("/inspect", headers={b"X-Name": b"caf\xe9"}),
        ok(JSON_GET),
    ),
    case("method-put", fetch("/inspect", "PUT", content=b"put"), ok(inspected("PUT", "put"))),
    case("method-patch", fetch("/inspect", "PATCH", content=b"p"), ok(inspected("PATCH", "p"))),
    case("method-delete", fetch("/inspect", "DELETE"), ok(inspected("DELETE"))),
    case("method-options", fetch("/inspect", "OPTIONS"), ok(inspected("OPTIONS"))),
    # -- connections: reuse and close, as the server counts them
    case("keep-alive-reused", steps("/", "/bytes/10", "/chunked/10"), {"connections": 1}),
    case("connection-close-honoured", steps("/close", "/close"), {"connections": 2}),
    case(
        "server-closed-idle-connection",
        stale_after_server_close,
        {"first": b"ok", "second": b"ok", "connections": 2},
        serve=serve_raw(reply_and_close(OK)),
    ),
    case(
        "http-1.0-keep-alive",
        steps("/", "/"),
        {"steps": [(200, b"ok"), (200, b"ok")], "connections": 2},
        serve=serve_raw(reply_each(HTTP10_KEEP_ALIVE)),
        # R8: poolwatch keeps an HTTP/1.0 connection whose response said
        # "Connection: keep-alive" and had a length, as Go and http.client
        # (the stock requests adapter) do; httpcore, on h11, closes every
        # HTTP/1.0 connection after one response.
        differs=differs("R8: HTTP/1.0 keep-alive is honoured", connections=1),
    ),
    # -- content decoding
    *[
        case(f"decode-{name.replace(', ', '-')}", fetch(f"/encoded?as={name}"), ok(TEXT))
        for name in ENCODINGS
    ],
    case("decode-gzip-chunked", fetch("/encoded?as=gzip&chunked=1"), ok(TEXT)),
    case("decode-identity", fetch("/encoded?as=identity"), ok(TEXT)),
    case("decode-corrupt-gzip", fetch("/encoded?as=corrupt"), error(httpx.DecodingError)),
    case(
        "decode-gzip-in-small-chunks",
        chunk_sizes("/encoded?as=gzip", 700),
        {"chunks": [700] * (len(TEXT) // 700) + [len(TEXT) % 700]},
    ),
    case(
        "decode-gzip-iter-raw-undecoded",
        joined("/encoded?as=gzip", "iter_raw"),
        {"joined": gzip.compress(TEXT, mtime=0)},
    ),
    case("decode-gzip-head", fetch("/encoded?as=gzip", "HEAD"), ok(b"")),
    # -- cookies
    case(
        "cookies-set",
        steps("/cookies/set?a=1&b=2"),
        {"cookies": [("a", "1", "127.0.0.1", "/", False), ("b", "2", "127.0.0.1", "/", False)]},
    ),
    case(
        "cookies-sent-back",
        steps("/cookies/set?a=1&b=2", "/cookies"),
        {"steps": [(200, b"cookies set\n"), (200, b"a=1; b=2")]},
    ),
    case(
        "cookies-set-on-redirect",
        steps("/cookies/set?c=3&next=/cookies", **FOLLOW),
        {"steps": [(200, b"c=3")]},
    ),
    case(
        "cookies-deleted",
        steps("/cookies/set?a=1&b=2", "/cookies/delete?a", "/cookies"),
        {"cookies": [("b", "2", "127.0.0.1", "/", False)]},
    ),
    case(
        "cookies-path-scoped",
        steps("/cookies/set?p=1&path=/elsewhere", "/cookies"),
        {"steps": [(200, b"cookies set\n"), (200, b"")]},
    ),
    case("cookies-from-the-client", with_cookie, {"steps": [(200, b"x=y")]}),
    # -- redirects and history
    case(
        "redirect-chain",
        fetch("/chain/3", **FOLLOW),
        {
            "content": b"end of chain\n",
            "history": [(302, f"http://127.0.0.1:PORT/chain/{n}") for n in (3, 2, 1)],
        },
    ),
    *[
        case(
            f"redirect-{code}-post",
            fetch(f"/redirect/{code}?to=/inspect", "POST", content=b"payload", **FOLLOW),
            ok(JSON_GET if code in (301, 302, 303) else inspected("POST", "payload")),
        )
        for code in (301, 302, 303, 307, 308)
    ],
    case(
        "redirect-absolute-location",
        fetch("/redirect/302?to=/chain/0&absolute=1", **FOLLOW),
        ok(b"end of chain\n"),
    ),
    case(
        "redirect-with-large-body",
        fetch("/redirect/302?to=/zero&size=200000", **FOLLOW),
        {"status": 200, "connections": 1},
    ),
    case("redirect-not-followed", not_followed, {"status": 302, "is_redirect": True}),
    case("redirect-too-many", too_many_redirects, error(httpx.TooManyRedirects)),
    case("redirect-307-consumed-generator", redirect_generator, error(httpx.StreamConsumed)),
    # -- streaming
    case("stream-iter-bytes-sizes", chunk_sizes("/bytes/5000", 1000), {"chunks": [1000] * 5}),
    case(
        "stream-iter-raw-sizes",
        chunk_sizes("/chunked/250", 100, "iter_raw"),
        {"chunks": [100, 100, 50]},
    ),
    case(
        "stream-iter-bytes-joined",
        joined("/chunked/70000", "iter_bytes"),
        {"joined": b"x" * 70000},
    ),
    case(
        "stream-iter-text-joined",
        joined("/encoded?as=gzip", "iter_text"),
        {"joined": TEXT.decode()},
    ),
    case("stream-iter-lines", lines("/lines"), {"lines": [x.decode() for x in LINES]}),
    case("stream-first-line-as-it-arrives", first_item("iter_lines"), {"first": "first"}),
    case("stream-first-raw-as-it-arrives", first_item("iter_raw"), {"first": b"first\n"}),
    case("stream-close-early-then-reuse", close_early, {"chunks": [1024] * 3, "connections": 2}),
    case("stream-read-all-unclosed", read_all_unclosed, {"size": 5000, "connections": 1}),
    case("stream-read-after-stream", read_after_stream, {"content": b"x" * 3000}),
    # -- uploads
    case("upload-bytes", upload(lambda env: b"some bytes"), ok(b"some bytes")),
    case("upload-str", upload(lambda env: "caf\u00e9"), ok("caf\u00e9".encode())),
    case("upload-form", upload(lambda env: {"a": "1", "b": "x y"}, via="data"), ok(b"a=1&b=x+y")),
    case("upload-json", upload(lambda env: {"k": [1, 2]}, via="json"), ok(b'{"k":[1,2]}')),
    case("upload-generator-chunked", upload(generator(b"ab", b"", b"cd")), ok(b"abcd")),
    case("upload-generator-empty", upload(generator()), ok(b"")),
    case("upload-file", upload(a_file), ok(b"file body, sent by length\n")),
    case("upload-bytesio", upload(lambda env: io.BytesIO(b"in memory")), ok(b"in memory")),
    case("upload-large", upload(lambda env: b"L" * (1 << 20)), ok(b"L" * (1 << 20))),
    case("upload-empty-post", fetch("/echo", "POST"), ok(b"")),
    case("upload-multipart", post_multipart(False), ok(MULTIPART)),
    case("upload-multipart-with-data", post_multipart(True), ok(FIELD_PART + MULTIPART)),
    # -- bodiless responses
    case("head", fetch("/bytes/1000", "HEAD"), ok(b"", headers=[("content-length", "1000")])),
    case("head-chunked", fetch("/chunked/100", "HEAD"), ok(b"")),
    case(
        "status-204-then-reuse",
        steps("/empty", "/empty"),
        {"steps": [(204, b"")] * 2, "connections": 1},
    ),
    case(
        "status-304",
        fetch("/etag", headers={"If-None-Match": '"v1"'}),
        {"status": 304, "content": b""},
    ),
    case("etag-200", fetch("/etag"), ok(b"tagged\n")),
    # -- authentication
    case("auth-basic", fetch("/basic", auth=(USER, PASSWORD)), ok(b"basic: welcome\n")),
    case(
        "auth-digest",
        digest("GET", PASSWORD),
        {
            "status": 200,
            "content": b"digest: welcome\n",
            "history": [(401, "http://127.0.0.1:PORT/digest")],
            "connections": 1,
        },
    ),
    case("auth-digest-post", digest("POST", PASSWORD, content=b"body"), ok(b"digest: welcome\n")),
    case("auth-digest-wrong-password", digest("GET", "wrong"), {"status": 401}),
    # -- timeouts (the request's timeout extension)
    case(
        "timeout-read-head",
        fetch("/stall", timeout=httpx.Timeout(SHORT)),
        error(httpx.ReadTimeout),
    ),
    case(
        "timeout-read-head-only-read",
        fetch("/stall", timeout=httpx.Timeout(5, read=SHORT)),
        error(httpx.ReadTimeout),
    ),
    case("timeout-read-mid-body", fetch("/stall-body", timeout=SHORT), error(httpx.ReadTimeout)),
    case(
        "timeout-read-mid-body-stream",
        stall_mid_body,
        {"first": b"abc", "error": httpx.ReadTimeout},
    ),
    case(
        "timeout-connect",
        fetch("/", timeout=httpx.Timeout(5, connect=SHORT)),
        error(httpx.ConnectTimeout),
        serve=serve_backlog,
    ),
    case(
        "timeout-pool",
        pool_timeout,
        {"second": httpx.PoolTimeout, "first": b"x" * 10, "connections": 1},
        options=lambda env: {"limits": httpx.Limits(max_connections=1)},
    ),
    case(
        "timeout-pool-zero",
        pool_zero,
        {"free": b"xxx", "second": httpx.PoolTimeout, "first": b"x" * 10, "connections": 1},
        options=lambda env: {"limits": httpx.Limits(max_connections=1)},
    ),
    case(
        "limits-keepalive-expiry-zero",
        steps("/inspect", "/inspect"),
        {"steps": [(200, JSON_GET)] * 2, "connections": 2},
        options=lambda env: {"limits": httpx.Limits(keepalive_expiry=0)},
    ),
    case("empty-query-sent", fetch("/inspect?"), ok(inspected("GET", target="/inspect?"))),
    case(
        "extension-target",
        fetch("/elsewhere", extensions={"target": b"/inspect?x=/../y"}),
        ok(inspected("GET", target="/inspect?x=/../y")),
    ),
    # -- refused
    case("refused", fetch("/"), error(httpx.ConnectError), serve=serve_refused),
    case(
        "refused-with-retries",
        fetch("/"),
        error(httpx.ConnectError),
        serve=serve_refused,
        options=lambda env: {"retries": 2},
    ),
    # -- TLS (verify=ssl_context)
    case(
        "tls-verify-context",
        fetch("/inspect"),
        {"status": 200, "handshakes": 1},
        serve=serve_tls("good"),
        options=trusting,
    ),
    case(
        "tls-untrusted-ca",
        fetch("/"),
        error(httpx.ConnectError),
        serve=serve_tls("untrusted"),
        options=trusting,
    ),
    case(
        "tls-wrong-hostname",
        fetch("/"),
        error(httpx.ConnectError),
        serve=serve_tls("wrong-host"),
        options=trusting,
    ),
    case(
        "tls-expired",
        fetch("/"),
        error(httpx.ConnectError),
        serve=serve_tls("expired"),
        options=trusting,
    ),
    case("tls-default-cas-reject", fetch("/"), error(httpx.ConnectError), serve=serve_tls("good")),
    case(
        "tls-sni-hostname",
        fetch("/inspect", extensions={"sni_hostname": "other.parity.test"}),
        ok(JSON_GET),
        serve=serve_tls("wrong-host"),
        options=trusting,
    ),
    case(
        "tls-client-cert-with-context",
        fetch("/inspect"),
        ok(JSON_GET),
        serve=serve_tls("client-cert"),
        # ``cert`` is loaded into the given context, as httpx's transport does.
        options=lambda env: {**trusting(env), "cert": env.certs.client_cert},
    ),
    case(
        "tls-verify-false",
        fetch("/"),
        {"status": 200},
        serve=serve_tls("untrusted"),
        options=lambda env: {"verify": False},
    ),
    case(
        "tls-secure-cookie",
        steps("/cookies/set?token=t1&secure=1", "/cookies"),
        {"steps": [(200, b"cookies set\n"), (200, b"token=t1")]},
        serve=serve_tls("good"),
        options=trusting,
    ),
    case(
        "tls-upload",
        tls_upload,
        {"status": 200, "echoed": True},
        serve=serve_tls("good"),
        options=trusting,
    ),
    case(
        "tls-timeout-handshake",
        fetch("/", timeout=httpx.Timeout(5, connect=SHORT)),
        error(httpx.ConnectTimeout),
        serve=serve_silent_tls,
        options=trusting,
    ),
    case(
        "tls-timeout-read-head",
        fetch("/stall", timeout=httpx.Timeout(5, read=SHORT)),
        error(httpx.ReadTimeout),
        serve=serve_tls("good"),
        options=trusting,
    ),
    case(
        "tls-timeout-read-mid-body",
        fetch("/stall-body", timeout=SHORT),
        error(httpx.ReadTimeout),
        serve=serve_tls("good"),
        options=trusting,
    ),
    # -- bad responses
    case(
        "bad-status-line",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(GARBAGE)),
    ),
    case(
        "bad-no-response",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(b"")),
    ),
    case(
        "bad-hang-up-mid-upload",
        fetch("/", "POST", content=BIG_UPLOAD),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(hang_up_after_head),
    ),
    case(
        "trace-head",
        traced,
        {"trace": {"heads": [(b"HTTP/1.0", 200, b"OK", [(b"X-A", b"1")])], "failed": []}},
        serve=serve_raw(reply_and_close(b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n")),
    ),
    case(
        "tracing-details",
        trace_details,
        {
            "trace": [(name, keys, True) for name, keys in TRACED],
            "dial": ("127.0.0.1", 4.0, None),
            "from": "127.0.0.1",
        },
    ),
    case(
        "trace-failed-connect",
        traced,
        {"trace": {"heads": [], "failed": ["connection.connect_tcp.failed"]}},
        serve=serve_refused,
    ),
    case(
        "trace-failed-body",
        traced,
        {
            "trace": {
                "heads": [(b"HTTP/1.1", 200, b"OK", [(b"Content-Length", b"10")])],
                "failed": ["http11.receive_response_body.failed"],
            }
        },
        serve=serve_raw(reply_and_close(TRUNCATED_LENGTH)),
    ),
    case(
        "bad-head-cut-short",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(b"HTTP/1.1 200 OK\r\nContent-Le")),
    ),
    case(
        "bad-truncated-content-length",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(TRUNCATED_LENGTH)),
    ),
    case(
        "bad-truncated-chunked",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(TRUNCATED_CHUNKED)),
    ),
    case(
        "bad-chunk-size",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(BAD_CHUNK_SIZE)),
    ),
    case(
        "bad-truncated-stream",
        chunk_sizes("/", 4),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(TRUNCATED_STREAM)),
    ),
    case(
        "bad-bytes-after-body",
        body("/"),
        {"status": 200, "content": b"ok"},
        serve=serve_raw(reply_and_wait(BYTES_AFTER_BODY)),
        # R10: bytes after the end of a response are a protocol error in
        # poolwatch, which never trusts a connection in an unknown state;
        # httpcore ignores them until the connection's next use.
        differs=differs(
            "R10: bytes after the body", content=MISSING, error=httpx.RemoteProtocolError
        ),
    ),
    case(
        "bad-header-line",
        fetch("/"),
        error(httpx.RemoteProtocolError),
        serve=serve_raw(reply_and_close(HEADER_WITHOUT_COLON)),
    ),
]


@pytest.mark.parametrize("case", table(CASES))
def test_parity(case: Case[Client], certs: Certs, tmp_path: Path) -> None:
    """The user of httpx sees the same through poolwatch's transport as
    through httpx's own."""
    assert_parity(case, observe_both(case, open_client, certs, tmp_path))


# -- httpx.AsyncClient: the stock async transport against AsyncHTTPXTransport --


class AsyncBridge:
    """An ``httpx.AsyncClient`` driven from the table's synchronous case code:
    each call runs to completion on the bridge's own event loop, so the
    request-level cases above run unchanged through the async stack."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.run(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def close(self) -> None:
        """Close the client, check that no task is left, close the loop."""
        loop = self.loop
        try:
            self.run(self.client.aclose())
            self.run(_settled())
            left = asyncio.all_tasks(loop)
            assert not left, f"tasks left behind: {left}"
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


async def _settled() -> None:
    for _ in range(5):  # aborted transports close their sockets on the loop
        await asyncio.sleep(0)


@contextmanager
def open_async_client(flavour: str, options: dict[str, Any]) -> Iterator[AsyncBridge]:
    """A stock ``httpx.AsyncClient``, or one over poolwatch's async
    transport, made with the same transport ``options``."""
    if flavour == POOLWATCH:
        client = httpx.AsyncClient(transport=AsyncHTTPXTransport(**options))
    elif options:
        client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(**options))
    else:
        client = httpx.AsyncClient()
    bridge = AsyncBridge(client)
    try:
        yield bridge
    finally:
        bridge.close()


AsyncRun = Callable[[httpx.AsyncClient, Env, Observation], Coroutine[Any, Any, None]]


def native(run: AsyncRun) -> Run[AsyncBridge]:
    """A case written against ``httpx.AsyncClient`` itself (streaming)."""

    def bridged(bridge: AsyncBridge, env: Env, obs: Observation) -> None:
        bridge.run(run(bridge.client, env, obs))

    return bridged


async def async_close_early(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    """Read a little of an endless body, close it, then make another request."""
    async with c.stream("GET", env.url("/stream")) as resp:
        chunks = resp.aiter_bytes(1024)
        obs["chunks"] = [len(await chunks.__anext__()) for _ in range(3)]
        await chunks.aclose()
    obs["next"] = (await c.get(env.url("/"))).content


async def async_read_all_unclosed(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    """A streamed body read to its end but not closed; the next request
    reuses the connection all the same."""
    resp = await c.send(c.build_request("GET", env.url("/bytes/5000")), stream=True)
    try:
        obs["size"] = sum([len(chunk) async for chunk in resp.aiter_bytes(1000)])
        obs["next"] = (await c.get(env.url("/"))).content
    finally:
        await resp.aclose()


async def async_joined(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    async with c.stream("GET", env.url("/chunked/70001")) as resp:
        obs["content"] = b"".join([chunk async for chunk in resp.aiter_bytes()])
        obs["status"] = resp.status_code


async def async_pool_timeout(
    c: httpx.AsyncClient, env: Env, obs: Observation, pool: float = SHORT
) -> None:
    """One connection allowed and held: a second request times out in the pool."""
    async with c.stream("GET", env.url("/bytes/10")) as first:
        try:
            await c.get(env.url("/"), timeout=httpx.Timeout(5, pool=pool))
        except httpx.HTTPError as exc:
            obs["second"] = type(exc)
        obs["first"] = await first.aread()


async def async_generator_upload(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"async "
        yield b"chunks"

    obs.update(seen(await c.post(env.url("/echo"), content=chunks())))


async def async_traced(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    """As :func:`traced`, with an async ``trace``."""
    heads: list[Any] = []
    failed: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith("receive_response_headers.complete"):
            heads.append(info["return_value"])
        elif name.endswith(".failed"):
            failed.append(name)

    try:
        await (await c.get(env.url("/inspect"), extensions={"trace": trace})).aread()
    finally:
        obs["trace"] = {"heads": heads, "failed": failed}


async def async_trace_details(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    """As :func:`trace_details`, with an async ``trace``: each event heard in
    the caller's task."""
    heard: list[tuple[str, list[str], bool]] = []
    caller = asyncio.current_task()

    async def trace(name: str, info: dict[str, Any]) -> None:
        heard.append((name, sorted(info), asyncio.current_task() is caller))
        if name == "connection.connect_tcp.complete":
            obs["from"] = info["return_value"].get_extra_info("client_addr")[0]

    response = await c.get(env.url("/"), extensions={"trace": trace})
    await response.aread()
    obs["trace"] = heard


async def async_trace(c: httpx.AsyncClient, env: Env, obs: Observation) -> None:
    """The async ``trace`` extension hears the request's phases in order."""
    names: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        names.append(name)

    await c.get(env.url("/"), extensions={"trace": trace})
    wanted = [
        "http11.send_request_headers.started",
        "http11.send_request_headers.complete",
        "http11.receive_response_headers.complete",
        "http11.response_closed.complete",
    ]
    obs["trace"] = [name for name in names if name in wanted]


# Cases of the table above that run through httpx.AsyncClient unchanged. Not
# here: those driving c.stream() or c.send() (rewritten natively below) and
# those with synchronous bodies (files, generators), which an AsyncClient
# refuses whichever transport it has.
_SYNC_ONLY = {
    "upload-generator-chunked",
    "upload-generator-empty",
    "upload-file",
    "upload-bytesio",
    "upload-multipart",
    "upload-multipart-with-data",
    "bad-hang-up-mid-upload",  # below: httpx's own async stream says otherwise
}
_REQUEST_LEVEL = (
    "fetch.",
    "steps.",
    "digest.",
    "upload.",
    "mixed_headers",
    "stale_after_server_close",
    "with_cookie",
    "tls_upload",
    "too_many_redirects",
    "not_followed",
)
ASYNC_CASES: list[Case[AsyncBridge]] = [
    Case[AsyncBridge](c.name, c.run, c.expect, c.serve, c.options, c.differs)  # type: ignore[arg-type]
    for c in CASES
    if c.run.__qualname__.startswith(_REQUEST_LEVEL) and c.name not in _SYNC_ONLY
] + [
    Case[AsyncBridge](
        "async-stream-close-early-then-reuse",
        native(async_close_early),
        {"chunks": [1024] * 3, "next": b"hello world!\n"},
    ),
    Case[AsyncBridge](
        "async-stream-read-all-unclosed",
        native(async_read_all_unclosed),
        {"size": 5000, "next": b"hello world!\n"},
    ),
    Case[AsyncBridge]("async-stream-aiter-bytes-joined", native(async_joined), ok(b"x" * 70001)),
    Case[AsyncBridge](
        "async-timeout-pool",
        native(async_pool_timeout),
        {"second": httpx.PoolTimeout, "first": b"x" * 10},
        options=lambda env: {"limits": httpx.Limits(max_connections=1)},
    ),
    Case[AsyncBridge](
        "async-timeout-pool-zero",
        native(async_pool_zero),
        {"free": b"xxx", "second": httpx.PoolTimeout, "first": b"x" * 10},
        options=lambda env: {"limits": httpx.Limits(max_connections=1)},
    ),
    Case[AsyncBridge](
        "async-upload-async-generator",
        native(async_generator_upload),
        ok(b"async chunks"),
    ),
    *(
        Case[AsyncBridge](f"async-{c.name}", native(async_traced), c.expect, c.serve)
        for c in CASES
        if c.name.startswith("trace-")
    ),
    Case[AsyncBridge](
        "async-bad-hang-up-mid-upload",
        fetch("/", "POST", content=BIG_UPLOAD),  # type: ignore[arg-type]
        error(httpx.ReadError),
        serve=serve_raw(hang_up_after_head),
        differs=differs(
            "the server hung up without answering: said as stock sync httpx says it",
            error=httpx.RemoteProtocolError,
        ),
    ),
    Case[AsyncBridge](
        "async-tracing-details",
        native(async_trace_details),
        {"trace": [(name, keys, True) for name, keys in TRACED], "from": "127.0.0.1"},
    ),
    Case[AsyncBridge](
        "async-trace-extension",
        native(async_trace),
        {
            "trace": [
                "http11.send_request_headers.started",
                "http11.send_request_headers.complete",
                "http11.receive_response_headers.complete",
                "http11.response_closed.complete",
            ]
        },
    ),
]


@pytest.mark.parametrize("case", table(ASYNC_CASES))
def test_async_parity(case: Case[AsyncBridge], certs: Certs, tmp_path: Path) -> None:
    """The user of httpx.AsyncClient sees the same through poolwatch's async
    transport as through httpx's own."""
    assert_parity(case, observe_both(case, open_async_client, certs, tmp_path))


def test_async_http2_is_refused() -> None:
    """As the sync transport: HTTP/2 is a clear ValueError."""
    assert poolwatch.AsyncHTTPXTransport is AsyncHTTPXTransport  # the public name
    with pytest.raises(ValueError, match=r"HTTP/1\.1 only"):
        AsyncHTTPXTransport(http2=True)
