"""The SQLModel schema: Postgres is the source of truth for every experiment.

Data flows one way: experiment -> variant -> task -> result; estimator_fit is
derived from results. Changing a table means a new Alembic migration
(shared/migrations/versions).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from shared.status import ExperimentStatus, TaskStatus

__all__ = ["Experiment", "Variant", "Task", "Result", "WorkerNode", "EstimatorFit",
           "TaskStatus", "ExperimentStatus", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _json(nullable: bool = False) -> Any:
    # none_as_null: a missing value is SQL NULL (not JSON null), so `IS NULL` finds it.
    return Field(default=None if nullable else {},
                 sa_column=sa.Column(sa.JSON(none_as_null=nullable), nullable=nullable))


def _ts(nullable: bool = True) -> Any:
    return Field(default=None if nullable else utcnow(),
                 sa_column=sa.Column(sa.DateTime(timezone=True), nullable=nullable))


class Experiment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    spec: dict = _json()
    status: str = Field(default=ExperimentStatus.QUEUED)
    n_tasks: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    finished_at: datetime | None = _ts()
    # A stop-when-decided experiment's record (scheduler.rounds): looks, samples it took,
    # method, energy saved (estimate); None without `stop:` in the spec.
    stop_outcome: dict | None = _json(nullable=True)


class Variant(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    model: str
    engine: str
    variant: str
    is_baseline: bool = False
    queue: str
    params: dict = _json()
    # Filled by the worker that loads it: file, sha256, bits per weight, parameter count.
    model_info: dict | None = _json(nullable=True)


class Task(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("experiment_id", "sample_index", "variant_id", "repeat",
                            name="uq_task_sample_variant_repeat"),
        sa.Index("ix_task_experiment_status", "experiment_id", "status"),
        # The reconcile job's scans: only unfinished tasks, a small slice of a big table.
        sa.Index("ix_task_open_enqueued", "enqueued_at",
                 postgresql_where=sa.text("status = 'queued'")),
        sa.Index("ix_task_open_lease", "lease_until",
                 postgresql_where=sa.text("status = 'running'")),
    )
    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id")
    variant_id: int = Field(foreign_key="variant.id", index=True)
    sample_index: int
    repeat: int = 0
    round: int | None = None        # stop-when-decided round (0 first); None without `stop:`
    text: str
    label: str
    status: str = Field(default=TaskStatus.QUEUED)
    attempts: int = 0
    worker: str | None = None
    lease_until: datetime | None = _ts()
    error: str | None = None
    enqueued_at: datetime | None = _ts()
    updated_at: datetime | None = _ts()


class Result(SQLModel, table=True):
    """One measured inference. Written once per task: task_id is unique."""
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", unique=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    variant_id: int = Field(foreign_key="variant.id", index=True)
    worker: str
    hardware_profile: str = ""
    prediction: str | None = None
    parse_ok: bool = True
    raw_output: str = ""
    prompt_tokens: int = 0
    prompt_tokens_uncached: int = 0
    output_tokens: int = 0
    load_s: float = 0.0
    prompt_s: float = 0.0
    decode_s: float = 0.0
    e2e_s: float = 0.0
    threads: int | None = None
    energy_cpu_kwh: float = 0.0
    energy_ram_kwh: float = 0.0
    energy_gpu_kwh: float = 0.0
    energy_kwh: float = 0.0
    # The worker's idle power over this task's duration (from `greenctl worker --calibrate`),
    # so reports can show net energy above idle next to gross; None when never calibrated.
    idle_energy_kwh: float | None = None
    co2_kg: float = 0.0
    # How the energy was obtained: rapl | nvml | powermetrics | estimated | forced.
    energy_method: str
    energy_detail: str = ""          # per component, e.g. "cpu=rapl ram=estimated gpu=none"
    # The part of energy_kwh (at the wall, kWh) read from a power counter; the rest is an
    # estimate or forced. None for rows written before it was recorded.
    energy_measured_kwh: float | None = None
    # The measured window: when it opened and how long it lasted (s).
    window_started_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    window_s: float | None = None
    # The estimate the worker expected before the inference (shared.predict): the fits it
    # used (estimator_fit ids), e2e seconds and kWh at the wall. None: no good fit yet.
    estimate_fit_id: int | None = Field(default=None, foreign_key="estimator_fit.id")
    estimate_energy_fit_id: int | None = Field(default=None, foreign_key="estimator_fit.id")
    estimate_e2e_s: float | None = None
    estimate_energy_kwh: float | None = None
    carbon_intensity_kg_per_kwh: float = 0.0
    pue: float = 1.0
    # The CPU clock (MHz, psutil.cpu_freq) and the hottest temperature sensor (deg C,
    # psutil.sensors_temperatures) when the inference ended; None where not readable.
    cpu_freq_mhz: float | None = None
    temperature_c: float | None = None
    # False when the measurement window was disturbed (the worker was paused or the machine
    # slept): its time and energy are not the inference's. Reports leave it out of cost
    # figures and count it (n_invalid); its prediction still counts for quality.
    valid: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    invalid_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class WorkerNode(SQLModel, table=True):
    __tablename__ = "worker_node"
    __table_args__ = (sa.UniqueConstraint("hostname", "queue", name="uq_worker_host_queue"),)
    id: int | None = Field(default=None, primary_key=True)
    hostname: str
    queue: str
    cpu_model: str = ""
    cores: int = 0
    ram_gb: float = 0.0
    gpu: str = ""
    os: str = ""
    energy_method: str = ""
    hardware_profile: str = ""
    engines: list = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    models: list = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    threads: int | None = None
    idle_watts: float | None = None
    started_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    last_heartbeat: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class EstimatorFit(SQLModel, table=True):
    """One fitted R-ICE-style regressor, versioned per hardware profile and target.

    `model` holds the fitted regressor as plain JSON (coefficients, scalers, tree
    dumps: never pickle). The newest row with `is_good` true is the one in use.
    """
    __tablename__ = "estimator_fit"
    __table_args__ = (sa.UniqueConstraint("hardware_profile", "target", "version",
                                          name="uq_fit_profile_target_version"),)
    id: int | None = Field(default=None, primary_key=True)
    hardware_profile: str = Field(index=True)
    target: str                      # e.g. "latency_s", "energy_kwh"
    version: int
    kind: str                        # regressor family, e.g. "ridge-log"
    n_train: int
    n_test: int = 0
    features: list = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    model: dict = _json()
    metrics: dict = _json()          # held-out metrics: {"mape": ..., "r2": ..., "mse": ...}
    is_good: bool = True
    source: str = ""                 # "helm-a100" | "measurements"
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
