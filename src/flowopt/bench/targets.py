"""What a benchmark sends requests to, and how one request is timed.

Two kinds of target share one measurement: every request is streamed, and the client
stamps the first content token (TTFT), each following token (inter-token latency) and the
end (E2E). Streaming is measured even when the application would not stream, because it
is the only way to see time to first token; output token counts come from the server's
usage report, not from counting chunks.

- :class:`HTTPTarget`: any OpenAI-compatible base URL (flowopt's gateway, vLLM itself,
  anything else), over one pooled httpx client.
- :class:`PipelineTarget`: a flowopt spec in-process, through ``Pipeline.acall``, so the
  middleware stack is measured without any HTTP in between.

The client's own work (parsing each event) is timed separately and reported
(``client_ms``), so a slow client does not pass for a slow target.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from flowopt.bench.workload import Prompt
from flowopt.errors import FlowoptError

__all__ = ["HTTPTarget", "PipelineTarget", "Sample", "Target", "error_kind"]


@dataclass(slots=True)
class Sample:
    """The timings of one request (seconds, relative to the run's start)."""

    start: float
    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    e2e: float = 0.0
    output_tokens: int = 0
    input_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    client_ms: float = 0.0
    cached: bool = False

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


class Target(Protocol):
    """Sends one prompt and returns its :class:`Sample`. Never raises for a failed
    request: failures are data (``ok=False``, ``error`` = kind)."""

    name: str

    async def send(self, prompt: Prompt, *, t0: float) -> Sample: ...

    async def aclose(self) -> None: ...


def error_kind(exc: BaseException) -> str:
    """A short, stable label for an error (metrics and reports group by it)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.HTTPError):
        return "transport"
    if isinstance(exc, FlowoptError):
        code = exc.code.removeprefix("flowopt.")
        status = getattr(exc, "status", None)
        return f"http_{status}" if status else code
    return type(exc).__name__


class HTTPTarget:
    """An OpenAI-compatible server. ``endpoint`` is ``chat`` or ``completions``."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 64,
        temperature: float = 0.0,
        endpoint: str = "chat",
        timeout: float = 300.0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.name = self.base_url
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.endpoint = endpoint
        self.extra = dict(extra or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=4096, max_keepalive_connections=4096),
        )

    async def resolve_model(self) -> str:
        if self.model is None:
            resp = await self._client.get(self.base_url + "/v1/models")
            resp.raise_for_status()
            self.model = str(resp.json()["data"][0]["id"])
        return self.model

    def _body(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra,
        }
        if self.endpoint == "chat":
            body["messages"] = list(prompt.messages)
            return "/v1/chat/completions", body
        body["prompt"] = prompt.text
        return "/v1/completions", body

    async def send(self, prompt: Prompt, *, t0: float) -> Sample:
        path, body = self._body(prompt)
        start = time.perf_counter()
        s = Sample(start=start - t0)
        client_s = 0.0
        last: float | None = None
        chunks = 0
        try:
            async with self._client.stream("POST", self.base_url + path, json=body) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    s.error = f"http_{resp.status_code}"
                    return s
                async for line in resp.aiter_lines():
                    now = time.perf_counter()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        s.ok = True
                        break
                    obj = json.loads(data)
                    if "error" in obj and not obj.get("choices"):
                        s.error = "stream_error"
                        break
                    usage = obj.get("usage")
                    if usage:
                        s.output_tokens = int(usage.get("completion_tokens") or 0)
                        s.input_tokens = int(usage.get("prompt_tokens") or 0)
                    choices = obj.get("choices") or ()
                    if choices:
                        c = choices[0]
                        delta = c.get("delta") or {}
                        text = delta.get("content") if "delta" in c else c.get("text")
                        if text:
                            chunks += 1
                            if last is None:
                                s.ttft = now - start
                            else:
                                s.itl.append(now - last)
                            last = now
                    client_s += time.perf_counter() - now
        except Exception as exc:  # a failed request is a data point, not a crash
            s.error = error_kind(exc)
            s.ok = False
        finally:
            s.e2e = time.perf_counter() - start
            s.client_ms = client_s * 1000.0
        if s.ok and s.output_tokens == 0:
            s.output_tokens = chunks  # server sent no usage: one chunk ~ one token
        return s

    async def aclose(self) -> None:
        await self._client.aclose()


class PipelineTarget:
    """A flowopt pipeline in-process: one request through ``Pipeline.acall``."""

    def __init__(
        self,
        pipe: Any,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        name: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.pipe = pipe
        self.name = name or f"spec:{pipe.name}"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.tenant = tenant

    async def send(self, prompt: Prompt, *, t0: float) -> Sample:
        from flowopt.types import Params, Request

        start = time.perf_counter()
        s = Sample(start=start - t0)
        last: float | None = None
        try:
            request = Request.chat(
                list(prompt.messages),
                stream=True,
                tenant=self.tenant,
                params=Params(max_tokens=self.max_tokens, temperature=self.temperature),
            )
            response = await self.pipe.acall(request)
            if response.stream is None:
                final = response
                s.ttft = time.perf_counter() - start
            else:
                async for chunk in response.stream:
                    now = time.perf_counter()
                    if chunk.text:
                        if last is None:
                            s.ttft = now - start
                        else:
                            s.itl.append(now - last)
                        last = now
                final = response.stream.response
            s.output_tokens = final.usage.output_tokens
            s.input_tokens = final.usage.input_tokens
            s.cached = bool(final.cached)
            s.ok = True
        except Exception as exc:
            s.error = error_kind(exc)
        finally:
            s.e2e = time.perf_counter() - start
        return s

    async def aclose(self) -> None:
        await self.pipe.aclose()
