"""The scheduler's reconcile, cancel and resume, on the system Postgres and Redis.

Messages go to queues named for each test on a Redis database of these tests'
own (12); the scheduler's "alive" key is deleted after each test, so no other
test (or developer) sharing the Redis sees a scheduler that is not there.
"""
from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from click.testing import CliRunner

from greenctl.cli import main
from scheduler import liveness, reconcile, submit, tasks
from scheduler.dataset import load_samples
from scheduler.spec import load_spec
from shared.celery_app import ENQUEUE_TASK, SCHEDULER_QUEUE, celery_settings
from shared.db import session_scope
from shared.models import Experiment, Task, TaskStatus, utcnow
from worker import store
from tests.conftest import SYSTEM_REDIS, redis_db

BROKER = f"{SYSTEM_REDIS}/{redis_db('flower+reconcile')}"
DATA = "/work/main/greenctl/data/financial_sentiment.csv"
LEASE = 600


@pytest.fixture()
def queue() -> str:
    return f"reconcile-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def app(queue):
    celery = Celery("reconcile-test")
    celery.conf.update(celery_settings(BROKER, LEASE))
    yield celery
    client = redis.Redis.from_url(BROKER)
    client.delete(queue, SCHEDULER_QUEUE, liveness.ALIVE_KEY)


def _experiment(db: str, tmp_path, queue: str, samples: int = 6) -> tuple[int, list[int]]:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"""
name: reconcile-test
dataset: {{path: {DATA}, text_column: text, label_column: label,
          labels: [positive, negative, neutral], sample: {samples}, seed: 1}}
prompt: {{template: label-only, few_shot: 0, output: label}}
models: [{{name: "smollm2:135m-instruct", engine: embedded, variants: [q4_1]}}]
placement: {{queue: {queue}}}
""")
    spec = load_spec(spec_file)
    rows, examples = load_samples(spec.dataset, 0)
    experiment_id = submit.write_experiment(db, spec, rows, examples)
    with session_scope(db) as s:
        ids = list(s.execute(sa.select(Task.id).where(Task.experiment_id == experiment_id)
                             .order_by(Task.id)).scalars())
    return experiment_id, ids


def _set(db: str, task_id: int, **values) -> None:
    with session_scope(db) as s:
        s.execute(sa.update(Task).where(Task.id == task_id).values(**values))


