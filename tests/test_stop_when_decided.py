"""Stop when decided (`stop:` in the spec) on the system Postgres and Redis.

First the rounds themselves: answers are written through the worker's own store
functions (claim, write_result) standing in for a model, and the scheduler's
`advance` is called as its Celery task would; the broker's queue shows what was
sent. Then once on the real path: `greenctl submit --wait` -> broker -> a
`greenctl worker` and a `greenctl scheduler` subprocess -> SmolLM2 -> report.
"""
from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from scheduler import rounds, submit
from scheduler.dataset import load_samples
from scheduler.spec import SpecError, parse_spec
from shared.celery_app import celery_settings
from shared.db import session_scope
from shared.models import Experiment, Task
from tests.processes import DATASET, MODEL, base_env, greenctl, greenctl_json, service, worker, write_spec
from worker import store

LABELS = ["positive", "negative", "neutral"]
STOP = {"when": "decided", "min_samples": 30, "max_samples": 90, "check_every": 30, "f1_tolerance": 0.03}


@pytest.fixture()
def queue() -> str:
    return f"stop-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def app(broker_url, queue):
    celery = Celery("stop-test")
    celery.conf.update(celery_settings(broker_url, 600))
    yield celery
    redis.Redis.from_url(broker_url).delete(queue)


def _spec(queue: str, **stop):
    return parse_spec({
        "name": "stop-test",
        "dataset": {"path": str(DATASET), "labels": LABELS, "seed": 5},
        "prompt": {"template": "label-only", "few_shot": 0},
        "models": [{"name": MODEL, "engine": "embedded", "variants": ["q8_0", "q4_0"]}],
        "placement": {"queue": queue}, "stop": STOP | stop})


def _sent(broker_url: str, queue: str) -> list[int]:
    """Task ids of the inference messages waiting in `queue`, taken off it."""
    client, ids = redis.Redis.from_url(broker_url), []
    while (raw := client.rpop(queue)) is not None:
        ids.append(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0])
    return sorted(ids)


def _run(db: str, task_ids: list[int], answer) -> None:
    """What a worker does with each message, the model's answer given by `answer(variant, label)`."""
    for task_id in task_ids:
        job = store.claim(db, task_id, "stand-in", 600)
        store.write_result(db, dict(task_id=task_id, experiment_id=job.experiment_id,
                                    variant_id=job.variant_id, worker="stand-in",
                                    prediction=answer(job.variant, job.label), energy_method="forced",
                                    energy_kwh=1e-5, co2_kg=1e-6))


def _statuses(db: str, experiment_id: int) -> dict[str, int]:
    with session_scope(db) as s:
        return dict(s.execute(sa.select(Task.status, sa.func.count()).where(Task.experiment_id == experiment_id)
                              .group_by(Task.status)).all())


def _experiment(db: str, experiment_id: int) -> Experiment:
    with session_scope(db) as s:
        exp = s.get(Experiment, experiment_id)
        s.expunge(exp)
        return exp


def test_spec_errors_name_the_field_and_the_fix():
    with pytest.raises(SpecError, match=r"stop: min_samples 100 is more than max_samples 90: lower"):
        _spec("q", min_samples=100)
    with pytest.raises(SpecError, match=r"stop: min_samples 6 is too few: .* set min_samples: 30 or more"):
        _spec("q", min_samples=6)
    with pytest.raises(SpecError, match=r"stop.check_every: .*greater than or equal to 1"):
        _spec("q", check_every=0)
    with pytest.raises(SpecError, match=r"stop.when: unknown rule 'soon': use when: decided"):
        _spec("q", when="soon")
    spec = _spec("q")
    assert spec.dataset.sample == 90          # max_samples is the sample size


def test_a_clear_difference_stops_after_the_first_round(fresh_db_url, app, queue, broker_url):
    spec = _spec(queue)
    samples, examples = load_samples(spec.dataset)
    eid = submit.write_experiment(fresh_db_url, spec, samples, examples)
    submit.enqueue_pending(fresh_db_url, app, eid)
    first = _sent(broker_url, queue)
    assert len(first) == 60                        # 30 samples x 2 variants; 120 held back
    assert _statuses(fresh_db_url, eid) == {"queued": 60, "held": 120}
    # Nothing else is sent by a reconcile pass while the round runs.
    assert rounds.advance(fresh_db_url, app, eid) == "running"
    # q8_0 always right, q4_0 always wrong: decided at once.
    _run(fresh_db_url, first, lambda variant, label: label if variant == "q8_0" else
         next(x for x in LABELS if x != label))
    assert rounds.waiting_experiment_ids(fresh_db_url) == [eid]
    assert rounds.advance(fresh_db_url, app, eid) == "stopped"
    assert rounds.advance(fresh_db_url, app, eid) == "nothing"      # idempotent
    assert _sent(broker_url, queue) == []
    assert _statuses(fresh_db_url, eid) == {"done": 60, "cancelled": 120}
    exp = _experiment(fresh_db_url, eid)
    assert exp.status == "done" and exp.finished_at is not None
    out = exp.stop_outcome
    assert (out["state"], out["decided"], out["n_samples"], out["tasks_not_run"]) == ("finished", True, 30, 120)
    assert out["energy_saved_kwh"] == pytest.approx(120 * 1e-5)
    assert "Bonferroni over 3 planned looks" in out["method"]
    assert out["looks"][-1]["pairs"][0]["verdict"] == "worse"
    with session_scope(fresh_db_url) as s:
        reasons = set(s.execute(sa.select(Task.error).where(Task.status == "cancelled")).scalars())
    assert reasons == {"stopped: decided after 30 samples"}


