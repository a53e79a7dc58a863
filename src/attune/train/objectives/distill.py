"""Knowledge distillation from a teacher model into the stage's (student) model.

Two levels, chosen by `loss`:
  sequence  the teacher answers the stage's prompt records (cached to JSONL, see
            `attune.distill.cache`) and the student is fine-tuned on those answers with the SFT
            machinery (Kim & Rush 2016, "Sequence-Level Knowledge Distillation").
  logit     the student matches the teacher's next-token distribution on the same tokens:
            forward KL(teacher || student) at beta=0, reverse KL at beta=1, the generalised JSD
            in between (Agarwal et al. 2024, "On-Policy Distillation of Language Models", GKD;
            the same formula as TRL's `generalized_jsd_loss`). Needs a shared tokenizer.

Prompt records are answered by the teacher first in both modes, so logit-level distillation on
a prompt set trains on the teacher's own outputs (supervised KD); with `teacher_answers: all` the
final reply of chat records is replaced by the teacher's too (distil on a labelled set's prompts,
ignoring its labels). The teacher's logits are computed only at supervised positions, chunk by
chunk, like the LM loss in `attune.train.logprobs`.

`teacher:` is a model reference or the name of an earlier stage (its weights, merged; the pipeline
resolves it into `StageContext.teacher`). The student
is the stage's starting model, or with `student_layers: N` a smaller one made from it: N evenly
spread layers kept (`student_init: truncate`) or a random model of that shape (`random`); it
trains all its weights (`adapter: full`) and is saved as a standalone model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from attune.adapters.base import AdapterConfig
from attune.errors import AttuneError
from attune.train.logprobs import IGNORE, final_hidden, output_head, unwrap
from attune.train.objective import Batch, Example
from attune.train.objectives import sft


class Options(sft.Options):
    loss: Literal["sequence", "logit"] = Field(
        "sequence", description="sequence: SFT on teacher outputs; logit: match the teacher's token distributions"
    )
    beta: float = Field(
        0.0, ge=0, le=1, description="logit loss: 0 forward KL, 1 reverse KL, between: generalised JSD (GKD; its default 0.5)"
    )
    temperature: float = Field(1.0, gt=0, description="logit loss: both distributions are softened by this (Hinton et al. 2015)")
    ce_weight: float = Field(0.0, ge=0, description="logit loss: add this times the cross-entropy on the data tokens")
    max_new_tokens: int = Field(128, gt=0, description="teacher generation length for prompt records")
    teacher_temperature: float = Field(0.0, ge=0, description="teacher sampling temperature (0: greedy, reproducible)")
    cache: str | None = Field(
        None, description="teacher-response cache (JSONL); default <output_dir>/<recipe name>/teacher-cache.jsonl"
    )
    teacher_answers: Literal["prompts", "all"] = Field(
        "prompts", description="prompts: the teacher answers prompt records; all: also replaces chat records' final reply"
    )
    student_layers: int | None = Field(None, gt=0, description="a smaller student: this many of the starting model's layers")
    student_init: Literal["truncate", "random"] = Field(
        "truncate", description="truncate: keep evenly spread layers (DistilBERT, Sanh 2019); random: a fresh model of that shape"
    )


class Distill(sft.SFT):
    Options = Options
    record_kinds = ("prompt", "chat", "completion", "text")
    packable = True
    takes_teacher = True

    teacher_calls = 0
    """Prompts this run sent to the teacher (0 when the cache had every answer)."""
    _identity: str | None = None
    _generator: Any = None
    _teacher_model: nn.Module | None = None

    @classmethod
    def check(cls, options: Options, adapter: AdapterConfig) -> None:
        if options.student_layers is not None and adapter.type != "full":
            raise ValueError(
                f"a {options.student_layers}-layer student is a new model with no base for an adapter; set `adapter: full`"
            )

    @property
    def teacher(self) -> str:
        if not self.context.teacher:
            raise AttuneError(f"stage {self.context.stage!r}: distill needs `teacher: MODEL` (a model reference)")
        return self.context.teacher

    def student(self, model: nn.Module) -> nn.Module:
        """The starting model, or a smaller student made from it (`student_layers`)."""
        from attune.distill import random_student, truncate_layers

        opts = self.options
        if opts.student_layers is None:
            return model
        make = truncate_layers if opts.student_init == "truncate" else random_student
        return make(model, opts.student_layers)

    def cache_path(self) -> Path:
        if self.options.cache:
            return self.context.path(self.options.cache)
        if self.context.cache_dir is None:
            raise AttuneError("distill: set `train.cache:` (no recipe to place the teacher cache next to)")
        return self.context.cache_dir / "teacher-cache.jsonl"

    def _teacher_identity(self) -> str:
        """Hashed once per stage (prepare runs for train, validation and tasks)."""
        from attune.distill.cache import teacher_identity

        if self._identity is None:
            self._identity = teacher_identity(self.teacher)
        return self._identity

    def _teacher_generator(self):
        if self._generator is None:
            from attune.models import load_generator

            self._generator = load_generator(self.teacher)
        return self._generator

    def answer_prompts(self, records: list) -> list:
        """Prompt records become chat records carrying the teacher's (cached) answer; others pass through."""
        from attune.data.records import ChatRecord, PromptRecord
        from attune.distill.cache import teacher_responses
        from attune.models.generation import GenerationParams

        opts = self.options
        if opts.teacher_answers == "all":
            records = [as_prompt(r) for r in records]
        prompts = [r for r in records if isinstance(r, PromptRecord)]
        if not prompts:
            return records
        params = GenerationParams(max_new_tokens=opts.max_new_tokens, temperature=opts.teacher_temperature, seed=opts.seed)
        answers, asked = teacher_responses(
            self._teacher_generator, self._teacher_identity(), [r.prompt for r in prompts], params, self.cache_path(),
        )
        self.teacher_calls += asked
        by_id = {id(r): a for r, a in zip(prompts, answers)}
        return [
            ChatRecord(r.prompt + [{"role": "assistant", "content": by_id[id(r)]}], r.source) if id(r) in by_id else r
            for r in records
        ]

    def prepare(self, records: list) -> list[Example]:
        return super().prepare(self.answer_prompts(records))

    def setup(self, model: nn.Module) -> None:
        """Load the frozen teacher for the logit loss (reusing the generation teacher when local)."""
        if self.options.loss != "logit" or self._teacher_model is not None:
            return
        teacher = getattr(self._generator, "model", None)
        if teacher is None:
            from attune.models import load_model

            teacher = load_model(self.teacher, device=str(self.context.device)).model
        self.set_teacher(model, teacher)

    def set_teacher(self, model: nn.Module, teacher: nn.Module) -> None:
        """Freeze `teacher` and check it shares the student's vocabulary (the logit loss compares rows)."""
        teacher = teacher.to(self.context.device).float().eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        vs = unwrap(model).get_output_embeddings().weight.shape[0]
        vt = unwrap(teacher).get_output_embeddings().weight.shape[0]
        if vs != vt:
            raise AttuneError(
                f"logit distillation needs a shared vocabulary: the student's head has {vs} rows, the teacher's {vt}; "
                "use `loss: sequence` for teachers with another tokenizer"
            )
        self._teacher_model = teacher

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        opts = self.options
        if opts.loss == "sequence":
            return super().loss(model, batch)
        assert self._teacher_model is not None, "setup() loads the teacher"
        total, n = logit_loss_sum(model, self._teacher_model, batch, opts.beta, opts.temperature, opts.loss_chunk_tokens)
        kd = total / max(n, 1)
        if opts.ce_weight == 0:
            return kd, {"kd_loss": float(kd.detach())}
        ce = sft.lm_mean_loss(model, batch, opts.loss_chunk_tokens)
        return kd + opts.ce_weight * ce, {"kd_loss": float(kd.detach()), "ce_loss": float(ce.detach())}

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """distill.json: the teacher, the loss, and how many prompts this run sent to the teacher."""
        import json

        info = {"teacher": self.teacher, "loss": self.options.loss, "teacher_calls": self.teacher_calls}
        if self.teacher_calls or self._generator is not None or self._identity is not None:
            info["cache"] = str(self.cache_path())
        (out_dir / "distill.json").write_text(json.dumps(info, indent=2))


