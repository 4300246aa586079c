"""Every file in examples/ is checked here (issue 19).

- Each example validates with the spec loader; sustained-30min.yaml is a 30-minute `sustain:` run.
- The Ollama examples resolve, through the engine's own tag rule, to the exact Ollama library tags
  written below (checked by hand against public `ollama pull` lines, see the examples' comments),
  against recorded /api/tags and /api/show responses (tests/fixtures/ollama, see its README).
- Their decoding parameters are Table II's, read from the paper's text.
- The embedded example runs for real (its smallest variants, 4 samples) on a real worker.
- `greenctl submit` of an Ollama example prints the `ollama pull` lines an online worker lacks;
  an Ollama worker records the tags its server lists; `report --format table3` sets our figures
  beside the paper's Table III, read from the paper's text.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from scheduler.spec import load_spec
from tests.conftest import SYSTEM_REDIS, redis_db
from tests.ollama_replay import FIXTURES, OllamaReplay
from tests.processes import ROOT, base_env, greenctl, greenctl_json, worker

EXAMPLES = ROOT / "examples"
PAPER = Path("/work/shared/papers/000_e64ad731e41b8c9f.txt")
REDIS_DB = redis_db("examples")

# The exact tags of Ollama's library each example must load, with the quantization /api/show reports.
TABLE3_TAGS = {
    "llama3.2:1b-instruct-fp16": "F16", "llama3.2:1b-instruct-q4_K_M": "Q4_K_M",
    "phi3:3.8b-mini-128k-instruct-fp16": "F16", "phi3:3.8b-mini-128k-instruct-q4_K_M": "Q4_K_M",
    "qwen2:7b-instruct-fp16": "F16", "qwen2:7b-instruct-q4_K_M": "Q4_K_M",
    "mistral:7b-instruct-v0.3-fp16": "F16", "mistral:7b-instruct-v0.3-q4_K_M": "Q4_K_M",
    "llava-llama3:8b-v1.1-fp16": "F16", "llava-llama3:8b-v1.1-q4_0": "Q4_0",
}
SWEEP_TAGS = {"llama3.2:1b-instruct-fp16": "F16", "llama3.2:1b-instruct-q8_0": "Q8_0",
              "llama3.2:1b-instruct-q4_K_M": "Q4_K_M"}
# Table II's row name for each model of table3-ollama.yaml, in file order.
TABLE2_ROWS = ["Llama-3.2-1B", "Phi-3-mini", "Qwen2-7B", "Mistral-7B", "LLaVA-Llama3"]
# Table III's row label for the same models.
TABLE3_ROWS = ["Llama 3.2", "Phi 3.2", "Qwen", "Mistral-small", "Llava-Llama 3"]


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def _paper_text() -> str:
    if not PAPER.is_file():
        pytest.skip(f"the case study's text is not at {PAPER}")
    return PAPER.read_text()


def paper_table2() -> dict[str, dict]:
    """Table II of the paper's text: model -> batch, max tokens, temperature, top-p, top-k, beam."""
    text = _paper_text().split("TABLE II:", 1)[1].split("The models used", 1)[0]
    out = {}
    for name in TABLE2_ROWS:
        nums = re.search(re.escape(name) + r" ([\d. ]+)", text).group(1).split()
        batch, max_tokens, temp, top_p, top_k, beam = nums[:6]
        out[name] = dict(batch_size=int(batch), max_tokens=int(max_tokens), temperature=float(temp),
                         top_p=float(top_p), top_k=int(top_k), beam_size=int(beam))
    return out


def paper_table3() -> dict[str, tuple[list[float], list[float]]]:
    """Table III of the paper's text: label -> (before, after) [precision, recall, F1, accuracy, kg CO2]."""
    text = _paper_text().split("TABLE III:", 1)[1]
    before, after = text.split("Before Optimization", 1)[1].split("After Optimization", 1)
    out = {}
    for label in TABLE3_ROWS:
        rows = [re.search(r"^" + re.escape(label) + r" ([\d. ]+)$", block, re.MULTILINE).group(1).split()
                for block in (before, after)]
        out[label] = tuple([float(x) for x in r[:5]] for r in rows)
    return out


# -- every example validates -------------------------------------------------------------------