def test_an_undecided_pair_runs_every_round_then_finishes(fresh_db_url, app, queue, broker_url):
    spec = _spec(queue)
    samples, examples = load_samples(spec.dataset)
    eid = submit.write_experiment(fresh_db_url, spec, samples, examples)
    submit.enqueue_pending(fresh_db_url, app, eid)
    seen_samples, turns = [], {"q8_0": iter(range(100)), "q4_0": iter(range(1, 101))}

    def answer(variant, label):     # on every other sample one variant is right and the other wrong
        return label if next(turns[variant]) % 2 == 0 else next(x for x in LABELS if x != label)

    for n_round in range(3):
        sent = _sent(broker_url, queue)
        assert len(sent) == 60, f"round {n_round}"
        with session_scope(fresh_db_url) as s:
            seen_samples.append(set(s.execute(sa.select(Task.sample_index).where(Task.id.in_(sent))).scalars()))
        _run(fresh_db_url, sent, answer)
        expected = "released" if n_round < 2 else "stopped"
        assert rounds.advance(fresh_db_url, app, eid) == expected, _experiment(fresh_db_url, eid).stop_outcome["looks"]
    assert [len(x) for x in seen_samples] == [30, 30, 30] and len(set.union(*seen_samples)) == 90
    # Each round is itself stratified: its label counts are the whole sample's shares x 30, +-1.
    label_of = {smp.index: smp.label for smp in samples}
    for chosen in seen_samples:
        for label in LABELS:
            share = sum(v == label for v in label_of.values()) / 90
            assert abs(sum(label_of[i] == label for i in chosen) - 30 * share) <= 1
    assert _statuses(fresh_db_url, eid) == {"done": 180}
    out = _experiment(fresh_db_url, eid).stop_outcome
    assert (out["decided"], out["n_samples"], out["tasks_not_run"]) == (False, 90, 0)
    assert len(out["looks"]) == 3 and _experiment(fresh_db_url, eid).status == "done"


def test_cancel_also_cancels_held_rounds(fresh_db_url, app, queue, broker_url):
    spec = _spec(queue)
    samples, examples = load_samples(spec.dataset)
    eid = submit.write_experiment(fresh_db_url, spec, samples, examples)
    assert submit.cancel_experiment(fresh_db_url, eid) == 180
    assert _statuses(fresh_db_url, eid) == {"cancelled": 180}
    assert rounds.advance(fresh_db_url, app, eid) == "nothing"


# -- the real path -------------------------------------------------------------------------------

@contextmanager
def scheduler_service(env: dict, log: Path, ready_timeout: float = 60):
    """`greenctl scheduler` as a subprocess (reconcile every 2 s), stopped when the block ends."""
    with service([sys.executable, "-m", "greenctl", "scheduler"], env | {"GREENCTL_RECONCILE_SECONDS": "2"},
                 log, "scheduler", ready_timeout) as proc:
        yield proc


def test_real_path_stops_or_runs_every_round_and_held_tasks_never_run(tmp_path, fresh_db_url, broker_url):
    redis.Redis.from_url(broker_url).flushdb()
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=broker_url,
                   GREENCTL_STATE_DIR=str(tmp_path / "state"))
    # The source's own 4-bit weights against a re-quantization of them, 3-shot: the pair most
    # likely to differ on few samples (issue 12: macro-F1 0.45 vs 0.25 on 150 samples).
    # Two rounds (30, then 30 held back up to max 60), not three: still a first round, held tasks
    # a decided look cancels or an undecided one releases, and a last look by the scheduler; the
    # third round of the rule is test_an_undecided_pair_runs_every_round_then_finishes's. 60 of
    # the 180 inferences fewer.
    most = 60
    spec = write_spec(tmp_path / "stop.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q8_0", "q4_0"]}],
                      sample=most, queue="stop", stop=STOP | {"max_samples": most},
                      prompt={"template": "label-only", "few_shot": 3})
    with scheduler_service(env, tmp_path / "scheduler.log"), worker(env, "stop", tmp_path / "worker.log"):
        eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "400"], env)["experiment_id"]
        deadline = time.monotonic() + 30          # the last look is the scheduler's, just after
        while _experiment(fresh_db_url, eid).stop_outcome["state"] != "finished":
            assert time.monotonic() < deadline, "the scheduler never recorded the final look"
            time.sleep(0.5)
    status = greenctl_json(["status", str(eid), "--json"], env)
    out = _experiment(fresh_db_url, eid).stop_outcome
    assert status["status"] == "done" and status["n_queued"] == status["n_running"] == 0
    with sa.create_engine(fresh_db_url).connect() as conn:
        ran = conn.execute(sa.text("SELECT count(*) FROM result WHERE experiment_id = :e"), {"e": eid}).scalar()
        never = conn.execute(sa.text(
            "SELECT count(*) FROM task t WHERE t.experiment_id = :e AND t.status = 'cancelled' "
            "AND (t.attempts > 0 OR EXISTS (SELECT 1 FROM result r WHERE r.task_id = t.id))"), {"e": eid}).scalar()
    assert never == 0                                   # held-back tasks never ran
    if out["decided"] and out["n_samples"] < most:
        assert ran == 2 * out["n_samples"] < 2 * most and status["n_cancelled"] == 2 * most - ran
    else:
        assert ran + status["n_failed"] == 2 * most and out["n_samples"] == most
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    assert report["stop"]["n_samples"] == out["n_samples"]
    table = greenctl(["report", str(eid)], env).stdout
    assert "Bonferroni" in table
