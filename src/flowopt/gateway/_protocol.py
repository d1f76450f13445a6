"""The HTTP connection limits uvicorn does not have: header size, count and time, and a
connection cap that answers instead of holding the socket.

Why a protocol subclass: these limits act before a request exists, so no ASGI app can
enforce them. uvicorn's httptools protocol buffers a request line and headers of any size
and any number, waits for them forever (its only timer is the keep-alive one, armed after
a response), and its ``limit_concurrency`` still accepts and holds every connection. So a
slowloris client, one 16 MB header or 20,000 idle sockets each cost the server until the
client chose to leave. This subclass of uvicorn's own protocol adds, per connection:

- ``header_timeout``: the request line and headers must arrive within it (from the
  connection, or from the first byte of a later request on it), else 408 and close;
- ``max_header_bytes`` / ``max_headers``: past either, 431 and close; bytes are counted as
  they arrive, so a header that never ends is refused at the limit, not when it ends;
- ``max_connections``: a connection past it is answered 503 with ``Retry-After`` and
  closed at once.

Every answer is OpenAI-shaped JSON with ``Connection: close``. The keep-alive idle timeout
is uvicorn's own (``timeout_keep_alive``), the body's size and time limits are the app's
(:func:`flowopt.gateway._body.read_json`).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from flowopt.gateway._json import dumps

if TYPE_CHECKING:
    from flowopt._gateway_spec import GatewaySpec

__all__ = ["guarded_protocol"]


def _answer(status: int, code: str, message: str, extra: dict[str, str]) -> bytes:
    body = dumps(
        {
            "error": {
                "message": message,
                "type": "service_unavailable" if status == 503 else "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    reason = HTTPStatus(status).phrase
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        "x-flowopt-error-source: flowopt",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def guarded_protocol(settings: GatewaySpec) -> Any:
    """uvicorn's httptools protocol class with ``settings``' connection limits; pass it as
    ``uvicorn.Config(http=...)``."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    header_timeout = settings.header_timeout
    max_header_bytes = settings.max_header_bytes
    max_headers = settings.max_headers
    max_connections = settings.max_connections

    class GuardedProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """One client connection, with the limits above."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._rejected = False
            self._in_head = True
            self._head_bytes = 0
            self._head_count = 0
            self._head_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > max_connections:
                self._reject(
                    503,
                    "too_many_connections",
                    f"the server holds its maximum of {max_connections} connections; retry shortly",
                    {"retry-after": "1"},
                )
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        # -- the header timer --------------------------------------------------------
        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._reject(
                    408,
                    "request_timeout",
                    f"the request headers did not arrive within {header_timeout:g}s",
                )

        # -- refusing ----------------------------------------------------------------
        def _reject(
            self, status: int, code: str, message: str, extra: dict[str, str] | None = None
        ) -> None:
            self._rejected = True
            self._disarm()
            self.transport.write(_answer(status, code, message, extra or {}))
            self.transport.close()

        def _too_large(self, what: str) -> None:
            self._reject(431, "request_header_fields_too_large", what)

        # -- parser callbacks ----------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_count = 0
            self._arm()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_count += 1
            if self._head_count > max_headers:
                self._too_large(f"the request has more than {max_headers} header fields")
                raise _Stop()
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            self._disarm()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._rejected:
                return
            self._unset_keepalive_if_required()
            if self._in_head:
                self._head_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                if not self._rejected:  # a refusal above already answered
                    self.logger.warning("Invalid HTTP request received.")
                    self.send_400_response("Invalid HTTP request received.")
                    self._rejected = True
                return
            if self._in_head and self._head_bytes > max_header_bytes:
                self._too_large(f"the request headers are larger than {max_header_bytes} bytes")

    return GuardedProtocol


class _Stop(Exception):
    """Raised from a parser callback to stop parsing a refused request."""
