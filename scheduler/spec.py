"""The experiment file, as a pydantic model. Parsing has no side effects.

Every error is turned into one line naming the field and the fix, and all of
a file's errors are reported at once (`SpecError`, one line each), e.g.
`models[0].variants: unknown quantization 'q3' ...`.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared import catalog
from shared.prompts import TEMPLATES
from shared.variants import VariantError, ollama_tag

MAX_TASKS = 10_000_000
MAX_SEED = 2**32 - 1     # numpy/scikit-learn and llama.cpp take 32-bit unsigned seeds
QUEUE_PATTERN = r"^[A-Za-z0-9_.:-]+$"


class SpecError(ValueError):
    """A one-line, user-facing error about the experiment file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    path: Path
    text_column: str = "text"
    label_column: str = "label"
    labels: list[str] = Field(min_length=2)
    sample: int | None = Field(default=None, ge=1, le=MAX_TASKS)
    stratify: bool = True
    seed: int = Field(default=42, ge=0, le=MAX_SEED)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str]) -> list[str]:
        if len({x.strip().lower() for x in v}) != len(v) or any(not x.strip() for x in v):
            raise ValueError("labels must be distinct, non-empty strings")
        return v


class PromptSpec(_Strict):
    template: str = "label-only"
    few_shot: int = Field(default=0, ge=0, le=20)
    # label: decoding constrained to the label set; free: free text parsed afterwards.
    output: Literal["label", "free"] = "label"

    @field_validator("template")
    @classmethod
    def _known_template(cls, v: str) -> str:
        if v not in TEMPLATES:
            raise ValueError(f"unknown template {v!r}: use one of {', '.join(TEMPLATES)}")
        return v


class InferenceParams(_Strict):
    max_tokens: int = Field(default=4, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=50, ge=0, le=1000)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    batch_size: int = Field(default=1, ge=1, le=256)
    beam_size: int = Field(default=1, ge=1, le=16)


class ModelSpec(_Strict):
    name: str = Field(min_length=1)
    engine: Literal["embedded", "ollama"]
    variants: list[str] = Field(min_length=1)
    baseline: str | None = None
    params: InferenceParams = InferenceParams()
    # pins this model to a worker queue (default: placement.queue)
    queue: str | None = Field(default=None, min_length=1, pattern=QUEUE_PATTERN)

    @model_validator(mode="after")
    def _check_variants(self) -> "ModelSpec":
        if len(set(self.variants)) != len(self.variants):
            dup = next(v for v in self.variants if self.variants.count(v) > 1)
            raise ValueError(f"variant {dup!r} is listed twice: list each variant once")
        try:
            for v in self.variants:
                if self.engine == "embedded":
                    catalog.check_variant(self.name, v)     # the catalog the worker resolves files with
                else:
                    ollama_tag(self.name, v)
        except VariantError as exc:
            raise ValueError(f"{exc} (see `greenctl models list`)" if self.engine == "embedded"
                             else str(exc)) from None
        if self.baseline is not None and self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants {self.variants}")
        if self.params.beam_size > 1:
            raise ValueError(f"params.beam_size > 1 is not supported by the {self.engine} engine "
                             "(neither llama.cpp's server nor Ollama does beam search): set beam_size: 1")
        if self.params.batch_size > 1:
            raise ValueError("params.batch_size > 1 is not supported: greenctl runs one sample per "
                             "task so that energy is attributed per inference; set batch_size: 1")
        return self

    @property
    def baseline_variant(self) -> str:
        return self.baseline or self.variants[0]


class CarbonSpec(_Strict):
    country_iso_code: str = Field(default="CAN", min_length=3, max_length=3)
    # Forces the grid's carbon intensity instead of CodeCarbon's table for the country.
    carbon_intensity_g_per_kwh: float | None = Field(default=None, gt=0, le=2000)
    pue: float = Field(default=1.0, ge=1.0, le=3.0)


class PlacementSpec(_Strict):
    queue: str = Field(default="default", min_length=1, pattern=QUEUE_PATTERN)