def _sent(queue: str) -> list[int]:
    """Task ids of the inference messages waiting in `queue`."""
    ids = []
    for raw in redis.Redis.from_url(BROKER).lrange(queue, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.append(body[0][0])
    return sorted(ids)


def _stage(db: str, ids: list[int]) -> dict[str, int]:
    """One task in each situation the reconcile must tell apart."""
    now = utcnow()
    lost, fresh, never, orphaned, leased, done = ids
    _set(db, lost, enqueued_at=now - timedelta(seconds=LEASE + 60))
    _set(db, fresh, enqueued_at=now - timedelta(seconds=5))
    _set(db, never, enqueued_at=None)
    _set(db, orphaned, status=TaskStatus.RUNNING, enqueued_at=now - timedelta(hours=1),
         lease_until=now - timedelta(seconds=1))
    _set(db, leased, status=TaskStatus.RUNNING, enqueued_at=now - timedelta(hours=1),
         lease_until=now + timedelta(seconds=LEASE))
    _set(db, done, status=TaskStatus.DONE, enqueued_at=now - timedelta(hours=1))
    return dict(lost=lost, fresh=fresh, never=never, orphaned=orphaned, leased=leased, done=done)


def test_selection_finds_lost_and_orphaned_tasks_only(fresh_db_url, tmp_path, queue):
    _, ids = _experiment(fresh_db_url, tmp_path, queue)
    t = _stage(fresh_db_url, ids)
    assert reconcile.lost_task_ids(fresh_db_url, LEASE) == [t["lost"]]
    assert reconcile.lost_task_ids(fresh_db_url, LEASE, queues=["elsewhere"]) == []
    assert reconcile.orphaned_task_ids(fresh_db_url, LEASE) == [t["orphaned"]]


def test_a_pass_sends_never_sent_orphaned_and_lost_tasks(fresh_db_url, tmp_path, queue, app):
    _, ids = _experiment(fresh_db_url, tmp_path, queue)
    t = _stage(fresh_db_url, ids)
    counts = tasks.reconcile_once(fresh_db_url, app, LEASE)
    assert counts == {"pending": 1, "orphaned": 1, "lost": 1}
    assert _sent(queue) == sorted([t["never"], t["orphaned"], t["lost"]])
    # Each re-send is stamped: the next pass sends nothing more.
    assert tasks.reconcile_once(fresh_db_url, app, LEASE) == {"pending": 0, "orphaned": 0, "lost": 0}
    assert liveness.last_seen(app) is not None, "a pass marks the scheduler alive"


def test_a_lost_task_waits_while_its_queue_still_holds_messages(fresh_db_url, tmp_path, queue, app):
    _, ids = _experiment(fresh_db_url, tmp_path, queue)
    t = _stage(fresh_db_url, ids)
    _set(fresh_db_url, t["never"], enqueued_at=utcnow())
    _set(fresh_db_url, t["orphaned"], status=TaskStatus.DONE)
    reconcile.resend(fresh_db_url, app, [t["fresh"]])           # a backlog: one message waits
    assert tasks.reconcile_once(fresh_db_url, app, LEASE)["lost"] == 0
    redis.Redis.from_url(BROKER).delete(queue)                  # drained (or lost)
    assert tasks.reconcile_once(fresh_db_url, app, LEASE)["lost"] == 1
    assert _sent(queue) == [t["lost"]]


def test_cancel_stops_claims_and_resume_queues_again(fresh_db_url, tmp_path, queue, app):
    experiment_id, ids = _experiment(fresh_db_url, tmp_path, queue, samples=4)
    _set(fresh_db_url, ids[0], status=TaskStatus.DONE)
    _set(fresh_db_url, ids[1], status=TaskStatus.RUNNING, lease_until=utcnow() + timedelta(seconds=60))
    assert submit.cancel_experiment(fresh_db_url, experiment_id) == 3
    assert store.claim(fresh_db_url, ids[2], "w", LEASE) is None, "workers skip cancelled tasks"
    with session_scope(fresh_db_url) as s:
        assert s.get(Experiment, experiment_id).status == TaskStatus.CANCELLED
    assert submit.cancel_experiment(fresh_db_url, experiment_id) == 0

    assert submit.resume_experiment(fresh_db_url, experiment_id) == 3
    with session_scope(fresh_db_url) as s:
        assert s.get(Experiment, experiment_id).status == TaskStatus.QUEUED
        rows = s.execute(sa.select(Task.status, Task.enqueued_at).where(Task.id.in_(ids[1:]))).all()
    assert rows == [(TaskStatus.QUEUED, None)] * 3
    assert submit.enqueue_or_hand_off(fresh_db_url, app, experiment_id) == ("here", 3)
    assert _sent(queue) == ids[1:]
    with pytest.raises(submit.UnknownExperiment):
        submit.cancel_experiment(fresh_db_url, 999_999)


def test_enqueueing_is_handed_to_a_live_scheduler(fresh_db_url, tmp_path, queue, app):
    experiment_id, _ = _experiment(fresh_db_url, tmp_path, queue, samples=3)
    liveness.mark_alive(app)
    assert submit.enqueue_or_hand_off(fresh_db_url, app, experiment_id) == ("scheduler", 0)
    assert _sent(queue) == []
    raw = redis.Redis.from_url(BROKER).lrange(SCHEDULER_QUEUE, 0, -1)
    assert [json.loads(m)["headers"]["task"] for m in raw] == [ENQUEUE_TASK]


def test_cancel_and_resume_commands(fresh_db_url, tmp_path, queue, app):
    experiment_id, _ = _experiment(fresh_db_url, tmp_path, queue, samples=2)
    env = {"GREENCTL_DATABASE_URL": fresh_db_url, "GREENCTL_BROKER_URL": BROKER,
           "GREENCTL_STATE_DIR": str(tmp_path / "state")}
    runner = CliRunner()
    result = runner.invoke(main, ["cancel", str(experiment_id)], env=env)
    assert result.exit_code == 0 and "cancelled 2 tasks" in result.output
    result = runner.invoke(main, ["cancel", str(experiment_id)], env=env)
    assert result.exit_code == 1 and "nothing to cancel" in result.output
    result = runner.invoke(main, ["resume", str(experiment_id)], env=env)
    assert result.exit_code == 0 and "resumed 2 tasks" in result.output, result.output
    result = runner.invoke(main, ["resume", "424242"], env=env)
    assert result.exit_code == 2 and "no experiment with id 424242" in result.output
