"""The HTTP layer under :class:`~flowopt.backends.vllm.VLLMBackend`: flowopt's own
HTTP/1.1 client (``native``, :mod:`flowopt.backends._h1`), aiohttp or httpx.

Why two: every token a backend streams crosses this layer, and on a small CPU box its cost
is visible in time to first token. aiohttp's C-accelerated parser costs about half of what
httpx + httpcore + h11 + anyio cost per streamed request (measured against an instant
stub: 0.42 ms vs 0.87 ms to the first byte, 0.64 ms vs 1.25 ms for 16 tokens). The
native client does less again (an engine call needs no cookies, redirects, proxies or
per-read timers) on the same C parser as uvicorn, so it is the default when ``httptools``
(the ``gateway`` extra) is installed; aiohttp next. httpx stays for its transport seam:
tests hand the backend an ``httpx.MockTransport`` and get the httpx client, unchanged.

The backend sees only this module's small surface (:class:`HTTPClient`,
:class:`RawResponse`) and its three failure types, so how it turns failures into
flowopt's typed errors does not depend on which library carried the bytes.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import httpx

from flowopt.backends._reach import choose
from flowopt.errors import ConfigError, MissingDependencyError

__all__ = [
    "AiohttpClient",
    "HTTPClient",
    "HttpxClient",
    "RawResponse",
    "TransportBroken",
    "TransportConnectError",
    "TransportTimeout",
    "check_choice",
    "make_client",
]


class TransportTimeout(Exception):
    """No connection or no bytes within the time allowed.

    ``connecting`` tells the two apart: True when the time ran out before a connection was
    had (the pool had none free, or the server did not accept), False while waiting for
    the answer's bytes. An operator fixes them differently (pool size or server backlog,
    against server load or the read timeout)."""

    def __init__(self, message: str, *, connecting: bool = False) -> None:
        super().__init__(message)
        self.connecting = connecting


class TransportConnectError(Exception):
    """The server could not be reached (refused, unknown host, reset while connecting)."""


class TransportBroken(Exception):
    """The connection failed after it was made (reset, closed mid-body, bad framing)."""


class RawResponse(Protocol):
    """An HTTP response whose body is read once, whole or as it arrives."""

    status: int

    def header(self, name: str) -> str | None: ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class HTTPClient(Protocol):
    """What the backend needs from an HTTP library: a POST, a GET, and closing."""

    @property
    def closed(self) -> bool: ...

    async def post(
        self, url: str, body: bytes, *, timeout: float, connect_timeout: float
    ) -> RawResponse: ...

    async def get(self, url: str) -> RawResponse: ...

    async def aclose(self) -> None: ...


# -- httpx ---------------------------------------------------------------------------------
class _HttpxResponse:
    __slots__ = ("_resp", "status")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code

    def header(self, name: str) -> str | None:
        value: str | None = self._resp.headers.get(name)
        return value

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for raw in self._resp.aiter_bytes():
                yield raw
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from None

    async def close(self) -> None:
        await self._resp.aclose()


def _httpx_error(exc: httpx.HTTPError) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        connecting = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        return TransportTimeout(str(exc) or type(exc).__name__, connecting=connecting)
    if isinstance(exc, httpx.ConnectError):
        return TransportConnectError(str(exc) or type(exc).__name__)
    return TransportBroken(f"{type(exc).__name__}: {exc}")


class HttpxClient:
    """httpx underneath; the one to use with a custom ``transport`` (tests, proxies)."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        max_connections: int,
        timeout: float,
        connect_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            headers=dict(headers),
            limits=limits,
            timeout=_httpx_timeout(timeout, connect_timeout),
            transport=transport,
            # The system's store (and SSL_CERT_FILE), as the other two clients verify
            # with, not certifi's: an engine's private CA added to the system stays
            # trusted when ``auto`` switches to httpx for a proxy.
            verify=tls if tls is not None else _system_store(transport),
        )

    @property
    def closed(self) -> bool:
        return self._client.is_closed

    async def post(
        self, url: str, body: bytes, *, timeout: float, connect_timeout: float
    ) -> RawResponse:
        req = self._client.build_request(
            "POST",
            url,
            content=body,
            headers={"content-type": "application/json"},
            timeout=_httpx_timeout(timeout, connect_timeout),
        )
        try:
            return _HttpxResponse(await self._client.send(req, stream=True))
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from None

    async def get(self, url: str) -> RawResponse:
        try:
            resp = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from None
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        await self._client.aclose()


