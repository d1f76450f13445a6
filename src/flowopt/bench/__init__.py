"""``flowopt bench``: degradation testing — where quality of service starts to slip.

::

    from flowopt.bench import BenchConfig, run_bench, terminal_summary
    result = asyncio.run(run_bench(BenchConfig(url="http://127.0.0.1:8000",
                                               shape="concurrency", concurrency=[1, 4, 16])))
    print(terminal_summary(result))

Modules, one idea each: :mod:`~flowopt.bench.workload` (prompts),
:mod:`~flowopt.bench.targets` (timing one request), :mod:`~flowopt.bench.runner` (load
shapes), :mod:`~flowopt.bench.stats` (percentiles, goodput, knee, breaking point),
:mod:`~flowopt.bench.result` / :mod:`~flowopt.bench.report` (JSON, terminal, HTML),
:mod:`~flowopt.bench.session` (a run from a config, ``--compare`` ablations).
"""

from flowopt.bench.report import render_html, terminal_summary, write_html
from flowopt.bench.result import BenchResult, VariantResult
from flowopt.bench.session import BenchConfig, run_bench
from flowopt.bench.stats import SLO, LevelStats, breaking_point, find_knee, percentile
from flowopt.bench.targets import HTTPTarget, PipelineTarget, Sample
from flowopt.bench.workload import Prompt, Workload, faq_workload, jsonl_workload

__all__ = [
    "SLO",
    "BenchConfig",
    "BenchResult",
    "HTTPTarget",
    "LevelStats",
    "PipelineTarget",
    "Prompt",
    "Sample",
    "VariantResult",
    "Workload",
    "breaking_point",
    "faq_workload",
    "find_knee",
    "jsonl_workload",
    "percentile",
    "render_html",
    "run_bench",
    "terminal_summary",
    "write_html",
]
