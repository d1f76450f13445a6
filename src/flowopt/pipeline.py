"""The Pipeline: a spec made runnable — backends, one middleware stack and a LangGraph graph.

Built once and immutable: middleware and backends are resolved and instantiated when the
pipeline is built (so a bad name fails at build time, not at the first request), the stack
is composed once, and the spec cannot change afterwards. The async methods are the core;
``invoke``/``stream``/``batch`` are thin facades that run them on a background loop.

Default middleware order is the list order, outermost first. The recommended order of the
built-in layers is ``cache -> triage -> cascade -> resilience`` (then the backend), which
is what :data:`RECOMMENDED_ORDER` lists (tests check every name in it is registered).

**Inputs** (text, ``{"input": ...}``, or a chat) and how an LLM step sees a chat are
described in :mod:`flowopt._inputs`; ``params=`` applies to the answer steps only.
"""

from __future__ import annotations

import asyncio
import inspect
import string
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from opentelemetry import trace

from flowopt import _runner, registry
from flowopt._inputs import (
    Input,
    answer_steps,
    compress_marks,
    initial_state,
    run_params,
    step_messages,
)
from flowopt._run_options import RunOptions, run_options, trace_id_of, with_parent
from flowopt.backends.base import Backend
from flowopt.errors import ConfigError, FlowoptError, InvalidRequestError, StepError
from flowopt.graph import build_graph, close_graph
from flowopt.middleware.base import (
    CallNext,
    Middleware,
    PipelineContext,
    Use,
    build_stack,
)
from flowopt.middleware.steer import steered_backend
from flowopt.result import Hop, Result, StepEvent, TokenEvent
from flowopt.spec import PipelineSpec, StepSpec, load_spec
from flowopt.tracing import PipelineTracing, record_error
from flowopt.types import Params, Request, Response

__all__ = ["RECOMMENDED_ORDER", "Input", "Pipeline", "answer_steps", "load"]

RECOMMENDED_ORDER = ("cache", "triage", "cascade", "resilience")
"""Built-in layers in the order they compose best, outermost first: the cache answers
before any routing is paid for; triage picks a starting tier for the cascade; resilience
sits right above the backend so retries do not re-run the layers above it."""


