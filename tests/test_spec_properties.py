"""Property-based tests (hypothesis) of the spec parser and the prompt builder.

The parser's contract: for ANY input it returns a valid ExperimentSpec or raises
SpecError with one line that starts with the source name; never another
exception, never a multi-line message. The prompt builder's: the sample text is
carried verbatim (never formatted), the shared prefix does not depend on it, and
answers parse to one of the labels or None.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from scheduler.spec import MAX_SEED, QUEUE_PATTERN, ExperimentSpec, SpecError, load_spec, parse_spec
from scheduler.submit import experiment_record
from shared.catalog import CATALOG
from shared.prompts import TEMPLATES, build_messages, parse_label, render_plain

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = "smollm2:135m-instruct"

# -- the spec parser -----------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(), st.text(max_size=20), st.sampled_from(["", "\x00", "a\nb", "{0.__class__}"]))
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner, max_size=4)), max_leaves=20)

# Near-valid specs: each field is usually right and sometimes wrong, so the
# validators deep inside the spec (and the accepting path) are reached too.
def usually(valid, wrong):
    return st.integers(0, 11).flatmap(lambda i: wrong if i == 0 else valid)


numbers = st.one_of(st.integers(min_value=-5, max_value=10**12), st.floats(allow_nan=True), st.text(max_size=5))
labels = usually(st.just(["positive", "negative", "neutral"]),
                 st.one_of(st.lists(st.sampled_from(["positive", "Positive", " ", ""]), max_size=4), json_like))
# Every name a user might write, makeable or not: which are accepted is checked against the worker.
VARIANT_NAMES = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "q4_k_m", "q6_k", "bf16", "f32", "q3", "Q4_0")
variants = usually(st.lists(st.sampled_from(VARIANT_NAMES), min_size=1, max_size=3, unique=True),
                   st.one_of(st.lists(st.sampled_from(["q4_0", "q3", "q4_K_M", "fp16"]), max_size=3), json_like))
ABSENT = object()


def worker_can_make(model: str) -> set[str]:
    """The oracle: what the worker can really give the engine - the published file, or a
    variant the gguf quantizer has a mapping for (worker.quantize, not the spec's list)."""
    from worker.quantize import VARIANTS

    return set(VARIANTS) | {CATALOG[model].source_quantization}


def optional(valid, wrong=numbers):
    """A field that is left out, right, or wrong."""
    return st.one_of(st.just(ABSENT), usually(valid, wrong))


def present(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not ABSENT}


@st.composite
def near_specs(draw) -> dict:
    params = present({
        "max_tokens": draw(optional(st.integers(1, 4096))), "temperature": draw(optional(st.floats(0, 2))),
        "top_p": draw(optional(st.floats(0.01, 1))), "top_k": draw(optional(st.integers(0, 1000))),
        "seed": draw(optional(st.integers(0, MAX_SEED))), "batch_size": draw(optional(st.just(1))),
        "beam_size": draw(optional(st.just(1))),
    })
    models = draw(st.lists(st.builds(lambda name, engine, v, baseline, queue: present({
        "name": name, "engine": engine, "variants": v, "params": params,
        "baseline": baseline if baseline is ABSENT or isinstance(v, list) and baseline in v else ABSENT,
        "queue": queue}),
        usually(st.just(MODEL), st.sampled_from(["gemma3:270m", "llama3.2:1b-instruct", "", "x"])),
        usually(st.just("embedded"), st.sampled_from(["ollama", "vllm", 3])), variants,
        optional(st.sampled_from(["q4_0", "f16"]), st.just("zz")),
        optional(st.sampled_from(["gpu", "q:1"]), st.sampled_from(["a b", "", "\x00"]))),
        min_size=1, max_size=2))
    spec = present({
        "name": draw(usually(st.text(min_size=1, max_size=20), json_like)),
        "dataset": present({
            "path": draw(st.sampled_from(["d.csv", "/nonexistent/x.csv", ""])),
            "labels": draw(labels), "sample": draw(optional(st.integers(1, 1000))),
            "seed": draw(optional(st.integers(0, MAX_SEED))),
            "stratify": draw(optional(st.booleans(), st.text(max_size=3))),
        }),
        "prompt": present({
            "template": draw(optional(st.sampled_from(list(TEMPLATES)), st.just("fancy"))),
            "few_shot": draw(optional(st.integers(0, 20))),
            "output": draw(optional(st.sampled_from(["label", "free"]), st.just("json"))),
        }),
        "models": models,
        "carbon": present({"pue": draw(optional(st.floats(1, 3)))}),
        "placement": present({"queue": draw(optional(st.sampled_from(["default", "ok.q"]),
                                                     st.sampled_from(["x y", ""])))}),
        "repeats": draw(optional(st.integers(1, 100))),
    })
    extra = draw(usually(st.just({}), st.dictionaries(st.text(max_size=8), json_like, min_size=1, max_size=2)))
    return spec | {k: v for k, v in extra.items() if k not in spec}


def check_contract(data: object) -> ExperimentSpec | None:
    """Parse; assert the contract; the spec or None when it was refused."""
    try:
        spec = parse_spec(data, "exp.yaml")
    except SpecError as exc:
        # Every mistake at once, one line each, each naming the file.
        lines = str(exc).split("\n")
        assert all(line.startswith("exp.yaml: ") and len(line) > len("exp.yaml: ") for line in lines), lines
        assert not any("\r" in line for line in lines), lines
        return None
    assert isinstance(spec, ExperimentSpec)
    # What is accepted is what the rest of the system can use.
    json.dumps(experiment_record(spec, []))
    assert 0 <= spec.dataset.seed <= MAX_SEED
    assert re.fullmatch(QUEUE_PATTERN, spec.placement.queue)
    seen = [(m.name, m.engine, v) for m in spec.models for v in m.variants]
    assert len(seen) == len(set(seen)) and seen
    for m in spec.models:
        assert 0 <= m.params.seed <= MAX_SEED and m.baseline_variant in m.variants
        assert m.queue is None or re.fullmatch(QUEUE_PATTERN, m.queue)
        if m.engine == "embedded":
            assert set(m.variants) <= worker_can_make(m.name)
    assert len(spec.dataset.labels) >= 2
    assert len({x.strip().lower() for x in spec.dataset.labels}) == len(spec.dataset.labels)
    assert "\x00" not in json.dumps(spec.model_dump(mode="json"))
    return spec


@SETTINGS
@given(json_like)
@example({"name": "x", "dataset": {"path": "d.csv", "labels": ["a", "b"]},   # a key with a newline:
          "models": [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}], "a\nb": 1})  # still one line