def _httpx_timeout(timeout: float, connect_timeout: float) -> httpx.Timeout:
    # Waiting for a free pooled connection counts against the connect timeout, as with the
    # native and aiohttp clients (httpx's pool wait would otherwise default to the read
    # timeout, and a request could wait that long for a connection, then that long again).
    return httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout)


def _system_store(transport: httpx.AsyncBaseTransport | None) -> ssl.SSLContext | bool:
    # A custom transport makes its own connections: nothing to verify here.
    return ssl.create_default_context() if transport is None else True


# -- aiohttp -------------------------------------------------------------------------------
class _AiohttpResponse:
    __slots__ = ("_aiohttp", "_resp", "status")

    def __init__(self, resp: Any, aiohttp: Any) -> None:
        self._resp = resp
        self._aiohttp = aiohttp
        self.status: int = resp.status

    def header(self, name: str) -> str | None:
        value: str | None = self._resp.headers.get(name)
        return value

    async def read(self) -> bytes:
        try:
            body: bytes = await self._resp.read()
        except (TimeoutError, self._aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, self._aiohttp) from None
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for raw in self._resp.content.iter_any():
                yield raw
        except (TimeoutError, self._aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, self._aiohttp) from None

    async def close(self) -> None:
        # A body read to its end returns the connection to the pool; one abandoned halfway
        # cannot be reused (the rest of the body would still arrive on it), so it closes.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


def _aiohttp_error(exc: BaseException, aiohttp: Any) -> Exception:
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError/ConnectionTimeoutError too
        connecting = isinstance(exc, aiohttp.ConnectionTimeoutError)
        return TransportTimeout(str(exc) or type(exc).__name__, connecting=connecting)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportConnectError(str(exc) or type(exc).__name__)
    return TransportBroken(f"{type(exc).__name__}: {exc}")


_JSON_HEADERS = {"Content-Type": "application/json"}


