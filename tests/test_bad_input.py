"""Bad input through the real `greenctl submit`: one line naming the field and the
fix, exit code 2, and nothing written (no rows in Postgres, no message on the broker).

The table runs through click's CliRunner (the real command, in-process, so 40
rows stay fast); two rows also run as real subprocesses to check what a user's
terminal shows. Postgres and Redis are the system servers: nothing is mocked.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import redis
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from greenctl.cli import main
from tests.conftest import SYSTEM_REDIS, redis_db
from tests.processes import MODEL, base_env, greenctl
from tests.spec_edits import DELETE, edit

REDIS_DB = redis_db("bad_input")
TABLES = ("experiment", "variant", "task", "result")
LABELS = ["positive", "negative", "neutral"]
GOOD_CSV = "text,label\nProfit rose,positive\nSales fell,negative\nShares flat,neutral\n" \
           "Margins up,positive\nLoss widened,negative\nNo change,neutral\n"


def good_spec(data: str = "data.csv") -> dict:
    return {
        "name": "bad-input",
        "dataset": {"path": data, "labels": list(LABELS), "sample": 3, "seed": 7},
        "prompt": {"template": "label-only", "few_shot": 0},
        "models": [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
        "placement": {"queue": "bad-input"},
    }




@dataclass
class Case:
    id: str
    expected: tuple[str, ...]               # substrings of the one-line message (field, fix)
    spec: Callable[[dict], dict] | None = None   # edit of the good spec
    spec_bytes: bytes | None = None         # raw experiment file instead
    data_bytes: bytes | None = None         # raw dataset file instead of GOOD_CSV
    spec_path: Callable[[Path], Path] | None = None   # where the CLI is pointed instead


CASES = [
    # -- the experiment file itself ----------------------------------------------------------
    Case("malformed-yaml", ("malformed YAML at line 2", "expected ','"), spec_bytes=b"name: [unclosed\n"),
    Case("yaml-not-a-mapping", ("must be a YAML mapping",), spec_bytes=b"- name: x\n- models: []\n"),
    Case("empty-spec-file", ("must be a YAML mapping",), spec_bytes=b""),
    Case("spec-not-utf8", ("not UTF-8", "save the experiment file as UTF-8"),
         spec_bytes="name: caf\xe9\n".encode("latin-1")),
    Case("spec-file-missing", ("no such file", "give the path of an experiment YAML file"),
         spec_path=lambda d: d / "nope.yaml"),
    Case("spec-path-is-a-directory", ("is a directory", "give the path of an experiment YAML file"),
         spec_path=lambda d: d),
    Case("yaml-python-tag-not-executed", ("malformed YAML", "python/object/apply:os.system"),
         spec_bytes=b"name: !!python/object/apply:os.system ['touch pwned']\n"),
    Case("yaml-alias-bomb", ("more than 100000 values once YAML aliases are expanded", "write the experiment out"),
         spec_bytes=("a: &a [x, x, x, x, x, x, x, x, x]\n"
                     + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
                               for i in range(8))
                     + "name: x\ndataset: {path: data.csv, labels: *i}\n").encode()),
    Case("yaml-alias-loop", ("name[1]: refers to itself", "remove the loop"), spec_bytes=b"name: &n [x, *n]\n"),
    Case("yaml-nested-too-deeply", ("nested too deeply",), spec_bytes=b"name: " + b"[" * 5000 + b"]" * 5000),
    Case("nul-in-spec-string", ("name: contains a NUL character", "remove it"), spec_bytes=b'name: "a\\0b"\n'),
    # -- keys and types --------------------------------------------------------------------
    Case("unknown-key-did-you-mean", ("modles: unknown key", "did you mean 'models'?"),
         spec=lambda s: {**s, "modles": s["models"]}),
    Case("unknown-nested-key", ("dataset.lables: unknown key in dataset", "did you mean 'labels'?"),
         spec=edit("dataset.lables", ["a", "b"])),
    Case("unknown-param-key", ("models[0].params.temprature: unknown key", "did you mean 'temperature'?"),
         spec=edit("models[0].params", {"temprature": 0.1})),
    Case("missing-models", ("models: required field is missing", "add it"), spec=edit("models", DELETE)),
    Case("missing-labels", ("dataset.labels: required field is missing",), spec=edit("dataset.labels", DELETE)),
    Case("wrong-type-repeats", ("repeats: Input should be a valid integer",), spec=edit("repeats", "many")),
    Case("wrong-type-labels", ("dataset.labels: Input should be a valid list",),
         spec=edit("dataset.labels", "positive,negative")),
    Case("wrong-type-models", ("models: Input should be a valid list",), spec=edit("models", {"name": MODEL})),
    Case("wrong-type-sample", ("dataset.sample: Input should be a valid integer",), spec=edit("dataset.sample", "all")),
    # -- the dataset file ------------------------------------------------------------------
    Case("dataset-file-missing", ("dataset.path: no such file", "fix the path"),
         spec=edit("dataset.path", "missing.csv")),
    Case("dataset-path-is-a-directory", ("dataset.path:", "is a directory", "give the path of a CSV file"),
         spec=edit("dataset.path", ".")),
    Case("dataset-missing-text-column", ("dataset.text_column: no column 'sentence'", "name one of those"),
         spec=edit("dataset.text_column", "sentence")),
    Case("dataset-missing-label-column", ("dataset.label_column: no column 'sentiment'", "name one of those"),
         spec=edit("dataset.label_column", "sentiment")),
    Case("labels-in-data-not-in-labels", ("dataset.labels: the data has labels not in labels: 'bullish' (1 rows)",
                                          "add them to dataset.labels"),
         data_bytes=GOOD_CSV.encode() + b"To the moon,bullish\n"),
    Case("empty-dataset-file", ("dataset.path:", "is empty", "give a CSV with a header and rows"), data_bytes=b""),
    Case("dataset-header-only", ("dataset.path:", "has a header but no rows", "add data"),
         data_bytes=b"text,label\n"),
    Case("sample-larger-than-data", ("dataset.sample: 50 is more than the 6 rows", "lower it"),
         spec=edit("dataset.sample", 50)),
    Case("dataset-not-utf8", ("dataset.path:", "is not UTF-8", "re-save it as UTF-8"),
         data_bytes="text,label\ncaf\xe9 up,positive\n".encode("latin-1")),
    Case("dataset-binary-file", ("dataset.path:", "is not UTF-8"), data_bytes=gzip.compress(GOOD_CSV.encode())),
    Case("dataset-nul-byte", ("dataset.text_column: row 2 of data.csv", "contains a NUL byte", "remove it"),
         data_bytes=b"text,label\nup,positive\nup\x00down,negative\n"),
    Case("dataset-broken-csv", ("dataset.path:", "is not valid CSV"),
         data_bytes=b'text,label\n"unterminated,positive\nnext,negative\n'),
    # -- models ----------------------------------------------------------------------------
    Case("duplicate-variant", ("models[0]: variant 'q4_0' is listed twice", "list each variant once"),
         spec=edit("models[0].variants", ["q4_0", "q4_0"])),
    Case("duplicate-model-entry", ("model 'smollm2:135m-instruct' variant 'q4_0' appears twice", "list it once"),
         spec=lambda s: {**s, "models": s["models"] * 2}),
    Case("unknown-engine", ("models[0].engine: Input should be 'embedded' or 'ollama'",),
         spec=edit("models[0].engine", "vllm")),
    Case("unknown-quantization", ("models[0]: unknown quantization 'q3'", "use one of q4_1"),
         spec=edit("models[0].variants", ["q3"])),
    Case("model-not-in-catalog", ("is not in the embedded catalog", "greenctl models list"),
         spec=edit("models[0].name", "gpt-9")),
    Case("baseline-not-a-variant", ("baseline 'f16' is not one of the variants",), spec=edit("models[0].baseline", "f16")),
    # -- parameters ------------------------------------------------------------------------
    Case("negative-temperature", ("models[0].params.temperature: Input should be greater than or equal to 0",),
         spec=edit("models[0].params", {"temperature": -1})),
    Case("absurd-max-tokens", ("models[0].params.max_tokens: Input should be less than or equal to 4096",),
         spec=edit("models[0].params", {"max_tokens": 10**9})),
    Case("negative-sample", ("dataset.sample: Input should be greater than or equal to 1",),
         spec=edit("dataset.sample", -5)),
    Case("absurd-repeats", ("repeats: Input should be less than or equal to 100",), spec=edit("repeats", 10**6)),
    Case("absurd-dataset-seed", ("dataset.seed:", "less than or equal to 4294967295"),
         spec=edit("dataset.seed", 2**40)),
    Case("negative-dataset-seed", ("dataset.seed: Input should be greater than or equal to 0",),
         spec=edit("dataset.seed", -1)),
    Case("absurd-inference-seed", ("models[0].params.seed:", "less than or equal to 4294967295"),
         spec=edit("models[0].params", {"seed": 10**30})),
    Case("nan-pue", ("carbon.pue:",), spec=edit("carbon", {"pue": float("nan")})),
    Case("bad-queue-name", ("placement.queue: String should match pattern",), spec=edit("placement.queue", "my queue")),
    Case("bad-model-queue-name", ("models[0].queue: String should match pattern",),
         spec=edit("models[0].queue", "gpu box")),
    Case("duplicate-labels", ("dataset.labels: labels must be distinct",),
         spec=edit("dataset.labels", ["positive", "Positive", "neutral"])),
    Case("unknown-template", ("prompt.template: unknown template 'fancy'", "use one of label-only"),
         spec=edit("prompt.template", "fancy")),
]


def write_case(case: Case, directory: Path) -> Path:
    (directory / "data.csv").write_bytes(GOOD_CSV.encode() if case.data_bytes is None else case.data_bytes)
    spec_file = directory / "experiment.yaml"
    if case.spec_bytes is not None:
        spec_file.write_bytes(case.spec_bytes)
    else:
        spec = (case.spec or (lambda s: s))(good_spec())
        spec_file.write_text(yaml.safe_dump(spec))
    return case.spec_path(directory) if case.spec_path else spec_file


def row_counts(db: str) -> dict[str, int]:
    with sa.create_engine(db, poolclass=sa.pool.NullPool).connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def broker_messages(url: str) -> int:
    client = redis.Redis.from_url(url)
    return sum(client.llen(k) for k in client.keys("*") if client.type(k) == b"list")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from tests.conftest import drop_database, make_database
    from shared.db import migrate

    db = make_database()
    migrate(db)
    broker = f"{SYSTEM_REDIS}/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    env = base_env(GREENCTL_DATABASE_URL=db, GREENCTL_BROKER_URL=broker,
                   GREENCTL_STATE_DIR=str(tmp_path_factory.mktemp("state")))
    yield env
    redis.Redis.from_url(broker).flushdb()
    drop_database(db)


def test_the_table_has_at_least_twenty_rows():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, servers, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # a YAML tag that ran `touch pwned` would show up here
    spec_path = write_case(case, tmp_path)
    before = row_counts(servers["GREENCTL_DATABASE_URL"]), broker_messages(servers["GREENCTL_BROKER_URL"])
    result = CliRunner().invoke(main, ["submit", str(spec_path)], env=servers, catch_exceptions=False)
    after = row_counts(servers["GREENCTL_DATABASE_URL"]), broker_messages(servers["GREENCTL_BROKER_URL"])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in case.expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert result.stdout == ""
    assert after == before
    assert not (tmp_path / "pwned").exists()


def test_a_good_spec_does_write(servers, tmp_path):
    """The control row: the same fixture and counting see a good submit's rows."""
    spec_path = write_case(Case("good", ()), tmp_path)
    before = row_counts(servers["GREENCTL_DATABASE_URL"])
    result = CliRunner().invoke(main, ["submit", str(spec_path), "--json"], env=servers, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    after = row_counts(servers["GREENCTL_DATABASE_URL"])
    assert after == {**before, "experiment": before["experiment"] + 1, "variant": before["variant"] + 1,
                     "task": before["task"] + 3}
    redis.Redis.from_url(servers["GREENCTL_BROKER_URL"]).flushdb()


@pytest.mark.parametrize("case_id", ["unknown-key-did-you-mean", "labels-in-data-not-in-labels"])
def test_a_users_terminal_sees_one_line_and_exit_2(case_id, servers, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    spec_path = write_case(case, tmp_path)
    proc = greenctl(["submit", str(spec_path)], servers, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("Error: ") and case.expected[0] in line
