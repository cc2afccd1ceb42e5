"""The only way out of a task's browser context: a forward proxy on 127.0.0.1 that checks
every connection against the task's allowlist.

Playwright's request routing sees the first request of each navigation and sub-resource, but
not the hops of an HTTP redirect, which Chromium follows by itself; WebSockets and requests
of service workers bypass it too. So each context is given this proxy: every request that
leaves the browser (each redirect hop, every WebSocket and fetch) comes through it. A plain
http request is checked on its whole URL; a CONNECT tunnel (https, wss, ws) on its host and
port, which is all a proxy sees of TLS. One request per client connection, and only that
request's own body is forwarded, so a request that was checked is the only one a server gets.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from runtimes.core import Allowlist

_HEAD_LIMIT = 64 * 1024
_CONNECT_TIMEOUT = 15.0
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade", "trailer"}


class EgressProxy:
    """A forward proxy for one browser context; ``async with`` starts and stops it.

    Args:
        allowlist: the task's rules; refusals are recorded in its ``blocked``.
    """

    def __init__(self, allowlist: Allowlist) -> None:
        self.allowlist = allowlist
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            pass  # the browser or the server went away: nothing to record
        except asyncio.CancelledError:
            pass  # the proxy is closing with its context; a cancelled handler would only be logged
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            if not self.allowlist.allows_host(host, int(port)):
                self.allowlist.blocked.append(f"{'https' if port == '443' else 'tcp'}://{target}")
                await _refuse(writer, target)
                return
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), _CONNECT_TIMEOUT
            )
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _pipe_both(reader, writer, upstream_reader, upstream_writer)
            return
        if not self.allowlist.check(target):
            await _refuse(writer, target)
            return
        parts = urlsplit(target)
        headers = [line for line in header_lines if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        upstream_reader, upstream_writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 80), _CONNECT_TIMEOUT
        )
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        upstream_head = "\r\n".join([f"{method} {path} HTTP/1.1", *headers, "Connection: close", "", ""])
        upstream_writer.write(upstream_head.encode("latin-1"))
        fields = _header_fields(headers)
        if "chunked" in fields.get("transfer-encoding", "").lower():
            await _pipe_both(reader, writer, upstream_reader, upstream_writer)  # the server ends it
            return
        try:
            # Exactly this request's body, then exactly its answer: any later bytes on either
            # connection would be a request nobody checked, so they are never forwarded.
            await _copy_exactly(reader, upstream_writer, _content_length(fields))
            await _forward_response(upstream_reader, writer, method)
        finally:
            upstream_writer.close()


async def _refuse(writer: asyncio.StreamWriter, target: str) -> None:
    body = f"adp: {target} is not in this task's allowed URLs\n".encode()
    writer.write(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe_both(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until either side closes, then close both."""
    directions = {
        asyncio.create_task(_copy(client_reader, upstream_writer)),
        asyncio.create_task(_copy(upstream_reader, client_writer)),
    }
    try:
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for direction in directions:
            direction.cancel()
        await asyncio.gather(*directions, return_exceptions=True)
        upstream_writer.close()


def _header_fields(lines: list[str]) -> dict[str, str]:
    """``Name: value`` lines as a dict with lower-case names."""
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines) if name}


def _content_length(fields: dict[str, str]) -> int:
    value = fields.get("content-length", "0") or "0"
    if not value.isdigit():
        raise ValueError(f"bad Content-Length {value!r}")
    return int(value)


async def _forward_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str) -> None:
    """One response: its head, then its body by Content-Length (to the server's close when it
    gives none, or sends it chunked); a server that keeps the connection open gets no second turn."""
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(head)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    fields = _header_fields(lines)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        await writer.drain()
    elif "content-length" in fields and "chunked" not in fields.get("transfer-encoding", "").lower():
        await _copy_exactly(reader, writer, _content_length(fields))
    else:
        await _copy(reader, writer)


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size > 0:
        chunk = await reader.read(min(size, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", size)
        writer.write(chunk)
        await writer.drain()
        size -= len(chunk)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