@example({"name": "x", "dataset": {"path": "d.csv", "labels": ["a", "b"]},
          "models": [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"], "params": {"te\rmp": 1}}]})
def test_any_data_gives_a_spec_or_one_line_spec_error(data):
    check_contract(data)


@SETTINGS
@given(near_specs())
def test_near_valid_specs_give_a_spec_or_one_line_spec_error(data):
    check_contract(data)


def test_the_near_valid_strategy_reaches_valid_specs():
    """The strategy above is only useful if it also produces specs that pass."""
    accepted = []

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(near_specs())
    def collect(data):
        if check_contract(data) is not None:
            accepted.append(data)

    collect()
    assert accepted


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 json_like.map(lambda d: yaml.safe_dump(d, allow_unicode=True))))
@example(b"\xff\xfe")
@example("name: !!python/object/apply:os.system ['true']\n")
@example("a: &a [*a]\n")
@example("name: x\n\tdataset: 1\n")
@example("? [a, b]\n: 1\n")                      # a mapping key that is a list
@example("name: 2024-01-01\nmodels: .nan\n")
def test_any_file_gives_a_spec_or_one_line_spec_error(content):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "exp.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            spec = load_spec(path)
        except SpecError as exc:
            lines = str(exc).split("\n")
            assert all(line.startswith(str(path) + ": ") for line in lines), lines
            return
        assert isinstance(spec, ExperimentSpec)


# -- the prompt builder --------------------------------------------------------------------

texts = st.text(max_size=300)
# Labels are ASCII words: parse_label's whole-word check is ASCII-only (see the report of
# issue 7: "AÀ" vs "A" and Greek case mapping break it for other letters).
letters = st.characters(min_codepoint=ord("A"), max_codepoint=ord("z"), categories=["Ll", "Lu"])
labels_st = st.lists(st.text(alphabet=letters, min_size=1, max_size=10), min_size=2, max_size=5, unique_by=str.lower)
examples_st = st.lists(st.tuples(texts, st.sampled_from(["positive", "negative"])), max_size=3)


@SETTINGS
@given(st.sampled_from(list(TEMPLATES)), texts, labels_st, examples_st)
@example("label-only", "{0.__class__.__mro__[1].__subclasses__()} {labels} %(x)s %s {{", ["a", "b"], [])
def test_messages_carry_the_text_verbatim_and_are_well_formed(template, text, labels, examples):
    messages = build_messages(template, text, labels, examples)
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
    assert all(m["role"] in {"system", "user", "assistant"} for m in messages)
    assert messages[-1]["role"] == "user" and text in messages[-1]["content"]
    assert [m["role"] for m in messages].count("assistant") == len(examples)
    for ex_text, _ in examples:
        assert any(ex_text in m["content"] for m in messages if m["role"] == "user")
    plain = render_plain(messages)
    assert isinstance(plain, str) and plain.endswith(" ")


@SETTINGS
@given(texts, texts, labels_st, examples_st)
def test_the_prefix_before_the_sample_does_not_depend_on_it(text_a, text_b, labels, examples):
    """label-only: everything but the last message is shared, so a prompt cache reuses it."""
    a = build_messages("label-only", text_a, labels, examples)
    b = build_messages("label-only", text_b, labels, examples)
    assert a[:-1] == b[:-1]
    assert all(label.lower() in a[0]["content"].lower() for label in labels)   # shown capitalized


@SETTINGS
@given(texts, labels_st)
def test_parse_label_returns_a_label_or_none(output, labels):
    assert parse_label(output, labels) in [*labels, None]


@SETTINGS
@given(labels_st, st.data())
def test_a_bare_label_parses_to_itself(labels, data):
    label = data.draw(st.sampled_from(labels))
    case = data.draw(st.sampled_from([str.lower, str.upper, str.title, lambda s: s]))
    assert parse_label(" " + case(label) + ".", labels) == label
