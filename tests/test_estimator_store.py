"""Fits in a real Postgres: versioning, latest good fit, refit from measured results."""
from __future__ import annotations

import numpy as np
import pytest

from estimator import local, store
from estimator.tasks import refit
from shared.db import session_scope
from shared.models import Experiment, Result, Task, Variant


def _save(url, profile="cpu-test", target="latency_s", **kw):
    args = dict(hardware_profile=profile, target=target, kind="local-nnls", model={"coef": [1.0]},
                features=["one"], n_train=40, n_test=10, metrics={"mape": 0.1}, source="measurements")
    return store.save_fit(url, **{**args, **kw})


def test_versions_count_up_per_profile_and_target(fresh_db_url):
    assert [_save(fresh_db_url)["version"] for _ in range(3)] == [1, 2, 3]
    assert _save(fresh_db_url, target="energy_kwh")["version"] == 1
    assert _save(fresh_db_url, profile="other")["version"] == 1
    assert len(store.list_fits(fresh_db_url)) == 5
    assert len(store.list_fits(fresh_db_url, "cpu-test")) == 4


def test_latest_fit_is_the_newest_good_one(fresh_db_url):
    assert store.latest_fit(fresh_db_url, "cpu-test", "latency_s") is None
    _save(fresh_db_url, model={"coef": [1.0]})
    _save(fresh_db_url, model={"coef": [2.0]})
    _save(fresh_db_url, model={"coef": [3.0]}, is_good=False)
    latest = store.latest_fit(fresh_db_url, "cpu-test", "latency_s")
    assert latest["version"] == 2 and latest["model"] == {"coef": [2.0]}
    assert store.latest_fit(fresh_db_url, "cpu-test", "latency_s", good_only=False)["version"] == 3


def add_results(url: str, profile: str, n: int, *, seed: int = 0, model_info: dict | None = ...) -> None:
    """n measured results on `profile` following a known CPU law (plus 3 % noise)."""
    rng = np.random.default_rng(seed)
    info = {"parameter_count": 134_515_008, "bits_per_weight": 4.5} if model_info is ... else model_info
    with session_scope(url) as s:
        exp = Experiment(name="estimator-test", spec={})
        s.add(exp)
        s.flush()
        variants = []
        for i, bits in enumerate((4.5, 8.5)):
            v = Variant(experiment_id=exp.id, model="smollm2:135m-instruct", engine="embedded",
                        variant=f"v{i}", queue="default",
                        model_info=None if info is None else {**info, "bits_per_weight": bits})
            s.add(v)
            variants.append(v)
        s.flush()
        for i in range(n):
            v = variants[i % 2]
            task = Task(experiment_id=exp.id, variant_id=v.id, sample_index=i, text="t", label="neutral")
            s.add(task)
            s.flush()
            bits = (v.model_info or {}).get("bits_per_weight", 4.5)
            p, o, threads = int(rng.integers(30, 300)), int(rng.integers(1, 8)), int(rng.choice([1, 2]))
            e2e = (0.02 + 0.003 * o + 2.0 * 134.5e6 * p / threads / 1e12
                   + 40.0 * 134.5e6 * bits / 8 * o / 1e12) * rng.normal(1, 0.03)
            s.add(Result(task_id=task.id, experiment_id=exp.id, variant_id=v.id, worker="w1",
                         hardware_profile=profile, prompt_tokens=p, prompt_tokens_uncached=p,
                         output_tokens=o, threads=threads, e2e_s=e2e, energy_kwh=e2e * 15 * 1.2 / 3.6e6,
                         pue=1.2, energy_method="estimated"))


def test_measurements_join_variant_model_info_and_remove_pue(fresh_db_url):
    add_results(fresh_db_url, "cpu-a", 6)
    add_results(fresh_db_url, "cpu-b", 4, model_info=None)
    rows = store.measurements(fresh_db_url, "cpu-a")
    assert len(rows) == 6 and set(rows["bits"]) == {4.5, 8.5} and (rows["params"] == 134_515_008).all()
    np.testing.assert_allclose(rows["energy_kwh"], rows["e2e_s"] * 15 / 3.6e6)
    unknown = store.measurements(fresh_db_url, "cpu-b")
    assert unknown["params"].isna().all() and local.usable(unknown, "latency_s").empty


def test_refit_waits_for_enough_new_rows_then_stores_both_targets(fresh_db_url):
    add_results(fresh_db_url, "cpu-x", 30)
    assert refit("cpu-x", fresh_db_url, every=50)["status"] == "waiting"
    add_results(fresh_db_url, "cpu-x", 30, seed=1)
    summary = refit("cpu-x", fresh_db_url, every=50)
    assert summary["status"] == "fitted" and summary["new_rows"] == 60
    for target in ("latency_s", "energy_kwh"):
        info = summary["fits"][target]
        assert info["status"] == "stored" and info["version"] == 1 and info["metrics"]["mape"] < 0.1
        stored = store.latest_fit(fresh_db_url, "cpu-x", target)
        assert stored["source"] == "measurements" and stored["n_train"] + stored["n_test"] == 60
        assert stored["model"]["max_result_id"] > 0
    # nothing new since the fit: wait again
    assert refit("cpu-x", fresh_db_url, every=50)["status"] == "waiting"


def test_forced_refit_below_the_minimum_says_so(fresh_db_url):
    add_results(fresh_db_url, "cpu-y", local.MIN_ROWS - 5)
    summary = refit("cpu-y", fresh_db_url, force=True)
    assert summary["status"] == "not enough rows"
    assert "need at least" in summary["fits"]["latency_s"]["detail"]
    assert store.list_fits(fresh_db_url, "cpu-y") == []


def test_refit_every_comes_from_the_environment(fresh_db_url):
    from shared.celery_app import configure
    from shared.config import Settings

    # What a worker started with GREENCTL_REFIT_EVERY=25 is configured with.
    configure("redis://127.0.0.1:1/0", fresh_db_url, Settings.from_env({"GREENCTL_REFIT_EVERY": "25"}))
    add_results(fresh_db_url, "cpu-z", 26)
    assert refit("cpu-z", fresh_db_url)["status"] == "fitted"


@pytest.mark.parametrize("task_name", ["greenctl.estimator.refit"])
def test_celery_task_is_registered_under_its_name(task_name):
    from shared.celery_app import app

    import estimator.tasks  # noqa: F401  registers the task

    assert task_name in app.tasks


def test_celery_task_refits_from_the_workers_database(fresh_db_url, monkeypatch):
    from estimator.tasks import refit_task

    from shared.celery_app import configure
    from shared.config import Settings

    configure("redis://127.0.0.1:1/0", fresh_db_url, Settings.from_env({}))   # as `greenctl worker` does
    add_results(fresh_db_url, "cpu-task", local.MIN_ROWS + 5)
    # apply() runs the registered task in this process, through Celery's own call path.
    assert refit_task.apply(args=["cpu-task"]).get()["status"] == "waiting"
    assert refit_task.apply(args=["cpu-task"], kwargs={"force": True}).get()["status"] == "fitted"


def test_missing_threads_come_from_the_profiles_worker(fresh_db_url):
    import sqlalchemy as sa

    from shared.models import WorkerNode

    add_results(fresh_db_url, "cpu-t", 4)
    with session_scope(fresh_db_url) as s:
        s.execute(sa.update(Result).values(threads=None))
        s.add(WorkerNode(hostname="h", queue="default", hardware_profile="cpu-t", cores=8, threads=2))
    assert set(store.measurements(fresh_db_url, "cpu-t")["threads"]) == {2.0}