class StopSpec(_Strict):
    """Stop when decided (shared.sequential): run samples in stratified rounds of
    `check_every` after a first round of `min_samples`, stop once every paired
    ΔF1 verdict is decided, at most `max_samples` (which replaces dataset.sample)."""
    when: str
    min_samples: int = Field(default=30, ge=2, le=MAX_TASKS)
    max_samples: int = Field(default=600, ge=2, le=MAX_TASKS)
    check_every: int = Field(default=30, ge=1, le=MAX_TASKS)
    f1_tolerance: float = Field(default=0.03, gt=0.0, le=1.0)   # F1 points, a fraction 0..1

    @field_validator("when")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        if v != "decided":
            raise ValueError(f"unknown rule {v!r}: use when: decided")
        return v

    @model_validator(mode="after")
    def _check_bounds(self) -> "StopSpec":
        from shared.sequential import MIN_SAMPLES
        if self.min_samples < MIN_SAMPLES:
            raise ValueError(f"min_samples {self.min_samples} is too few: on fewer than {MIN_SAMPLES} samples "
                             "the interval of each look is too narrow to trust: set min_samples: "
                             f"{MIN_SAMPLES} or more")
        if self.min_samples > self.max_samples:
            raise ValueError(f"min_samples {self.min_samples} is more than max_samples {self.max_samples}: "
                             "lower min_samples or raise max_samples")
        return self


class SustainSpec(_Strict):
    """Sustained run: repeat the sample set, pass after pass, until `minutes` of wall time
    (from the first inference) are spent; the report adds a drift section (greenctl.report.drift)."""
    minutes: float = Field(gt=0, le=24 * 60)    # minutes, fractions allowed (e.g. 0.5)


class ExperimentSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    dataset: DatasetSpec
    prompt: PromptSpec = PromptSpec()
    models: list[ModelSpec] = Field(min_length=1)
    carbon: CarbonSpec = CarbonSpec()
    placement: PlacementSpec = PlacementSpec()
    repeats: int = Field(default=1, ge=1, le=100)
    stop: StopSpec | None = None
    sustain: SustainSpec | None = None

    @model_validator(mode="after")
    def _sustain_or_stop(self) -> "ExperimentSpec":
        if self.sustain is not None and self.stop is not None:
            raise ValueError("sustain: and stop: cannot both be set (one runs for a time, the other "
                             "stops when decided): remove one of them")
        return self

    @model_validator(mode="after")
    def _stop_rule(self) -> "ExperimentSpec":
        """With `stop:`, stop.max_samples is the sample size (dataset.sample is set to it)."""
        if self.stop is None:
            return self
        if self.dataset.sample is not None and self.dataset.sample != self.stop.max_samples:
            raise ValueError(f"dataset.sample: with stop: set, the sample size is stop.max_samples "
                             f"({self.stop.max_samples}): remove dataset.sample")
        if self.repeats != 1:
            raise ValueError("stop: needs repeats: 1 (the rule compares variants sample by sample): "
                             "set repeats: 1 or remove stop")
        if not any(len(m.variants) >= 2 for m in self.models):
            raise ValueError("stop: needs a model with two variants (a baseline and one to compare): "
                             "add a variant or remove stop")
        dataset = self.dataset.model_copy(update={"sample": self.stop.max_samples})
        return self.model_copy(update={"dataset": dataset})

    @model_validator(mode="after")
    def _unique_models(self) -> "ExperimentSpec":
        seen = set()
        for m in self.models:
            for v in m.variants:
                if (m.name, m.engine, v) in seen:
                    raise ValueError(f"model {m.name!r} variant {v!r} appears twice: list it once")
                seen.add((m.name, m.engine, v))
        return self


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part) if str(part).isprintable() else repr(str(part))  # a key "a\nb" stays on one line
        out += f".{name}" if out else name
    return out or "experiment"


