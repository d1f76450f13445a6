"""A small LoRA trainer for a chat fine-tuning set, and greedy generation to measure it.

Why in flowopt and this small: the exported set (:mod:`flowopt.distill.export`) is only
useful if a student can be trained on it where flowopt runs, often a CPU box. This is the
least that does it honestly: the student's own chat template, loss on the answer tokens only
(the prompt is given, not learned), LoRA adapters from ``peft`` on the attention
projections, plain AdamW, no trainer framework. For real runs use a GPU and a full trainer;
the format is the same.

``peft``, ``torch`` and ``transformers`` come with the ``distill`` extra and are imported
only when a function here is called.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowopt.errors import MissingDependencyError

__all__ = ["LoraSettings", "Student", "TrainReport", "load_jsonl", "load_student"]


@dataclass(frozen=True, slots=True)
class LoraSettings:
    """The knobs. ``rank``/``alpha``: adapter size and scale; ``targets``: the projections
    that get adapters; ``max_tokens``: longer examples are dropped, not cut (a cut answer
    teaches a cut answer); ``max_steps``: stop early (0: run every epoch)."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 1e-3
    max_tokens: int = 256
    max_steps: int = 0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainReport:
    """What training did: examples used and dropped (too long), steps, seconds, and the
    mean loss of the first and last tenth of the steps."""

    examples: int
    dropped_too_long: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    trainable_params: int
    losses: list[float] = field(default_factory=list)


def _deps() -> tuple[Any, Any, Any]:
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            exc.name or "peft", "distill", "training a student (LoRA)"
        ) from exc
    return peft, torch, transformers


def load_jsonl(path: str | Path) -> list[list[dict[str, str]]]:
    """The ``messages`` of every line of a chat fine-tuning JSONL file."""
    out: list[list[dict[str, str]]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(list(json.loads(line)["messages"]))
    return out


class Student:
    """A causal LM and its tokenizer, trainable with LoRA adapters."""

    def __init__(self, model: Any, tokenizer: Any, torch: Any, peft: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._torch = torch
        self._peft = peft

    # -- text -----------------------------------------------------------------------------
    def _prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        text: str = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return text

    def _encode(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
        """Token ids of prompt + answer, and labels that mask the prompt (-100)."""
        tok = self.tokenizer
        prompt = tok(self._prompt_text(messages[:-1]), add_special_tokens=False)["input_ids"]
        answer = tok(messages[-1]["content"] + tok.eos_token + "\n", add_special_tokens=False)
        ids = list(prompt) + list(answer["input_ids"])
        return ids, [-100] * len(prompt) + list(answer["input_ids"])

    # -- training -------------------------------------------------------------------------
    def train(
        self, examples: Sequence[Sequence[dict[str, str]]], settings: LoraSettings
    ) -> TrainReport:
        """Add LoRA adapters and train them on ``examples`` (each ends with the answer)."""
        torch = self._torch
        torch.manual_seed(settings.seed)
        config = self._peft.LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=0.0,
            target_modules=list(settings.targets),
            task_type="CAUSAL_LM",
        )
        self.model = self._peft.get_peft_model(self.model, config)
        encoded = [self._encode(m) for m in examples]
        kept = [e for e in encoded if len(e[0]) <= settings.max_tokens]
        params = [p for p in self.model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=settings.learning_rate)
        rng = random.Random(settings.seed)
        pad = self.tokenizer.pad_token_id
        losses: list[float] = []
        self.model.train()
        started = time.perf_counter()
        for _ in range(settings.epochs):
            order = list(range(len(kept)))
            rng.shuffle(order)
            for i in range(0, len(order), settings.batch_size):
                batch = [kept[j] for j in order[i : i + settings.batch_size]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch])
                labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
                loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                optim.step()
                optim.zero_grad()
                losses.append(float(loss.detach()))
                if settings.max_steps and len(losses) >= settings.max_steps:
                    break
            if settings.max_steps and len(losses) >= settings.max_steps:
                break
        seconds = time.perf_counter() - started
        self.model.eval()
        tenth = max(1, len(losses) // 10)
        return TrainReport(
            examples=len(kept),
            dropped_too_long=len(encoded) - len(kept),
            steps=len(losses),
            seconds=seconds,
            first_loss=sum(losses[:tenth]) / tenth if losses else float("nan"),
            last_loss=sum(losses[-tenth:]) / tenth if losses else float("nan"),
            trainable_params=sum(int(p.numel()) for p in params),
            losses=losses,
        )

    def save_adapter(self, path: str | Path) -> None:
        """Write the LoRA adapter (a few MB) where ``peft`` can load it again."""
        self.model.save_pretrained(str(path))

    # -- generation -----------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        *,
        max_new_tokens: int = 16,
        batch_size: int = 16,
    ) -> list[str]:
        """Greedy answers to ``prompts`` (chat messages without the answer)."""
        torch = self._torch
        tok = self.tokenizer
        tok.padding_side = "left"
        out: list[str] = []
        with torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                texts = [self._prompt_text(p) for p in prompts[i : i + batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
                out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
        return out


def load_student(path: str | Path, *, threads: int | None = None) -> Student:
    """The HF checkpoint at ``path`` (fp32, CPU) as a :class:`Student`; ``threads`` caps
    torch's CPU threads (share the machine with a model server)."""
    peft, torch, transformers = _deps()
    if threads:
        torch.set_num_threads(threads)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    return Student(model, tokenizer, torch, peft)
