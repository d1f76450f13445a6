"""``flowopt bench``: load a target until quality of service slips, and report where."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

__all__ = ["bench"]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


@click.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--url", help="Any OpenAI-compatible base URL (flowopt serve, vLLM...).")
@click.option("--model", help="Model name to request (default: the first /v1/models lists).")
@click.option("--api-key", envvar="FLOWOPT_BENCH_API_KEY", help="Bearer key for --url.")
@click.option("--users", type=int, default=None, help="Shape: U users x R requests each.")
@click.option(
    "--requests",
    "requests_",
    type=int,
    default=4,
    show_default=True,
    help="Requests per user (users shape and each concurrency level).",
)
@click.option(
    "--concurrency", default=None, help="Shape: concurrency sweep, e.g. 1,2,4,8,16 (closed loop)."
)
@click.option(
    "--rate", default=None, help="Shape: Poisson arrival-rate sweep (req/s), e.g. 0.5,1,2."
)
@click.option(
    "--soak",
    "soak",
    type=float,
    default=None,
    help="Shape: soak for this many seconds at --concurrency (first value, default 4).",
)
@click.option(
    "--duration", type=float, default=30.0, show_default=True, help="Seconds per rate level."
)
@click.option(
    "--prompts",
    default="faq",
    show_default=True,
    help="'faq' (built-in Zipf FAQ workload) or a JSONL file.",
)
@click.option(
    "--zipf",
    "zipf_s",
    type=float,
    default=1.1,
    show_default=True,
    help="Popularity skew of the FAQ workload (0 = uniform).",
)
@click.option("--system", default=None, help="A system prompt sent with every request.")
@click.option("--max-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option(
    "--endpoint", type=click.Choice(["chat", "completions"]), default="chat", show_default=True
)
@click.option(
    "--extra", default=None, help="JSON merged into each body, e.g. '{\"ignore_eos\": true}'."
)
@click.option("--slo-ttft-ms", type=float, default=None, help="Goodput: max TTFT.")
@click.option("--slo-e2e-ms", type=float, default=None, help="Goodput: max end-to-end latency.")
@click.option("--slo-tpot-ms", type=float, default=None, help="Goodput: max time per token.")
@click.option("--compare", is_flag=True, help="Ablation: rerun without each middleware (spec).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Per-request timeout, seconds."
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write the HTML report (offline, self-contained) here.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
def bench(
    spec: str | None,
    url: str | None,
    model: str | None,
    api_key: str | None,
    users: int | None,
    requests_: int,
    concurrency: str | None,
    rate: str | None,
    soak: float | None,
    duration: float,
    prompts: str,
    zipf_s: float,
    system: str | None,
    max_tokens: int,
    temperature: float,
    endpoint: str,
    extra: str | None,
    slo_ttft_ms: float | None,
    slo_e2e_ms: float | None,
    slo_tpot_ms: float | None,
    compare: bool,
    seed: int,
    timeout: float,
    json_out: str | None,
    html_out: str | None,
    progress: bool | None,
) -> None:
    """Degradation test of SPEC (in-process) or --url (over HTTP).

    Pick one shape: --users U (with --requests R), --concurrency 1,2,4,..., --rate
    0.5,1,2 (Poisson), or --soak SECONDS. Reports TTFT/E2E/TPOT/ITL percentiles,
    throughput, errors by kind, goodput under the --slo-* bounds, the saturation knee and
    the breaking point.
    """
    from flowopt.bench import SLO, BenchConfig, run_bench, terminal_summary, write_html

    shapes = [
        s
        for s, on in (
            ("users", users is not None),
            ("concurrency", concurrency and soak is None),
            ("rate", rate is not None),
            ("soak", soak is not None),
        )
        if on
    ]
    if len(shapes) > 1:
        raise click.UsageError(f"pick one load shape, got {', '.join(shapes)}")
    shape = shapes[0] if shapes else "users"
    cfg = BenchConfig(
        spec=spec,
        url=url,
        model=model,
        api_key=api_key,
        shape=shape,  # type: ignore[arg-type]
        users=users or 4,
        requests=requests_,
        concurrency=_ints(concurrency) if concurrency else [1, 2, 4, 8] if shape != "soak" else [4],
        rates=_floats(rate) if rate else [0.5, 1.0, 2.0],
        duration=soak if soak is not None else duration,
        prompts=prompts,
        zipf_s=zipf_s,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        endpoint=endpoint,
        extra=json.loads(extra) if extra else {},
        slo=SLO(slo_ttft_ms, slo_e2e_ms, slo_tpot_ms),
        compare=compare,
        seed=seed,
        progress=progress,
        timeout=timeout,
    )
    result = asyncio.run(run_bench(cfg))
    click.echo(terminal_summary(result))
    if json_out:
        result.write_json(json_out)
        click.echo(f"JSON: {Path(json_out).resolve()}")
    if html_out:
        write_html(result, html_out)
        click.echo(f"HTML report: {Path(html_out).resolve()}")