@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_every_example_says_what_it_reproduces_and_validates(path):
    text = path.read_text()
    assert text.startswith("#") and len([ln for ln in text.splitlines()[:6] if ln.startswith("# ")]) >= 3
    spec = load_spec(path)
    if path.name == "sustained-30min.yaml":   # the reviewer's check 3: 30+ minutes, no stop rule
        assert spec.dataset.path.is_file() and spec.sustain.minutes >= 30 and spec.stop is None
        return
    assert spec.dataset.path.is_file() and spec.stop is not None
    assert all(m.params.batch_size == 1 and m.params.beam_size == 1 for m in spec.models)


def test_the_ollama_examples_say_why_batch_and_beam_are_not_table_2s():
    for name in ("table3-ollama.yaml", "sweep-4-8-16.yaml"):
        text = (EXAMPLES / name).read_text().lower()
        assert "batch" in text and "beam" in text and "not ollama options" in text


def test_table3_example_uses_table_2s_decoding_and_figure_2s_prompt():
    table2 = paper_table2()
    spec = load_spec(EXAMPLES / "table3-ollama.yaml")
    assert spec.prompt.template == "paper-checklist" and spec.prompt.output == "free"
    assert [m.engine for m in spec.models] == ["ollama"] * 5
    for model, row in zip(spec.models, TABLE2_ROWS):
        paper = table2[row]
        ours = model.params
        assert (ours.max_tokens, ours.temperature, ours.top_p, ours.top_k) == (
            paper["max_tokens"], paper["temperature"], paper["top_p"], paper["top_k"]), row
        assert paper["batch_size"] > 1 and paper["beam_size"] > 1    # what the file says Ollama cannot do
        assert model.baseline_variant == "fp16"


# -- the Ollama examples resolve to the library's tags ------------------------------------------

def _replay_for(tags: dict[str, str]) -> OllamaReplay:
    replay = OllamaReplay()
    replay.on("/api/tags", "tags_paper_models.json")
    replay.on("/api/show", "show_model_not_found.json", status=404)
    for tag in tags:      # only the exact tag is known: a wrong name gets Ollama's 404
        replay.on("/api/show", f"show_{tag.replace(':', '_')}.json", when=lambda b, t=tag: b.get("model") == t)
    return replay


@pytest.mark.parametrize("name, expected", [("table3-ollama.yaml", TABLE3_TAGS), ("sweep-4-8-16.yaml", SWEEP_TAGS)])
def test_ollama_example_resolves_to_the_exact_library_tags(name, expected):
    from worker.engines.ollama import OllamaEngine

    spec = load_spec(EXAMPLES / name)
    listed = {m["model"] for m in json.loads((FIXTURES / "tags_paper_models.json").read_text())["models"]}
    assert set(expected) <= listed
    with _replay_for(expected) as server:
        engine = OllamaEngine(host=server.host, preload=False, unload_on_close=False)
        loaded = {}
        try:
            for m in spec.models:
                for v in m.variants:
                    info = engine.load(m.name, v)
                    loaded[info.name] = info.quantization
                    assert info.file_bytes and info.parameter_count     # found in /api/tags and /api/show
        finally:
            engine.close()
        asked = [body["model"] for body in server.requests("/api/show")]
    assert loaded == expected
    assert sorted(asked) == sorted(expected)


# -- the embedded example runs for real --------------------------------------------------------

def _system_env(tmp_path, db_url: str, **extra) -> dict:
    __import__("redis").Redis.from_url(f"{SYSTEM_REDIS}/{REDIS_DB}").flushdb()
    return base_env(GREENCTL_DATABASE_URL=db_url, GREENCTL_BROKER_URL=f"{SYSTEM_REDIS}/{REDIS_DB}",
                    GREENCTL_STATE_DIR=str(tmp_path / "state"), **extra)


