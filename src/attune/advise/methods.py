"""The methods the advisor ranks: what each is, how it trains (if at all), its standing risks.

`shapes` lists the adapter shapes a training method may use, in order of preference; the cost
model picks the first that fits the user's memory (trying gradient checkpointing before giving
up). External methods have none. `doc` is the guide page under docs/methods/.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    id: str
    title: str
    summary: str
    shapes: tuple[str, ...] = ()  # adapter shapes, in preference order; () = no training
    needs_weights: bool = False
    prior: float = 0.0  # a small standing preference: simpler, cheaper methods first
    risks: tuple[str, ...] = ()
    doc: str = ""

    @property
    def trains(self) -> bool:
        return bool(self.shapes)


METHODS: dict[str, Method] = {m.id: m for m in [
    Method("zero-shot", "Zero-shot prompting (instructions, ICL)", "describe the task in the prompt; no examples, no training",
           prior=0.0, risks=("quality is whatever the base model already does",), doc="docs/methods/prompting.md"),
    Method("few-shot", "Few-shot prompting with example selection", "put the k most similar labelled examples in each prompt",
           prior=0.5, risks=("every query pays for the examples' tokens", "only k of the examples are used at a time"),
           doc="docs/methods/prompting.md"),
    Method("rag", "Retrieval-augmented generation (RAG)", "retrieve passages from your documents (BM25 + dense) and answer from them",
           prior=0.0, risks=("answers are only as good as retrieval", "passages add prompt tokens and latency"),
           doc="docs/methods/rag.md"),
    Method("lora", "LoRA fine-tuning", "train small low-rank updates on every linear layer; the base stays frozen",
           shapes=("lora",), needs_weights=True, prior=1.0,
           risks=("can overfit small data", "some forgetting of general skills"), doc="docs/methods/lora.md"),
    Method("qlora", "QLoRA (LoRA on a 4-bit base)", "LoRA with the frozen base quantized to 4-bit NF4 to fit small GPUs",
           shapes=("qlora",), needs_weights=True, prior=0.5,
           risks=("slower steps (dequantization)", "slightly below 16-bit LoRA quality"), doc="docs/methods/lora.md"),
    Method("peft-small", "Other PEFT: IA3 / prompt tuning", "learn a few thousand scaling or prompt parameters",
           shapes=("ia3",), needs_weights=True, prior=0.0,
           risks=("learns less than LoRA on anything beyond light steering",), doc="docs/methods/lora.md"),
    Method("full-ft", "Full fine-tuning", "update every weight on the labelled data",
           shapes=("full",), needs_weights=True, prior=0.5,
           risks=("the most forgetting", "a full model copy per variant", "memory: weights + gradients + optimizer"),
           doc="docs/methods/full-finetuning.md"),
    Method("cpt-replay", "Continued pretraining with replay", "keep pretraining on raw domain text, mixing general text back in",
           shapes=("full", "lora"), needs_weights=True, prior=0.0,
           risks=("needs a large corpus to move the model", "forgetting without enough replay", "usually needs SFT after"),
           doc="docs/methods/continued-pretraining.md"),
    Method("dpo", "Direct preference optimization (DPO)", "train on (better, worse) answer pairs directly, no reward model",
           shapes=("lora",), needs_weights=True, prior=0.0,
           risks=("over-optimises style (length) if pairs are biased",), doc="docs/methods/preference-alignment.md"),
    Method("rm-ppo", "Reward model + PPO / GRPO", "learn or use a reward, then optimise the policy online with a KL leash",
           shapes=("lora",), needs_weights=True, prior=-0.5,
           risks=("reward hacking", "unstable, many hyper-parameters", "2-4x the compute of DPO"),
           doc="docs/methods/preference-alignment.md"),
    Method("distill", "Distillation into a smaller model", "train a small student on a large teacher's answers",
           shapes=("full", "lora"), needs_weights=False, prior=-0.5,
           risks=("the student is capped by the teacher", "teacher generation costs up front"), doc="docs/methods/distillation.md"),
    Method("multi-lora", "Many LoRAs on one base (swap, merge, route)", "one small adapter per tenant or task, served on one base",
           shapes=("lora",), needs_weights=True, prior=0.0,
           risks=("one training run and eval per adapter", "routing errors when tasks are mixed"), doc="docs/methods/multi-adapter.md"),
    Method("rag+lora", "RAG + LoRA", "retrieval supplies the facts; a LoRA teaches answer format and use of the passages",
           shapes=("lora",), needs_weights=True, prior=0.0,
           risks=("two systems to maintain", "passages add prompt tokens"), doc="docs/methods/rag.md"),
]}
