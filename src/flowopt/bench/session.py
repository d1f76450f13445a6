"""One benchmark run from a configuration: build the target(s), run the load shape, and
collect a :class:`~flowopt.bench.result.BenchResult`.

``--compare`` (spec targets only) runs the *same* workload, seed for seed, once with the
full middleware stack and once without each middleware in turn, so the ratios isolate what
each middleware buys or costs on this workload. Variants run one after another, never at
once: concurrent variants would share the server and measure each other.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flowopt.bench.result import BenchResult, VariantResult
from flowopt.bench.runner import (
    Progress,
    run_concurrency_sweep,
    run_rate_sweep,
    run_soak,
    run_users,
)
from flowopt.bench.stats import SLO
from flowopt.bench.targets import HTTPTarget, PipelineTarget, Target
from flowopt.bench.workload import Workload, faq_workload, jsonl_workload
from flowopt.errors import ConfigError

__all__ = ["BenchConfig", "run_bench"]

Shape = Literal["users", "concurrency", "rate", "soak"]


@dataclass(slots=True)
class BenchConfig:
    """What to run. Exactly one of ``spec`` / ``url`` names the target."""

    spec: str | None = None
    url: str | None = None
    model: str | None = None
    api_key: str | None = None
    shape: Shape = "users"
    users: int = 4
    requests: int = 4
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    rates: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    duration: float = 30.0
    prompts: str = "faq"
    zipf_s: float = 1.1
    system: str | None = None
    max_tokens: int = 64
    temperature: float = 0.0
    endpoint: str = "chat"
    extra: dict[str, Any] = field(default_factory=dict)
    slo: SLO = field(default_factory=SLO)
    compare: bool = False
    seed: int = 0
    progress: bool | None = None
    timeout: float = 300.0

    def validate(self) -> None:
        if (self.spec is None) == (self.url is None):
            raise ConfigError(
                "name one target: a SPEC file or --url",
                hint="flowopt bench pipeline.yaml, or flowopt bench --url URL",
            )
        if self.compare and self.spec is None:
            raise ConfigError(
                "--compare needs a spec target (it removes middleware one by one)",
                hint="pass the pipeline's YAML spec instead of --url",
            )
        if self.users < 1 or self.requests < 1 or any(c < 1 for c in self.concurrency):
            raise ConfigError("users, requests and concurrency levels must be >= 1", hint="")
        if any(r <= 0 for r in self.rates) or self.duration <= 0:
            raise ConfigError("rates and duration must be > 0", hint="")

    def workload(self) -> Workload:
        if self.prompts == "faq":
            return faq_workload(zipf_s=self.zipf_s, seed=self.seed, system=self.system)
        return jsonl_workload(self.prompts, seed=self.seed, system=self.system)


def _variants(cfg: BenchConfig) -> list[tuple[str, Any]]:
    """(name, Pipeline) for the full spec and, with compare, one per removed middleware."""
    from flowopt.pipeline import Pipeline
    from flowopt.spec import load_spec

    assert cfg.spec is not None
    spec = load_spec(cfg.spec)
    out: list[tuple[str, Any]] = [("full", Pipeline(spec))]
    if cfg.compare:
        if not spec.middleware:
            raise ConfigError(
                f"{cfg.spec} has no middleware to compare",
                hint="--compare removes each middleware in turn",
            )
        for i, use in enumerate(spec.middleware):
            rest = spec.middleware[:i] + spec.middleware[i + 1 :]
            variant = spec.model_copy(update={"middleware": rest})
            out.append((f"without {use.name}", Pipeline(variant)))
        if len(spec.middleware) > 1:
            out.append(("no middleware", Pipeline(spec.model_copy(update={"middleware": ()}))))
    return out


async def _run_shape(
    cfg: BenchConfig, target: Target, progress: Progress, name: str
) -> VariantResult:
    wl = cfg.workload()  # a fresh, identically seeded workload per variant
    if cfg.shape == "users":
        lv = await run_users(
            target, wl, users=cfg.users, requests=cfg.requests, slo=cfg.slo, progress=progress
        )
        return VariantResult(name, [lv])
    if cfg.shape == "concurrency":
        return VariantResult(
            name,
            await run_concurrency_sweep(
                target,
                wl,
                levels=cfg.concurrency,
                requests_per_user=cfg.requests,
                slo=cfg.slo,
                progress=progress,
            ),
        )
    if cfg.shape == "rate":
        return VariantResult(
            name,
            await run_rate_sweep(
                target,
                wl,
                rates=cfg.rates,
                duration=cfg.duration,
                slo=cfg.slo,
                progress=progress,
                seed=cfg.seed,
            ),
        )
    overall, windows = await run_soak(
        target,
        wl,
        concurrency=cfg.concurrency[0],
        duration=cfg.duration,
        slo=cfg.slo,
        progress=progress,
    )
    return VariantResult(name, [overall], windows)


def _settings(cfg: BenchConfig) -> dict[str, Any]:
    s: dict[str, Any] = {
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "endpoint": cfg.endpoint,
        "seed": cfg.seed,
    }
    if cfg.shape == "users":
        s |= {"users": cfg.users, "requests": cfg.requests}
    elif cfg.shape == "concurrency":
        s |= {"concurrency": cfg.concurrency, "requests_per_user": cfg.requests}
    elif cfg.shape == "rate":
        s |= {"rates": cfg.rates, "duration_s": cfg.duration}
    else:
        s |= {"concurrency": cfg.concurrency[0], "duration_s": cfg.duration}
    if cfg.slo.set:
        s["slo"] = {
            "ttft_ms": cfg.slo.ttft_ms,
            "e2e_ms": cfg.slo.e2e_ms,
            "tpot_ms": cfg.slo.tpot_ms,
        }
    return s


async def run_bench(cfg: BenchConfig) -> BenchResult:
    """Run the configured benchmark and return its result (nothing is printed here
    except the progress bar)."""
    cfg.validate()
    progress = Progress(cfg.progress)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    variants: list[VariantResult] = []
    if cfg.url is not None:
        http = HTTPTarget(
            cfg.url,
            model=cfg.model,
            api_key=cfg.api_key,
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            endpoint=cfg.endpoint,
            timeout=cfg.timeout,
            extra=cfg.extra,
        )
        try:
            await http.resolve_model()
            variants.append(await _run_shape(cfg, http, progress, "target"))
        finally:
            await http.aclose()
        name = cfg.url
    else:
        name = f"spec:{Path(cfg.spec or '').name}"
        for vname, pipe in _variants(cfg):
            target = PipelineTarget(
                pipe, max_tokens=cfg.max_tokens, temperature=cfg.temperature, name=vname
            )
            try:
                variants.append(await _run_shape(cfg, target, progress, vname))
            finally:
                await target.aclose()
    return BenchResult(
        target=name,
        shape=cfg.shape,
        workload=cfg.workload().describe(),
        settings=_settings(cfg),
        variants=variants,
        started_at=started,
        duration_s=time.perf_counter() - t0,
    )