def test_embedded_example_runs_for_real_on_a_few_samples(tmp_path, fresh_db_url):
    data = yaml.safe_load((EXAMPLES / "embedded-sweep.yaml").read_text())
    smol = next(m for m in data["models"] if m["name"] == "smollm2:135m-instruct")
    # Its two smallest variants, 4 samples: minutes on a 2-core machine, not hours.
    data["models"] = [smol | {"variants": ["q8_0", "q4_0"], "baseline": "q8_0"}]
    del data["stop"]
    data["dataset"] |= {"path": str((EXAMPLES / data["dataset"]["path"]).resolve()), "sample": 4}
    data["placement"] = {"queue": "examples"}
    spec = tmp_path / "embedded-small.yaml"
    spec.write_text(yaml.safe_dump(data))
    env = _system_env(tmp_path, fresh_db_url)
    with worker(env, "examples", tmp_path / "worker.log", "--threads", "1", ready_timeout=180):
        eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "480"], env,
                            timeout=540)["experiment_id"]      # a 2-core machine shared with other work
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    by_variant = {v["variant"]: v for v in report["variants"]}
    assert report["experiment"]["status"] == "done"
    assert {k: (v["n"], v["n_failed"]) for k, v in by_variant.items()} == {"q8_0": (4, 0), "q4_0": (4, 0)}
    assert all(v["co2_kg_per_inference"] > 0 and 0 <= v["f1_weighted"] <= 1 for v in by_variant.values())
    table = greenctl(["report", str(eid), "--format", "table3"], env).stdout
    before, after = table.split("Before optimization", 1)[1].split("After optimization", 1)
    assert re.search(r"^smollm2:135m-instruct\s+q8_0\s+4\s", before, re.MULTILINE)
    assert re.search(r"^smollm2:135m-instruct\s+q4_0\s+4\s", after, re.MULTILINE)
    assert "paper:" not in table       # SmolLM2 is not one of the paper's five models


# -- what an Ollama worker lacks, before the run ------------------------------------------------

def _insert_worker(db_url: str, host: str, queue: str, engines: list, models: list, seconds_ago: float) -> None:
    with sa.create_engine(db_url).begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO worker_node (hostname, queue, cpu_model, cores, ram_gb, gpu, os, energy_method, "
            "hardware_profile, engines, models, started_at, last_heartbeat) VALUES (:h, :q, 'cpu', 4, 16, '', "
            "'linux', 'estimated', 'p', CAST(:e AS json), CAST(:m AS json), now(), "
            "now() - make_interval(secs => :ago))"),
            {"h": host, "q": queue, "e": json.dumps(engines), "m": json.dumps(models), "ago": seconds_ago})


def test_submit_prints_the_ollama_pull_lines_each_online_worker_lacks(tmp_path, fresh_db_url):
    pulled = ["llama3.2:1b-instruct-fp16", "llama3.2:1b-instruct-q4_K_M", "qwen2:7b-instruct-q4_K_M"]
    _insert_worker(fresh_db_url, "laptop", "default", ["ollama"], pulled, seconds_ago=1)
    _insert_worker(fresh_db_url, "gone", "default", ["ollama"], [], seconds_ago=3600)       # offline
    _insert_worker(fresh_db_url, "cpu-box", "default", ["embedded"], ["smollm2:135m-instruct"], seconds_ago=1)
    env = _system_env(tmp_path, fresh_db_url)
    out = greenctl(["submit", str(EXAMPLES / "table3-ollama.yaml"), "--json"], env)
    assert "experiment_id" in json.loads(out.stdout)          # a warning: submit went ahead
    lines = out.stderr.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("warning: worker laptop"))
    pulls = [ln.strip() for ln in lines[head + 1:] if ln.startswith("  ollama pull ")]
    assert pulls == [f"ollama pull {t}" for t in TABLE3_TAGS if t not in pulled]
    assert "7 of the 10" in lines[head]
    assert not any("gone" in ln or "cpu-box" in ln for ln in lines)