class AiohttpClient:
    """aiohttp underneath: the default, for its cheaper per-request and per-chunk cost.

    ``keepalive`` is kept below uvicorn's 5 s idle timeout (vLLM's server), so the pool
    never hands out a connection the server is about to close.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        max_connections: int,
        timeout: float,
        connect_timeout: float,
        keepalive: float = 4.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._default = (timeout, connect_timeout)
        self._default_timeout = self._timeout(timeout, connect_timeout)
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=keepalive,
            ssl=True if tls is None else tls,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=dict(headers),
            timeout=self._default_timeout,
            auto_decompress=True,
        )

    def _timeout(self, timeout: float, connect_timeout: float) -> Any:
        # Same meaning as httpx's: ``timeout`` bounds each wait for bytes, not the whole
        # answer (a long stream that keeps flowing is not cut), ``connect`` the connect.
        return self._aiohttp.ClientTimeout(
            total=None,
            sock_connect=connect_timeout,
            connect=connect_timeout,
            sock_read=timeout,
        )

    @property
    def closed(self) -> bool:
        closed: bool = self._session.closed
        return closed

    async def post(
        self, url: str, body: bytes, *, timeout: float, connect_timeout: float
    ) -> RawResponse:
        aiohttp = self._aiohttp
        # Without a deadline the prebuilt default applies: no new ClientTimeout per call.
        per_call = (timeout, connect_timeout)
        client_timeout = (
            self._default_timeout if per_call == self._default else self._timeout(*per_call)
        )
        send = partial(
            self._session.post, url, data=body, headers=_JSON_HEADERS, timeout=client_timeout
        )
        try:
            try:
                resp = await send()
            except aiohttp.ServerDisconnectedError:
                # A clean close before any response byte is, in practice, the keep-alive
                # race: the server closed an idle pooled connection just as it was handed
                # out (a loaded client releases connections late, so its idle clock runs
                # behind the server's) and never read the request. Sent once more, on
                # another connection. A reset (RST) or a second disconnect is not retried;
                # a server that died is refused at connect on the second try.
                resp = await send()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, aiohttp) from None
        return _AiohttpResponse(resp, aiohttp)

    async def get(self, url: str) -> RawResponse:
        aiohttp = self._aiohttp
        try:
            resp = await self._session.get(url)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, aiohttp) from None
        return _AiohttpResponse(resp, aiohttp)

    async def aclose(self) -> None:
        await self._session.close()


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def check_choice(http: str, transport: httpx.AsyncBaseTransport | None) -> None:
    """Refuse an unknown ``http`` choice, or aiohttp asked for with an httpx transport."""
    if http not in ("auto", "native", "aiohttp", "httpx"):
        raise ConfigError(
            f"http must be auto, native, aiohttp or httpx, got {http!r}",
            hint="leave it at auto unless you need one library (httpx for a custom transport)",
        )
    if http in ("aiohttp", "native") and transport is not None:
        raise ConfigError(
            f"a custom transport is an httpx transport; it cannot be used with http: {http}",
            hint=f"drop http: {http} (auto picks httpx when a transport is given)",
        )


def make_client(
    http: str,
    *,
    headers: Mapping[str, str],
    max_connections: int,
    timeout: float,
    connect_timeout: float,
    transport: httpx.AsyncBaseTransport | None,
    urls: Sequence[str] = (),
    tls: ssl.SSLContext | None = None,
) -> HTTPClient:
    """Build the client ``http`` names: ``auto`` (with no custom transport: native when
    ``httptools`` is importable, else aiohttp when it is, else httpx; httpx also when the
    environment names a proxy it can use for one of ``urls``, see :mod:`._reach`), ``native``,
    ``aiohttp`` or ``httpx``; every one verifies TLS with ``tls`` when given. Called inside
    the event loop the client will serve."""
    check_choice(http, transport)
    if transport is None:
        http = choose(http, urls)  # httpx for a proxy the environment names
    if http == "auto" and transport is None:
        http = "native" if _importable("httptools") else "aiohttp"
        if http == "aiohttp" and not _importable("aiohttp"):
            http = "httpx"
    if http == "native":
        try:
            from flowopt.backends._h1 import NativeClient
        except ImportError as exc:
            raise MissingDependencyError(
                "httptools", "gateway", "the native backend client"
            ) from exc
        return NativeClient(
            headers=headers,
            max_connections=max_connections,
            timeout=timeout,
            connect_timeout=connect_timeout,
            tls=tls,
        )
    if http == "aiohttp":
        try:
            return AiohttpClient(
                headers=headers,
                max_connections=max_connections,
                timeout=timeout,
                connect_timeout=connect_timeout,
                tls=tls,
            )
        except ImportError as exc:
            raise MissingDependencyError(
                "aiohttp", "gateway", "the aiohttp backend client"
            ) from exc
    try:
        return HttpxClient(
            headers=headers,
            max_connections=max_connections,
            timeout=timeout,
            connect_timeout=connect_timeout,
            transport=transport,
            tls=tls,
        )
    except (ValueError, ImportError, httpx.InvalidURL) as exc:  # the proxy variables
        raise ConfigError(
            f"httpx cannot use the proxy settings of the environment: {exc}",
            hint="fix or unset HTTP_PROXY/HTTPS_PROXY/ALL_PROXY (SOCKS5 needs the socksio"
            " package), or add the engine's host to NO_PROXY",
        ) from None
