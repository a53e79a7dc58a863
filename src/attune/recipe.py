"""A recipe: YAML in, validated objects out; every error names the YAML path and line.

    name: support-bot
    model: builtin:smollm2-135m-instruct
    stages: [{objective: sft, data: {path: data/tickets.jsonl}, adapter: {type: lora, r: 16}}]
    evaluate: {tasks: [data/heldout.yaml], forgetting: builtin:general-probe}
    compare: [{strategy: zero-shot}, {strategy: few-shot, k: 4}, {stage: sft}]

Unknown keys are errors with a "did you mean" hint. A stage's `train:` mapping is validated
against its objective's options and its `adapter:` against the adapter shape's config.
Relative paths are resolved against the recipe file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from attune.adapters import AdapterConfig, parse_adapter
from attune.config import StrictModel
from attune.errors import AttuneError, did_you_mean, unknown
from attune.train.config import TrainConfig

DataFormat = Literal["auto", "chat", "instruction", "completion", "text", "preference", "prompt"]


class DataSource(StrictModel):
    """One dataset: a file, a folder of text files, or a `builtin:NAME`."""

    path: str
    format: DataFormat = Field("auto", description="auto-detected from the first records when 'auto'")
    weight: float = Field(1.0, gt=0, description="sampling weight when a stage mixes several datasets")
    name: str | None = Field(None, description="task name for per-task reporting (default: file stem)")
    text_field: str = Field("text", description="field holding raw text in JSONL/CSV (text format)")
    text_split: Literal["file", "blank-line"] = Field(
        "file", description="plain-text files: one document per file, or per blank-line-separated block"
    )
    limit: int | None = Field(None, gt=0, description="use only the first N records")


class ReplaySpec(StrictModel):
    """General text mixed into a domain corpus against catastrophic forgetting."""

    path: str
    ratio: float = Field(0.2, gt=0, lt=1, description="share of training records drawn from the replay set")


class MixingSpec(StrictModel):
    """How a list of datasets is sampled: by weight, or temperature-scaled by size (T5, Raffel 2020)."""

    strategy: Literal["weights", "temperature", "concat"] = "weights"
    temperature: float = Field(2.0, gt=0)


class Stage(StrictModel):
    """One adaptation step; it starts from the previous stage's weights."""

    objective: str
    name: str | None = None
    start: Literal["previous", "base"] = Field(
        "previous", description="start from the previous stage's weights, or from the recipe's base model (side-by-side runs)"
    )
    data: DataSource | list[DataSource] | None = None
    validation: DataSource | None = None
    replay: ReplaySpec | None = None
    mixing: MixingSpec = Field(default_factory=MixingSpec)
    adapter: SerializeAsAny[AdapterConfig] | None = None
    train: SerializeAsAny[TrainConfig] = Field(default_factory=TrainConfig)
    teacher: str | None = Field(None, description="distill: the teacher model reference")
    reward_model: str | None = Field(None, description="ppo/grpo: a reward model dir, or a stage name")

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        from attune.train.objectives import OBJECTIVES

        if v not in OBJECTIVES:
            raise ValueError(str(unknown("objective", v, OBJECTIVES)))
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _data_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = {"type": v}
        return None if v is None else parse_adapter(v)

    @field_validator("train", mode="before")
    @classmethod
    def _objective_options(cls, v: Any, info: ValidationInfo) -> Any:
        """Validate `train:` against the objective's own options (its extra settings included)."""
        objective = info.data.get("objective")  # absent when the objective itself was invalid
        if objective is None or isinstance(v, TrainConfig):
            return v
        from attune.train.objectives import get_objective

        return get_objective(str(objective)).Options.model_validate(v or {})

    @property
    def sources(self) -> list[DataSource]:
        if self.data is None:
            return []
        return self.data if isinstance(self.data, list) else [self.data]


class EvaluateSpec(StrictModel):
    tasks: list[str] = Field(default_factory=list, description="eval task YAML files (or builtin:NAME)")
    forgetting: str | None = Field("builtin:general-probe", description="probe run on base and candidates")
    max_examples: int | None = Field(None, gt=0, description="cap examples per task (quick runs)")


class Candidate(StrictModel):
    """One entry of `compare`: a prompting strategy, a trained stage/adapter, or both."""

    name: str | None = None
    strategy: str | None = Field(None, description="zero-shot | few-shot | cot | rag")
    stage: str | None = Field(None, description="a stage name of this recipe (its adapter / weights)")
    adapter: str | None = Field(None, description="a PEFT adapter directory")
    model: str | None = Field(None, description="another model reference (default: the recipe's model)")
    k: int | None = Field(None, gt=0, description="few-shot examples / RAG passages")
    selection: Literal["random", "similarity"] | None = None
    pool: str | None = Field(None, description="few-shot example pool (default: the first stage's data, its limit kept)")
    pool_limit: int | None = Field(None, gt=0, description="few-shot: use only the pool's first N records (as a stage's `limit:`)")
    index: str | None = Field(None, description="rag: an index dir or documents to index")
    answer: Literal["auto", "extractive", "generative"] | None = Field(
        None, description="rag: generate the answer, quote the best retrieved sentence, or auto (by reader size; the task's default)"
    )
    system: str | None = None

    @model_validator(mode="after")
    def _something(self) -> "Candidate":
        if not (self.strategy or self.stage or self.adapter or self.model):
            raise ValueError("a candidate needs a strategy, a stage, an adapter or a model")
        return self