def as_prompt(record: Any) -> Any:
    """A chat record ending in an assistant reply becomes a prompt record of the turns before it."""
    from attune.data.records import ChatRecord, PromptRecord

    if isinstance(record, ChatRecord) and record.messages and record.messages[-1]["role"] == "assistant":
        return PromptRecord(record.messages[:-1], record.messages[-1]["content"], record.source)
    return record


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float = 1.0) -> torch.Tensor:
    """Per-token generalised JSD (N,) between two (N, V) logit matrices, as in GKD / TRL."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta == 0:
        return (t.exp() * (t - s)).sum(-1)
    if beta == 1:
        return (s.exp() * (s - t)).sum(-1)
    m = torch.logsumexp(torch.stack([s + math.log(1 - beta), t + math.log(beta)]), dim=0)
    return beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)


def _chunk_divergence(
    head_s: nn.Module, hs: torch.Tensor, head_t: nn.Module, ht: torch.Tensor, beta: float, temperature: float
) -> torch.Tensor:
    with torch.no_grad():
        teacher_logits = head_t(ht)
    return divergence(head_s(hs), teacher_logits, beta, temperature).sum()


def logit_loss_sum(
    student: nn.Module, teacher: nn.Module, batch: dict, beta: float, temperature: float, chunk: int
) -> tuple[torch.Tensor, int]:
    """(sum of per-token divergences over supervised positions, their count).

    Position t is scored where labels[t+1] is supervised and in the same document (packed rows
    restart position ids): the distribution that predicts it.
    Both heads run only on those rows, in chunks recomputed in backward.
    """
    ids, labels = batch["input_ids"], batch["labels"]
    mask, pos = batch.get("attention_mask"), batch.get("position_ids")
    keep = labels[:, 1:] != IGNORE
    if pos is not None:  # in a packed row, a document's first token is not predicted by the one before
        keep &= pos[:, 1:] != 0
    flat = keep.reshape(-1).nonzero().squeeze(-1)
    hs = final_hidden(student, ids, mask, pos)
    if flat.numel() == 0:
        return hs.sum() * 0.0, 0
    with torch.no_grad():
        ht = final_hidden(teacher, ids, mask, pos)
    width = hs.shape[-1]
    hs = hs[:, :-1].reshape(-1, width).index_select(0, flat)
    ht = ht[:, :-1].reshape(-1, ht.shape[-1]).index_select(0, flat)
    head_s, head_t = output_head(student), output_head(teacher)
    total = hs.new_zeros((), dtype=torch.float32)
    for s in range(0, hs.shape[0], chunk):
        total = total + torch.utils.checkpoint.checkpoint(
            _chunk_divergence, head_s, hs[s : s + chunk], head_t, ht[s : s + chunk], beta, temperature,
            use_reentrant=False,
        )
    return total, int(flat.numel())
