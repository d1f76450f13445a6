"""When compression pays: a prediction from measured speeds, made before compressing.

Compression costs compressor time now to save prefill time later. Whether that trade wins
depends on the backend (a GPU prefills ~10k tokens/s, the CPU engine here a few hundred),
on the prompt length, and on vLLM's prefix cache (a prefix the server already holds costs
~nothing to prefill, and compressing it turns a hit into a miss). So each backend+model
gets a :class:`PrefillModel` learned online from its own answers — latency (or time to
first token, when streamed) against uncached prompt tokens and completion tokens, a ridge
regression pulled towards a prior so a few samples cannot swing it — and the compressor
gets a :class:`CostModel`, its own measured seconds per token. :func:`predict` compares the
two; the middleware compresses only when the predicted saving beats a margin.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

__all__ = ["CostModel", "Forecast", "PrefillModel", "RecentPrefixes", "predict"]


class PrefillModel:
    """Seconds ≈ a + b·uncached_prompt_tokens + c·completion_tokens, per backend+model.

    ``prior_tps``/``prior_decode_tps``: the speeds assumed before any measurement.
    ``strength``: how many samples' worth of weight the prior has.
    """

    def __init__(
        self,
        prior_tps: float = 1000.0,
        prior_decode_tps: float = 30.0,
        *,
        strength: float = 1.0,
        window: int = 128,
    ) -> None:
        self._prior = np.array([0.05, 1.0 / prior_tps, 1.0 / prior_decode_tps])
        self._strength = strength
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=window)
        self._coef = self._prior.copy()
        self._lock = threading.Lock()

    @property
    def samples(self) -> int:
        return len(self._samples)

    def observe(
        self, uncached_tokens: int, completion_tokens: int, seconds: float, *, ttft: bool
    ) -> None:
        """One measured answer: its latency (``ttft=False``) or time to first token."""
        if seconds <= 0 or uncached_tokens < 0:
            return
        with self._lock:
            self._samples.append(
                (float(uncached_tokens), 0.0 if ttft else float(completion_tokens), seconds)
            )
            self._refit()

    def _refit(self) -> None:
        data = np.array(self._samples)
        # features in thousands of tokens so the ridge penalty weighs them comparably
        x = np.column_stack([np.ones(len(data)), data[:, 0] / 1000.0, data[:, 1] / 1000.0])
        y = data[:, 2]
        w0 = self._prior * np.array([1.0, 1000.0, 1000.0])
        lam = self._strength * np.eye(3)
        coef = np.linalg.solve(x.T @ x + lam, x.T @ y + lam @ w0)
        coef = np.maximum(coef, [0.0, 1e-3 * w0[1], 1e-3 * w0[2]])  # speeds stay finite
        self._coef = coef / np.array([1.0, 1000.0, 1000.0])

    @property
    def seconds_per_prefill_token(self) -> float:
        return float(self._coef[1])

    @property
    def prefill_tps(self) -> float:
        return 1.0 / self.seconds_per_prefill_token


class CostModel:
    """The compressor's own seconds per input token: an exponential average of measured
    runs, starting from ``prior`` (1 ms/token: SmolLM2-135M on one CPU core)."""

    def __init__(self, prior: float = 1e-3, *, alpha: float = 0.3) -> None:
        self._value = prior
        self._alpha = alpha
        self.samples = 0

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        rate = seconds / tokens
        self._value = (
            rate if self.samples == 0 else (self._alpha * rate + (1 - self._alpha) * self._value)
        )
        self.samples += 1

    @property
    def seconds_per_token(self) -> float:
        return self._value


@dataclass(frozen=True)
class Forecast:
    """The prediction a decision was made on (milliseconds)."""

    saving_ms: float
    prefill_saved_ms: float
    compress_cost_ms: float
    prefill_tps: float


def predict(
    tokens: int, ratio: float, prefill: PrefillModel, cost: CostModel, *, reuse: bool = False
) -> Forecast:
    """Saving of compressing ``tokens`` uncached tokens by ``ratio``; ``reuse``: the
    compressed text is already at hand (no compressor cost)."""
    removed = tokens * (1.0 - 1.0 / max(ratio, 1.0))
    saved = removed * prefill.seconds_per_prefill_token * 1000.0
    spent = 0.0 if reuse else tokens * cost.seconds_per_token * 1000.0
    return Forecast(saved - spent, saved, spent, prefill.prefill_tps)


class RecentPrefixes:
    """Hashes of prompt prefixes recently sent uncompressed: the server's prefix cache
    probably still holds them (an LRU the size of a small KV cache's worth of prompts)."""

    def __init__(self, size: int = 256) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, key: str) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: str) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
