"""The experiment file: every bad input gives one line naming the field and the fix."""
from __future__ import annotations

import pytest

from scheduler.spec import SpecError, load_spec, parse_spec
from tests.processes import DATASET
from tests.spec_edits import DELETE, edit

GOOD = {
    "name": "x",
    "dataset": {"path": str(DATASET), "labels": ["positive", "negative", "neutral"], "sample": 6},
    "models": [{"name": "smollm2:135m-instruct", "engine": "embedded", "variants": ["q4_0"]}],
}


def with_(path: str, value):
    """GOOD with one field (dotted path, [i] for lists) replaced; value None deletes it."""
    import copy
    return edit(path, DELETE if value is None else value)(copy.deepcopy(GOOD))


def test_good_spec_has_defaults():
    spec = parse_spec(GOOD)
    assert spec.prompt.template == "label-only" and spec.prompt.output == "label"
    assert spec.models[0].baseline_variant == "q4_0"
    assert spec.carbon.pue == 1.0 and spec.repeats == 1 and spec.placement.queue == "default"


@pytest.mark.parametrize("path,value,expected", [
    ("modles", [], "modles: unknown key: did you mean 'models'?"),
    ("dataset.lables", ["a", "b"], "dataset.lables: unknown key in dataset: did you mean 'labels'?"),
    ("models", None, "models: required field is missing"),
    ("models[0].engine", "vllm", "models[0].engine: Input should be 'embedded' or 'ollama'"),
    ("models[0].variants", ["q3"], "models[0]: unknown quantization 'q3'"),
    ("models[0].variants", ["q4_0", "q4_0"], "variant 'q4_0' is listed twice"),
    ("models[0].name", "gpt-9", "is not in the embedded catalog"),
    ("models[0]", {"name": "llama3.2", "engine": "ollama", "variants": ["q4_K_M"]},
     "model 'llama3.2' has no tag to add variant 'q4_K_M' to"),
    ("models[0].baseline", "f16", "baseline 'f16' is not one of the variants"),
    ("models[0].params", {"temperature": -1}, "models[0].params.temperature: Input should be greater than or equal to 0"),
    ("models[0].params", {"max_tokens": 10**9}, "models[0].params.max_tokens: Input should be less than or equal to 4096"),
    ("models[0].params", {"beam_size": 4}, "beam_size > 1 is not supported by the embedded engine"),
    ("models[0].params", {"batch_size": 8}, "batch_size > 1 is not supported"),
    ("dataset.sample", 0, "dataset.sample: Input should be greater than or equal to 1"),
    ("dataset.labels", ["positive"], "dataset.labels: List should have at least 2 items"),
    ("prompt", {"template": "fancy"}, "prompt.template: unknown template 'fancy'"),
    ("repeats", "many", "repeats: Input should be a valid integer"),
    ("carbon", {"pue": 0.5}, "carbon.pue: Input should be greater than or equal to 1"),
])
def test_bad_field_gives_one_line(path, value, expected):
    with pytest.raises(SpecError) as err:
        parse_spec(with_(path, value), "exp.yaml")
    message = str(err.value)
    assert expected in message and "\n" not in message and message.startswith("exp.yaml: ")


def test_file_level_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="malformed YAML at line"):
        load_spec(bad_yaml)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(latin)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(scalar)


def test_relative_dataset_path_is_relative_to_the_file(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nup,positive\ndown,negative\n")
    spec_file = tmp_path / "e.yaml"
    spec_file.write_text(
        "name: r\ndataset: {path: d.csv, labels: [positive, negative]}\n"
        "models: [{name: 'smollm2:135m-instruct', engine: embedded, variants: [q4_0]}]\n")
    assert load_spec(spec_file).dataset.path == tmp_path / "d.csv"
