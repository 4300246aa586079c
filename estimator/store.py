"""Fits in Postgres (table estimator_fit) and the measurements they learn from.

Every function takes the database URL; sessions come from shared.db. A fit is
versioned per (hardware_profile, target): saving picks the next version, and
the newest row with is_good is the one in use.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import select

from shared.accounting import it_energy
from shared.db import session_scope
from shared.models import EstimatorFit, Result, Variant, WorkerNode

_SAVE_ATTEMPTS = 3


def save_fit(url: str, *, hardware_profile: str, target: str, kind: str, model: dict,
             features: list, n_train: int, n_test: int = 0, metrics: dict | None = None,
             is_good: bool = True, source: str = "") -> dict:
    """Insert a fit as the next version for (hardware_profile, target); returns the stored row as a dict."""
    for attempt in range(_SAVE_ATTEMPTS):
        try:
            with session_scope(url) as session:
                current = session.exec(
                    select(sa.func.max(EstimatorFit.version))
                    .where(EstimatorFit.hardware_profile == hardware_profile, EstimatorFit.target == target)
                ).one()
                row = EstimatorFit(hardware_profile=hardware_profile, target=target,
                                   version=(current or 0) + 1, kind=kind, n_train=n_train, n_test=n_test,
                                   features=list(features), model=model, metrics=metrics or {},
                                   is_good=is_good, source=source)
                session.add(row)
                session.flush()
                return _as_dict(row)
        except sa.exc.IntegrityError:
            # Two refits raced for the same version number; the loser takes the next one.
            if attempt == _SAVE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def latest_fit(url: str, hardware_profile: str, target: str, good_only: bool = True) -> dict | None:
    """The newest good fit (any fit with good_only=False) for (hardware_profile, target), or None."""
    with session_scope(url) as session:
        query = select(EstimatorFit).where(EstimatorFit.hardware_profile == hardware_profile,
                                           EstimatorFit.target == target)
        if good_only:
            query = query.where(EstimatorFit.is_good == sa.true())
        row = session.exec(query.order_by(EstimatorFit.version.desc()).limit(1)).first()
        return _as_dict(row) if row else None


def list_fits(url: str, hardware_profile: str | None = None) -> list[dict]:
    """All fits, newest first per profile and target."""
    with session_scope(url) as session:
        query = select(EstimatorFit).order_by(EstimatorFit.hardware_profile, EstimatorFit.target,
                                              EstimatorFit.version.desc())
        if hardware_profile:
            query = query.where(EstimatorFit.hardware_profile == hardware_profile)
        return [_as_dict(r) for r in session.exec(query).all()]


def measurements(url: str, hardware_profile: str, after_result_id: int = 0) -> pd.DataFrame:
    """Measured results of one hardware profile with the inputs of estimator.local.

    Parameter count and bits per weight come from variant.model_info, which the
    worker fills when it loads the model; rows whose variant lacks them are
    returned with NaN there (estimator.local drops them). energy_kwh is the
    machine's energy, PUE removed.
    """
    with session_scope(url) as session:
        rows = session.exec(
            select(Result.id, Result.prompt_tokens, Result.prompt_tokens_uncached, Result.output_tokens, Result.threads,
                   Result.e2e_s, Result.energy_kwh, Result.pue, Result.energy_method, Variant.model_info)
            .join(Variant, Variant.id == Result.variant_id)
            .where(Result.hardware_profile == hardware_profile, Result.id > after_result_id)
            .order_by(Result.id)
        ).all()
    frame = pd.DataFrame(rows, columns=["result_id", "prompt_tokens", "prompt_tokens_uncached", "output_tokens", "threads",
                                        "e2e_s", "energy_kwh", "pue", "energy_method", "model_info"])
    # Results store energy at the wall (x the experiment's PUE); fits learn the machine's own.
    # Rows store energy at the wall; a fit learns the machine's own (IT) energy.
    frame["energy_kwh"] = [it_energy(e, p) for e, p in zip(frame["energy_kwh"], frame["pue"])]
    info = frame.pop("model_info").apply(lambda d: d or {})
    frame["params"] = pd.to_numeric(info.apply(lambda d: d.get("parameter_count")), errors="coerce")
    frame["bits"] = pd.to_numeric(info.apply(lambda d: d.get("bits_per_weight")), errors="coerce")
    frame["threads"] = pd.to_numeric(frame["threads"], errors="coerce")
    if frame["threads"].isna().any():
        frame["threads"] = frame["threads"].fillna(_profile_threads(url, hardware_profile))
    return frame


def _profile_threads(url: str, hardware_profile: str) -> float:
    """Threads a worker of this profile runs with (older results may lack them); NaN if unknown."""
    with session_scope(url) as session:
        nodes = session.exec(select(WorkerNode.threads, WorkerNode.cores)
                             .where(WorkerNode.hardware_profile == hardware_profile)).all()
    known = [t or c for t, c in nodes if t or c]
    return float(max(known)) if known else float("nan")


def _as_dict(row: EstimatorFit) -> dict:
    return row.model_dump(mode="json")


def model_info(url: str, model: str, variant: str) -> dict:
    """What a worker recorded when it last loaded (model, variant): parameter_count and
    effective bits_per_weight (file bytes x 8 / parameters), among others; {} if never."""
    with session_scope(url) as session:
        info = session.exec(
            select(Variant.model_info)
            .where(Variant.model == model, Variant.variant == variant, Variant.model_info.is_not(None))
            .order_by(Variant.id.desc()).limit(1)
        ).first()
    return dict(info or {})


def graded_rows(url: str, experiment_id: int | None = None) -> pd.DataFrame:
    """Results that carry a pre-inference estimate, with the interval factors of the fits
    that made it: result_id, experiment_id, variant_id, hardware_profile, e2e_s, energy_kwh,
    estimate_*, latency/energy fit ids and their low/high factors. Valid rows only."""
    lat, en = aliased(EstimatorFit), aliased(EstimatorFit)
    with session_scope(url) as session:
        query = (select(Result.id, Result.experiment_id, Result.variant_id, Result.hardware_profile,
                        Result.e2e_s, Result.energy_kwh, Result.estimate_e2e_s, Result.estimate_energy_kwh,
                        Result.estimate_fit_id, Result.estimate_energy_fit_id, lat.model, en.model)
                 .join(lat, lat.id == Result.estimate_fit_id)
                 .outerjoin(en, en.id == Result.estimate_energy_fit_id)
                 .where(Result.valid == sa.true()))
        if experiment_id is not None:
            query = query.where(Result.experiment_id == experiment_id)
        rows = session.exec(query.order_by(Result.id)).all()
    frame = pd.DataFrame(rows, columns=["result_id", "experiment_id", "variant_id", "hardware_profile", "e2e_s",
                                        "energy_kwh", "estimate_e2e_s", "estimate_energy_kwh", "fit_id",
                                        "energy_fit_id", "fit", "energy_fit"])
    for prefix, col in (("", "fit"), ("energy_", "energy_fit")):
        iv = frame.pop(col).apply(lambda m: (m or {}).get("interval", {}))
        frame[f"{prefix}low_factor"] = iv.apply(lambda d: d.get("low_factor", np.nan))
        frame[f"{prefix}high_factor"] = iv.apply(lambda d: d.get("high_factor", np.nan))
    return frame


def live_accuracy(url: str) -> dict[int, dict]:
    """fit id -> grading (estimator.grading.grade) on the rows that fit estimated before they
    ran: rows it was never trained on (they came after it)."""
    from estimator.grading import grade

    rows = graded_rows(url)
    out: dict[int, dict] = {}
    for fit_id, group in rows.groupby("fit_id"):
        out[int(fit_id)] = grade(group["estimate_e2e_s"], group["e2e_s"], group["low_factor"], group["high_factor"])
    energy = rows.dropna(subset=["energy_fit_id"])
    for fit_id, group in energy.groupby("energy_fit_id"):
        out[int(fit_id)] = grade(group["estimate_energy_kwh"], group["energy_kwh"], group["energy_low_factor"],
                                 group["energy_high_factor"])
    return out
