"""Refit the local estimator of a hardware profile from its measured results.

`refit` is a plain function (testable without a broker); `refit_task` is the
Celery task "greenctl.estimator.refit" with args [hardware_profile], sent when
results land. It fits only when GREENCTL_REFIT_EVERY (default 50) usable new
results arrived since the last fit of that profile, so sending it after every
result is cheap.
"""
from __future__ import annotations

import logging

from estimator import local, store
from shared.celery_app import REFIT_TASK, app, database_url, process_settings

log = logging.getLogger(__name__)


def refit_every() -> int:
    """New results that trigger a refit: the process's settings (GREENCTL_REFIT_EVERY)."""
    return process_settings().refit_every


def refit(hardware_profile: str, database_url: str, *, every: int | None = None, force: bool = False) -> dict:
    """Fit latency and energy of `hardware_profile` from its results and store them.

    Skips (status "waiting") unless `every` usable results are newer than the
    last fit, or force is true. A target with fewer than local.MIN_ROWS usable
    rows is reported as "not enough rows". Returns a JSON-able summary.
    """
    every = refit_every() if every is None else every
    last = store.latest_fit(database_url, hardware_profile, "latency_s", good_only=False)
    seen_through = int((last or {}).get("model", {}).get("max_result_id", 0))
    rows = store.measurements(database_url, hardware_profile)
    new_rows = int((local.usable(rows, "latency_s")["result_id"] > seen_through).sum()) if len(rows) else 0
    summary = {"hardware_profile": hardware_profile, "rows": int(len(rows)), "new_rows": new_rows,
               "every": every, "fits": {}}
    if not force and new_rows < every:
        return {**summary, "status": "waiting"}
    for target in local.TARGETS:
        try:
            fit_json = local.fit(rows, target)
        except local.NotEnoughRows as exc:
            summary["fits"][target] = {"status": "not enough rows", "detail": str(exc)}
            continue
        fit_json["max_result_id"] = int(rows["result_id"].max())
        fit_json["energy_methods"] = sorted(set(rows["energy_method"].dropna()))
        saved = store.save_fit(database_url, hardware_profile=hardware_profile, target=target,
                               kind=fit_json["kind"], model=fit_json, features=fit_json["features"],
                               n_train=fit_json["n_train"], n_test=fit_json["n_test"],
                               metrics=fit_json["metrics"], is_good=local.is_good(fit_json),
                               source="measurements")
        summary["fits"][target] = {"status": "stored", "version": saved["version"],
                                   "is_good": saved["is_good"], "metrics": saved["metrics"]}
        log.info("estimator refit %s/%s v%s: held-out MAPE %.3f", hardware_profile, target,
                 saved["version"], fit_json["metrics"]["mape"])
    stored = any(f["status"] == "stored" for f in summary["fits"].values())
    return {**summary, "status": "fitted" if stored else "not enough rows"}


@app.task(name=REFIT_TASK, ignore_result=True)
def refit_task(hardware_profile: str, force: bool = False) -> dict:
    """Celery entry point: args [hardware_profile] (force=True at an experiment's end fits
    whatever arrived, still needing local.MIN_ROWS); the database comes from the worker's settings."""
    return refit(hardware_profile, database_url(), force=force)