class ServeSpec(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    adapters: dict[str, str] = Field(default_factory=dict)
    rag: dict[str, str] = Field(default_factory=dict)


class Recipe(StrictModel):
    """A whole adaptation: base model, stages, evaluation, comparison and serving."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: str
    seed: int = 0
    output_dir: str = Field("runs", description="runs are written to OUTPUT_DIR/NAME/TIME/")
    stages: list[Stage] = Field(default_factory=list)
    evaluate: EvaluateSpec | None = None
    compare: list[Candidate] = Field(default_factory=list)
    serve: ServeSpec | None = None
    base_dir: Path = Field(Path("."), exclude=True, description="folder of the recipe file (for relative paths)")

    @model_validator(mode="after")
    def _stage_names(self) -> "Recipe":
        seen: dict[str, int] = {}
        for stage in self.stages:
            if stage.name is None:
                n = seen.get(stage.objective, 0)
                stage.name = stage.objective if n == 0 else f"{stage.objective}{n + 1}"
            seen[stage.objective] = seen.get(stage.objective, 0) + 1
        names = [s.name for s in self.stages]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"stage names must be unique, repeated: {sorted(dup)}")
        for cand in self.compare:
            if cand.stage and cand.stage not in names:
                raise ValueError(f"compare: stage {cand.stage!r} is not a stage of this recipe {names}")
        return self

    def path(self, p: str) -> Path:
        """Resolve a path written in the recipe (relative to the recipe file, or builtin:)."""
        from attune.builtin import resolve_path

        return resolve_path(p, self.base_dir)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise AttuneError(f"recipe {self.name!r} has no stage {name!r}")


class RecipeError(AttuneError):
    """A recipe that failed validation; the message lists every problem with its location."""


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union")) or part in (
            "DataSource", "list[DataSource]", "str", "AdapterConfig"
        ):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _node_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML key (or list item) reached along `loc`, as deep as it exists."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                continue  # a validator tag in the loc, not a YAML key
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def _valid_keys(model: type[StrictModel] | None) -> list[str]:
    return list(model.model_fields) if model else []


def _describe(err: dict[str, Any], data: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        return f"unknown key {key!r}" + did_you_mean(key, _candidate_keys(err["loc"], data))
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return {
        "greater_than": f"must be > {err.get('ctx', {}).get('gt')}",
        "greater_than_equal": f"must be >= {err.get('ctx', {}).get('ge')}",
        "less_than": f"must be < {err.get('ctx', {}).get('lt')}",
        "missing": "required field is missing",
    }.get(err["type"], msg)


_SECTION_MODELS: dict[str, type[StrictModel]] = {
    "stages": Stage,
    "evaluate": EvaluateSpec,
    "compare": Candidate,
    "serve": ServeSpec,
    "data": DataSource,
    "validation": DataSource,
    "replay": ReplaySpec,
    "mixing": MixingSpec,
    "train": TrainConfig,
}


def _candidate_keys(loc: tuple[Any, ...], data: dict[str, Any]) -> list[str]:
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    model = _SECTION_MODELS.get(parents[-1]) if parents else Recipe
    if parents and parents[-1] == "train" and loc[0] == "stages" and isinstance(loc[1], int):
        from attune.train.objectives import get_objective

        model = get_objective(str(data["stages"][loc[1]]["objective"])).Options
    return _valid_keys(model)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (or `builtin:NAME`)."""
    from attune.builtin import resolve_path

    file = resolve_path(str(path))
    if not file.is_file():
        raise RecipeError(f"{file}: recipe file not found")
    text = file.read_text()
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{file}: a recipe is a YAML mapping (name:, model:, stages: ...)")
    return parse_recipe(data, base_dir=file.parent, source=str(file), root=root)


def parse_recipe(
    data: dict[str, Any], base_dir: Path = Path("."), source: str = "<recipe>", root: yaml.Node | None = None
) -> Recipe:
    """Validate a recipe mapping; raise `RecipeError` listing every problem as `file:line: path: message`."""
    try:
        return Recipe.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _node_line(root, loc) if root is not None else None
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {_loc_to_path(loc) or '(top level)'}: {_describe(err, data)}")
        raise RecipeError("invalid recipe\n  " + "\n  ".join(lines)) from None
    except AttuneError as exc:
        raise RecipeError(f"{source}: {exc}") from None


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, every default filled in (written into each run dir)."""
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude={"base_dir"}), sort_keys=False)