def _fields_at(loc: tuple) -> list[str]:
    """Field names allowed at `loc`, for a did-you-mean on unknown keys."""
    model: type[BaseModel] = ExperimentSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        ann = model.model_fields[part].annotation
        ann = getattr(ann, "__args__", (ann,))[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return list(model.model_fields)


def _one_line(error: dict) -> str:
    loc, kind, msg = error["loc"], error["type"], error["msg"]
    if kind == "extra_forbidden":
        where = _location(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(_fields_at(loc))}"
        return f"{_location(loc)}: unknown key{' in ' + where if len(loc) > 1 else ''}: {hint}"
    if kind == "missing":
        return f"{_location(loc)}: required field is missing: add it"
    msg = msg.removeprefix("Value error, ")
    if kind in _BOUNDS:   # pydantic names the bound; say what was given and what to do
        return f"{_location(loc)}: {msg} (got {error.get('input')!r}): change it"
    return f"{_location(loc)}: {msg}"


_BOUNDS = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}


def error_lines(errors: list[dict]) -> list[str]:
    """Every error, one line each, in file order. A required key that is missing
    next to an unknown key that looks like it (`lables` for `labels`) is one
    mistake, a misspelling: only the unknown key is reported, with the suggestion."""
    unknown = {(e["loc"][:-1], str(e["loc"][-1])) for e in errors if e["type"] == "extra_forbidden"}
    lines = []
    for e in errors:
        if e["type"] == "missing":
            parent, name = e["loc"][:-1], str(e["loc"][-1])
            if any(p == parent and difflib.get_close_matches(name, [u], n=1) for p, u in unknown):
                continue
        line = _one_line(e)
        if line not in lines:
            lines.append(line)
    return lines


MAX_VALUES = 100_000   # keys and values of an experiment file, YAML aliases expanded


def _check_values(data: object, loc: tuple, memo: dict, path: set) -> int:
    """How many values `data` holds once aliases are expanded; a SpecError on a NUL
    character (Postgres text cannot store it) or a structure that contains itself."""
    key = id(data)
    if key in memo:
        return memo[key]
    if isinstance(data, str):
        if "\x00" in data:
            raise SpecError(f"{_location(loc)}: contains a NUL character (\\0): remove it")
        return 1
    if not isinstance(data, (dict, list)):
        return 1
    if key in path:
        raise SpecError(f"{_location(loc)}: refers to itself (a YAML alias inside its own anchor): "
                        "remove the loop")
    path.add(key)
    items = data.items() if isinstance(data, dict) else enumerate(data)
    n = 1
    for k, value in items:
        at = loc + (k if isinstance(data, list) else str(k),)
        n += _check_values(k, at, memo, path) + _check_values(value, at, memo, path)
        if n > MAX_VALUES:
            raise SpecError(f"{_location(loc)}: more than {MAX_VALUES} values once YAML aliases are "
                            "expanded: write the experiment out plainly")
    path.discard(key)
    memo[key] = n
    return n


def parse_spec(data: object, source: str = "experiment") -> ExperimentSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the file must be a YAML mapping (name:, dataset:, models:, ...)")
    try:
        _check_values(data, (), {}, set())
        return ExperimentSpec.model_validate(data)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
    except ValidationError as exc:
        raise SpecError("\n".join(f"{source}: {line}" for line in error_lines(exc.errors()))) from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply: an experiment file is a few levels of "
                        "mappings and lists") from None


def load_spec(path: Path) -> ExperimentSpec:
    """Read and validate an experiment file; relative dataset paths are relative to it."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory: give the path of an experiment YAML file")
    if not path.is_file():
        raise SpecError(f"{path}: no such file: give the path of an experiment YAML file")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text: save the experiment file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())   # one line
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply: an experiment file is a few levels of "
                        "mappings and lists") from None
    spec = parse_spec(data, str(path))
    if not spec.dataset.path.is_absolute():
        dataset = spec.dataset.model_copy(update={"path": (path.parent / spec.dataset.path).resolve()})
        spec = spec.model_copy(update={"dataset": dataset})
    return spec