def test_plan_prints_the_same_pull_lines_and_writes_nothing(tmp_path, fresh_db_url):
    _insert_worker(fresh_db_url, "laptop", "default", ["ollama"], ["llama3.2:1b-instruct-q8_0"], seconds_ago=1)
    env = _system_env(tmp_path, fresh_db_url)
    out = greenctl(["plan", str(EXAMPLES / "sweep-4-8-16.yaml")], env)
    pulls = [ln.strip() for ln in out.stderr.splitlines() if ln.startswith("  ollama pull ")]
    assert pulls == ["ollama pull llama3.2:1b-instruct-fp16", "ollama pull llama3.2:1b-instruct-q4_K_M"]
    with sa.create_engine(fresh_db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM experiment")).scalar_one() == 0


def test_submit_says_when_no_ollama_worker_is_online(tmp_path, fresh_db_url):
    env = _system_env(tmp_path, fresh_db_url)
    out = greenctl(["submit", str(EXAMPLES / "sweep-4-8-16.yaml"), "--json"], env)
    assert json.loads(out.stdout)["experiment_id"] == 1
    assert "warning: no online worker with the Ollama engine on queue 'default'" in out.stderr
    assert "ollama pull" not in out.stderr


def test_an_ollama_worker_records_the_tags_its_server_has(tmp_path, fresh_db_url):
    def stored() -> list:
        with sa.create_engine(fresh_db_url).connect() as conn:
            return conn.execute(sa.text("SELECT models FROM worker_node WHERE queue = 'olq'")).scalar_one()

    def listed(fixture: str) -> list:
        return sorted(m["model"] for m in json.loads((FIXTURES / fixture).read_text())["models"])

    with OllamaReplay() as server:
        server.on("/api/tags", "tags_paper_models.json")
        # GREENCTL_ENGINES, not --engine: the way `greenctl up` starts its workers on Ollama.
        env = _system_env(tmp_path, fresh_db_url, OLLAMA_HOST=server.host, GREENCTL_HEARTBEAT_SECONDS="0.5",
                          GREENCTL_ENGINES="ollama")
        with worker(env, "olq", tmp_path / "olq.log", ready_timeout=180):
            assert stored() == listed("tags_paper_models.json")       # at start
            server.on("/api/tags", "tags.json")                       # two tags removed, as `ollama rm` does
            deadline = time.monotonic() + 20
            while stored() != listed("tags.json") and time.monotonic() < deadline:
                time.sleep(0.3)
            assert stored() == listed("tags.json")                    # with heartbeats


# -- the paper's Table III layout ----------------------------------------------------------------

def test_table3_sets_our_figures_beside_the_papers(tmp_path, fresh_db_url):
    from tests.report_fixtures import seed_with_truth

    eid, truth = seed_with_truth(fresh_db_url, variants=("f16", "q8_0", "q4_0"), samples=30, failed=2)
    with sa.create_engine(fresh_db_url).begin() as conn:    # as if Llama 3.2 1B ran through Ollama
        conn.execute(sa.text("UPDATE variant SET model = 'llama3.2:1b-instruct', engine = 'ollama'"))
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_STATE_DIR=str(tmp_path / "state"))
    table = greenctl(["report", str(eid), "--format", "table3"], env).stdout
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    paper_before, paper_after = paper_table3()["Llama 3.2"]
    blocks = table.split("Before optimization", 1)[1].split("After optimization", 1)
    blocks = [blocks[0], *blocks[1].split("After vs before", 1)]
    for block, variant, paper in ((blocks[0], "f16", paper_before), (blocks[1], "q4_0", paper_after)):
        ours = next(ln for ln in block.splitlines() if ln.startswith("llama3.2:1b-instruct"))
        assert re.match(r"llama3\.2:1b-instruct\s+" + variant + r"\s+28\s", ours)   # 30 samples, 2 failed
        t = truth[variant]
        for key in ("precision_weighted", "recall_weighted", "f1_weighted", "accuracy"):
            assert f"{t[key]:.2f} [" in ours, key
        paper_line = next(ln for ln in block.splitlines() if ln.strip().startswith("paper: Llama 3.2"))
        assert paper_line.split()[3:7] == [f"{x:.2f}" for x in paper[:4]]
        assert f"{paper[4]:g} kg" in paper_line
    change = next(ln for ln in blocks[2].splitlines() if ln.startswith("llama3.2:1b-instruct"))
    q4 = next(v for v in report["variants"] if v["variant"] == "q4_0")
    assert "q4_0 vs f16" in change and f" {q4['vs_baseline']['f1_weighted_verdict']} " in change
    assert f"{paper_after[2] - paper_before[2]:+.2f}" in change                        # the paper's ΔF1
    assert f"{(paper_after[4] / paper_before[4] - 1) * 100:+.0f} %" in change          # its CO2 change
    assert "not in this layout" in table and "llama3.2:1b-instruct q8_0" in table
    assert "estimate, not a measurement" in table                 # estimated energy is said to be one