class _StateView(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


class Pipeline:
    """A runnable pipeline. Build it with :func:`pipeline` or :func:`load`.

    ``graph`` is the compiled LangGraph graph (checkpointers, ``get_graph()``, stream
    modes all work on it). ``spec`` is the validated description; two pipelines are equal
    when their specs are.
    """

    def __init__(self, spec: PipelineSpec, *, checkpointer: Any = None) -> None:
        self.spec = spec
        self.name = spec.name
        self._backends: dict[str, Backend] = {
            "default": self._make_backend(spec.backend, "backend")
        }
        for bname, buse in spec.backends.items():
            self._backends[bname] = self._make_backend(buse, f"backends.{bname}")
        self._middleware: list[tuple[str, Middleware]] = []
        for i, use in enumerate(spec.middleware):
            obj = registry.instantiate(use, "middleware", f"middleware[{i}] ({use.name})")
            if not callable(obj):
                raise ConfigError(
                    f"middleware[{i}] ({use.name}) is not callable",
                    hint="a middleware is `async def __call__(self, request, call_next)`",
                )
            name = str(getattr(obj, "name", None) or use.name)
            self._middleware.append((name, obj))
        # This pipeline's tracer and capture setting; building changes no global state.
        self._tracing = PipelineTracing.from_spec(spec.tracing)
        # One stack, ending in the steering terminal: where a request goes is decided by its
        # typed route (a pinned step, or a layer such as triage choosing), never by which
        # stack it entered (middleware/steer.py).
        self._handler: CallNext = build_stack(
            self._middleware,
            steered_backend(self._backends, default="default", tracing=self._tracing),
            tracing=self._tracing,
        )
        self._params: dict[str, Params] = {}
        self._templates: dict[str, str] = {}
        for step in spec.steps:
            if step.kind == "llm":
                merged = {**spec.defaults, **step.params}
                try:
                    self._params[step.name] = Params(**merged)
                except (TypeError, FlowoptError) as exc:
                    raise ConfigError(
                        f"step {step.name!r}: invalid params {merged}: {exc}",
                        hint="params take temperature, top_p, max_tokens, stop, seed, "
                        "logprobs, top_logprobs, response_format, extra",
                    ) from None
                self._templates[step.name] = step.template_id(spec.name)
            else:
                step.callable()  # import now: a bad reference fails at build time
        self.graph = build_graph(spec, self._run_step, checkpointer=checkpointer, pipeline=self)
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._tracer = self._tracing.tracer

    # -- construction helpers ------------------------------------------------------------
    @staticmethod
    def _make_backend(use: Use, where: str) -> Backend:
        obj = registry.instantiate(use, "backend", where)
        for attr in ("generate", "model_info"):
            if not hasattr(obj, attr):
                raise ConfigError(
                    f"{where}: {obj!r} is not a backend (no {attr}())",
                    hint="a backend implements flowopt.backends.Backend",
                )
        return obj  # type: ignore[no-any-return]

    # -- equality & serialisation ----------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.spec == other.spec

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        mws = ", ".join(n for n, _ in self._middleware)
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.spec.steps]}, middleware=[{mws}])"  # noqa: E501

    def to_yaml(self) -> str:
        return self.spec.to_yaml()

    @property
    def backends(self) -> Mapping[str, Backend]:
        return dict(self._backends)

    @property
    def middleware(self) -> list[tuple[str, Middleware]]:
        return list(self._middleware)

    @cached_property
    def answer_steps(self) -> frozenset[str]:
        """The LLM steps whose output can be the run's answer (see :func:`answer_steps`)."""
        return answer_steps(self.spec)

    def handler(self) -> CallNext:
        """The composed middleware stack (for direct single calls): a request goes to the
        backend its ``route`` names, the default one when it names none."""
        return self._handler

    @property
    def tracing(self) -> PipelineTracing:
        """This pipeline's tracing settings (tracer, content capture, middleware spans)."""
        return self._tracing

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Run every middleware's ``setup(ctx)`` once (done lazily by the first call)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            ctx = PipelineContext(
                name=self.name,
                backend=self._backends["default"],
                backends=self.backends,
                steered=True,  # the stack ends in the steering terminal (middleware/steer.py)
                tracing=self._tracing,
            )
            for _, mw in self._middleware:
                setup = getattr(mw, "setup", None)
                if setup is not None:
                    await setup(ctx)
            self._started = True

    async def aclose(self) -> None:
        for _, mw in self._middleware:
            if (close := getattr(mw, "aclose", None)) is not None:
                await close()
        await close_graph(self.graph)
        for b in self._backends.values():
            await b.aclose()
        if self._tracing.provider is not None:
            # the spec's own exporter: send what it holds now (it is shut down at exit)
            await asyncio.to_thread(self._tracing.force_flush)
        self._started = False

    def close(self) -> None:
        _runner.run(self.aclose())

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one LLM call (no graph) -----------------------------------------------------------
    async def acall(self, request: Request, *, backend: str | None = None) -> Response:
        """Send one request through the middleware stack (bypassing the steps).

        ``backend`` pins the request to that backend (no layer may re-route it); without
        it the request goes where its own ``route`` says, or where the layers choose.
        """
        await self.start()
        if backend is not None:
            self._check_backend(backend)
            request = request.pinned_to(backend)
        return await self._handler(request)

    def _check_backend(self, backend: str) -> None:
        if backend not in self._backends:
            raise ConfigError(
                f"pipeline {self.name!r} has no backend {backend!r} "
                f"(it has {sorted(self._backends)})",
                hint="declare it under `backends:` in the spec",
            )

    # -- step execution ---------------------------------------------------------------------
    async def _run_step(
        self, step: StepSpec, state: dict[str, Any], config: RunnableConfig
    ) -> dict[str, Any]:
        opts: RunOptions = (config.get("configurable") or {})["flowopt"]
        # The parent is passed explicitly: LangGraph runs nodes in tasks whose context is
        # copied from whichever task drives the graph, which for a sync or streamed run is
        # not the one that opened the pipeline span.
        with self._tracer.start_as_current_span(f"step {step.name}", context=opts.parent) as span:
            span.set_attribute("flowopt.step.name", step.name)
            span.set_attribute("flowopt.step.kind", step.kind)
            try:
                if step.kind == "function":
                    return await self._run_function(step, state)
                return await self._run_llm(step, state, opts)
            except BaseException as exc:
                record_error(span, exc)
                raise

    async def _run_function(self, step: StepSpec, state: dict[str, Any]) -> dict[str, Any]:
        fn = step.callable()
        view = {k: v for k, v in state.items() if not k.startswith("_")}
        try:
            out = fn(view)
            if inspect.isawaitable(out):
                out = await out
        except FlowoptError:
            raise
        except Exception as exc:
            raise StepError(step.name, exc) from exc
        return {step.output_key: out, "_trail": [step.name]}

    def _render(self, step: StepSpec, tpl: str, state: dict[str, Any]) -> str:
        try:
            return string.Formatter().vformat(tpl, (), _StateView(state))
        except (KeyError, IndexError, AttributeError) as exc:
            raise InvalidRequestError(
                f"step {step.name!r}: template field {exc} has no value in this run",
                hint="the step that produces it did not run before this one; check edges",
            ) from None

    async def _run_llm(
        self, step: StepSpec, state: dict[str, Any], opts: RunOptions
    ) -> dict[str, Any]:
        assert step.prompt is not None
        system = self._render(step, step.system, state) if step.system else None
        messages = step_messages(system, self._render(step, step.prompt, state), state)
        request = Request(
            messages=tuple(messages),
            params=opts.params.get(step.name) or self._params[step.name],
            stream=opts.stream,
            tenant=opts.tenant,
            user=opts.user,
            template=self._templates[step.name],
            step=step.name,
            priority=opts.priority,
            deadline=opts.deadline,
            metadata=compress_marks(step.compressible, state, opts.metadata),
            # a step declared on a backend is pinned there: triage, cascade and fallback
            # leave it alone (tests/routing/test_pinned.py)
            route=step.backend,
            pinned=step.backend is not None,
        )
        response = await self._handler(request)
        if response.stream is not None and not response.stream.done:
            from langgraph.config import get_stream_writer

            writer = get_stream_writer()
            async with response.stream as chunks:
                async for chunk in chunks:
                    if chunk.text:
                        writer(TokenEvent(step.name, chunk.text))
            final = response.stream.response
            assert final is not None
        else:
            final = response if response.stream is None else await response.complete()
        opts.hops.append(Hop(step.name, final))
        return {step.output_key: final.text, "_trail": [step.name]}

    # -- runs --------------------------------------------------------------------------------
    def _prepare(
        self,
        input: Input,
        user: str | None,
        tenant: str | None,
        timeout: float | None,
        stream: bool,
        priority: int,
        metadata: Mapping[str, Any] | None,
        thread_id: str | None,
        params: Params | Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], RunnableConfig]:
        state = initial_state(input, thread_id=thread_id)
        state.setdefault("user", user)
        state.setdefault("tenant", tenant)
        if timeout is not None and timeout <= 0:
            raise InvalidRequestError(f"timeout must be > 0, got {timeout}", hint="seconds")
        opts = RunOptions(
            tenant=tenant,
            user=user,
            deadline=None if timeout is None else time.monotonic() + timeout,
            stream=stream,
            priority=priority,
            metadata=dict(metadata or {}),
            params=self._run_params(params),
        )
        configurable: dict[str, Any] = {"flowopt": opts}
        if thread_id is not None:
            configurable["thread_id"] = thread_id
        return state, {"configurable": configurable}

    def _run_params(self, params: Params | Mapping[str, Any] | None) -> dict[str, Params]:
        """The caller's params over each answer step's own (empty when the caller sets none)."""
        return run_params(params, {n: self._params[n] for n in self.answer_steps})

    def _result(
        self, state: Mapping[str, Any], opts: RunOptions, started: float, trace_id: str | None
    ) -> Result:
        trail: list[str] = state.get("_trail") or []
        by_name = {s.name: s for s in self.spec.steps}
        text = ""
        if trail:
            out = state.get(by_name[trail[-1]].output_key)
            text = out if isinstance(out, str) else ("" if out is None else str(out))
        return Result(
            text=text,
            outputs={k: v for k, v in state.items() if not k.startswith("_")},
            hops=tuple(opts.hops),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            pipeline=self.name,
            trace_id=trace_id,
            speculation=tuple(opts.speculation),
        )

    def _span(self) -> trace.Span:
        span = self._tracer.start_span(f"pipeline {self.name}")
        span.set_attribute("flowopt.pipeline.name", self.name)
        return span

    async def ainvoke(
        self,
        input: Input,
        *,
        user: str | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        priority: int = 0,
        metadata: Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        params: Params | Mapping[str, Any] | None = None,
    ) -> Result:
        """Run the pipeline on one input (text, a chat, or a mapping; see the module
        docstring) and return its :class:`Result`. ``params`` override the answer steps'
        sampling parameters; ``timeout`` (seconds) is the deadline of every LLM call."""
        await self.start()
        state, config = self._prepare(
            input, user, tenant, timeout, False, priority, metadata, thread_id, params
        )
        started = time.perf_counter()
        span = self._span()
        config = with_parent(config, span)
        try:
            final = await self.graph.ainvoke(state, config)
            result = self._result(final, run_options(config), started, trace_id_of(span))
            span.set_attribute("flowopt.pipeline.hops", len(result.hops))
            return result
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            span.end()

    async def astream(
        self,
        input: Input,
        *,
        user: str | None = None,
        tenant: str | None = None,
        timeout: float | None = None,
        priority: int = 0,
        metadata: Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        params: Params | Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TokenEvent | StepEvent | Result]:
        """Yield :class:`TokenEvent` as LLM steps stream, :class:`StepEvent` as steps end,
        and the :class:`Result` last. Arguments as for :meth:`ainvoke`."""
        await self.start()
        state, config = self._prepare(
            input, user, tenant, timeout, True, priority, metadata, thread_id, params
        )
        started = time.perf_counter()
        span = self._span()
        config = with_parent(config, span)
        final: dict[str, Any] = dict(state)
        try:
            async for mode, data in self.graph.astream(
                state, config, stream_mode=["custom", "updates", "values"]
            ):
                if mode == "custom" and isinstance(data, TokenEvent):
                    yield data
                elif mode == "updates" and isinstance(data, Mapping):
                    for node, update in data.items():
                        step = next((s for s in self.spec.steps if s.name == node), None)
                        if step is not None and isinstance(update, Mapping):
                            yield StepEvent(node, update.get(step.output_key))
                elif mode == "values" and isinstance(data, Mapping):
                    final = dict(data)
            result = self._result(final, run_options(config), started, trace_id_of(span))
        except BaseException as exc:
            record_error(span, exc)
            span.end()
            raise
        span.end()
        yield result

    async def abatch(
        self,
        inputs: Sequence[Input],
        *,
        concurrency: int = 32,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Result | BaseException]:
        """Run many inputs at once, at most ``concurrency`` in flight, keeping the server's
        continuous batching full. Results come back in input order. With
        ``return_exceptions`` a failed input yields its error instead of raising."""
        if concurrency < 1:
            raise InvalidRequestError(f"concurrency must be >= 1, got {concurrency}", hint="")
        await self.start()
        sem = asyncio.Semaphore(concurrency)

        async def one(item: Input) -> Result | BaseException:
            async with sem:
                try:
                    return await self.ainvoke(item, **kwargs)
                except FlowoptError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(i) for i in inputs)))

    # -- sync facades ----------------------------------------------------------------------
    def invoke(self, input: Input, **kwargs: Any) -> Result:
        """Sync :meth:`ainvoke`."""
        return _runner.run(self.ainvoke(input, **kwargs))

    def stream(self, input: Input, **kwargs: Any) -> Iterator[TokenEvent | StepEvent | Result]:
        """Sync :meth:`astream`."""
        return _runner.iterate(self.astream(input, **kwargs))

    def batch(self, inputs: Sequence[Input], **kwargs: Any) -> list[Result | BaseException]:
        """Sync :meth:`abatch`."""
        return _runner.run(self.abatch(inputs, **kwargs))


def load(path: str | Path, *, checkpointer: Any = None) -> Pipeline:
    """Build a pipeline from a YAML spec file."""
    return Pipeline(load_spec(path), checkpointer=checkpointer)
