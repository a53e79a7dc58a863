"""Per-method costs for one situation: which adapter shape fits, its memory, training time, query cost.

A training method tries its shapes in order (`Method.shapes`), each first without and then with
gradient checkpointing, and keeps the first that fits one device. How many tokens it trains on
follows from the data the user has (see `training_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attune.advise.costs import MemoryEstimate, QueryCost, TimeEstimate, TrainSetup, estimate_memory, estimate_time, query_cost
from attune.advise.hardware import Hardware, get_hardware
from attune.advise.methods import METHODS, Method
from attune.advise.shapes import ModelShape, nearest_known, parse_size, resolve_shape, smaller_student
from attune.advise.situation import Situation

FEW_SHOT_K = 4  # attune's few-shot default
RAG_PASSAGES = 4  # passages per query
PASSAGE_TOKENS = 200  # tokens per retrieved passage (a typical chunk)
PPO_ROLLOUT_FACTOR = 3  # PPO per prompt: generate, score with reward + reference, update policy (and value)


@dataclass
class MethodCost:
    """What one method costs in this situation; `fits` False means it cannot run on this hardware."""

    method: str
    setup: TrainSetup | None = None
    memory: MemoryEstimate | None = None
    time: TimeEstimate | None = None
    query: QueryCost | None = None
    shape: ModelShape | None = None  # the model it trains or serves (the student, for distillation)
    notes: list[str] = field(default_factory=list)
    fits: bool = True

    def lines(self) -> list[str]:
        out = []
        if self.memory is not None:
            gc = " with gradient checkpointing" if self.setup and self.setup.gradient_checkpointing else ""
            out.append(f"training memory ({self.setup.adapter}{gc}): {self.memory.describe()} per device")
        if self.time is not None:
            out.append(f"training time: {self.time.describe()}")
        if self.query is not None:
            out.append(f"per query: {self.query.describe()}")
        return out + self.notes


@dataclass
class Facts:
    """The situation's model, hardware and every method's cost, computed once."""

    situation: Situation
    shape: ModelShape | None
    hardware: Hardware
    costs: dict[str, MethodCost]

    def cost(self, method: str) -> MethodCost:
        return self.costs[method]


def training_tokens(s: Situation, method: Method) -> float:
    """Tokens a method trains on (epochs included)."""
    labelled = s.labelled_examples * s.tokens_per_example * s.epochs
    if method.id == "cpt-replay":
        return s.unlabelled_tokens * 1.25  # one pass over the corpus + 20 % replay of general text
    if method.id == "dpo":
        return s.preference_pairs * 2 * s.tokens_per_example * s.epochs * 1.5  # chosen + rejected; +50 %: reference forward
    if method.id == "rm-ppo":
        reward_model = s.preference_pairs * 2 * s.tokens_per_example * s.epochs
        prompts = s.prompts or s.labelled_examples or s.preference_pairs
        return reward_model + prompts * (s.prompt_tokens + s.output_tokens) * s.epochs * PPO_ROLLOUT_FACTOR
    if method.id == "multi-lora":
        return labelled  # labelled_examples counts all tenants' examples together
    if method.id == "distill":
        return max(labelled, (s.prompts or 0) * (s.prompt_tokens + s.output_tokens) * s.epochs)
    return labelled


def _fit(shape: ModelShape, hw: Hardware, method: Method, s: Situation) -> tuple[TrainSetup, MemoryEstimate, bool]:
    first: tuple[TrainSetup, MemoryEstimate] | None = None
    for adapter in method.shapes:
        for gc in (False, True):
            setup = TrainSetup(adapter=adapter, seq_len=s.seq_len, batch_size=s.batch_size, gradient_checkpointing=gc,
                               frozen_copies=1 if method.id == "rm-ppo" else 0)
            mem = estimate_memory(shape, hw, setup)
            first = first or (setup, mem)
            if mem.fits(hw):
                return setup, mem, True
    assert first is not None
    return first[0], first[1], False


def _student(s: Situation, teacher: ModelShape | None) -> ModelShape | None:
    if s.student:
        try:
            return nearest_known(parse_size(s.student))
        except Exception:  # noqa: BLE001  (not a size: a model reference)
            return resolve_shape(s.student, None)
    return smaller_student(teacher) if teacher is not None else None


def _added_tokens(s: Situation, method: str) -> int:
    if method == "few-shot":
        return FEW_SHOT_K * s.tokens_per_example
    if method in ("rag", "rag+lora"):
        return min(RAG_PASSAGES * PASSAGE_TOKENS, s.unlabelled_tokens)  # a tiny corpus is all retrieved
    return 0


def machine(s: Situation, shape: ModelShape | None) -> Hardware:
    """The hardware profile; for `cpu` (unless `calibrate: off`), this machine as the probe measured it (`probe.py`)."""
    hw = get_hardware(s.hardware, s.gpu_count, s.gpu_memory_gb)
    if hw.kind != "cpu" or s.calibrate == "off":
        return hw
    from attune.advise.probe import calibrated, probe_machine

    local = s.model if s.model and s.has_weights else None
    probe = probe_machine(local, shape.compute_params if shape and local else None, fresh=s.calibrate == "fresh")
    return calibrated(hw, probe, shape.params * hw.dtype_bytes if shape and probe.decode_s_per_token else None)


def plan(s: Situation) -> Facts:
    """Resolve the model and hardware, then cost every method."""
    shape = resolve_shape(s.model, s.model_size)
    hw = machine(s, shape)
    costs = {}
    for method in METHODS.values():
        cost = MethodCost(method.id, shape=shape)
        target = _student(s, shape) if method.id == "distill" else shape
        cost.shape = target
        serve_hw = hw if s.has_weights or method.id == "distill" else None
        cost.query = query_cost(target, serve_hw, s.prompt_tokens, _added_tokens(s, method.id), s.output_tokens)
        if method.trains and target is not None and (s.has_weights or method.id == "distill"):
            cost.setup, cost.memory, cost.fits = _fit(target, hw, method, s)
            tokens = training_tokens(s, method)
            if tokens > 0:
                cost.time = estimate_time(target, hw, cost.setup, tokens)
            if method.id == "distill" and shape is not None:
                cost.notes.append(f"student: {target.describe()}")
        elif method.trains and target is None:
            cost.notes.append("no model size known: give `model` or `model_size` for memory and time estimates")
        if method.id == "multi-lora" and target is not None:
            adapter_mb = target.lora_params(cost.setup.lora_r if cost.setup else 16) * 4 / 1e6  # PEFT saves adapters in fp32
            cost.notes.append(f"each adapter ~{adapter_mb:,.0f} MB on top of one shared base; {s.tenants * s.tasks} adapters")
        costs[method.id] = cost
    return Facts(s, shape, hw, costs)

