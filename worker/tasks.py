"""The inference task: one classification, its cost, one result row.

Read `infer` as a checklist; each step is a named function. Arguments are
JSON (a task id) and are validated here too, not only by the scheduler.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy.exc import DBAPIError

from shared.celery_app import ADVANCE_TASK, ESTIMATOR_QUEUE, INFER_TASK, REFIT_TASK, SCHEDULER_QUEUE, app
from worker import expect, runtime, store, thermal
from shared.accounting import Accounted, account, at_the_wall
from worker.energy import Measurement, grid_intensity_kg_per_kwh
from worker.engines import EngineError, Generation, InferenceRequest
from shared.prompts import build_messages, display_label, parse_label

log = logging.getLogger("greenctl.worker")

DB_DOWN = store.DB_DOWN
ENGINE_RETRIES = 3
DB_RETRY_MAX_S = 60
MAX_TASK_ID = 2**31 - 1   # task.id is a Postgres integer


def validate_task_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TASK_ID:
        raise ValueError(f"task id must be a positive integer, got {value!r}")
    return value


def build_request(job: store.Job) -> InferenceRequest:
    prompt = job.spec["prompt"]
    labels = job.spec["dataset"]["labels"]
    examples = [tuple(e) for e in job.spec.get("few_shot_examples", [])]
    params = job.params
    return InferenceRequest(
        messages=build_messages(prompt["template"], job.text, labels, examples),
        max_tokens=params["max_tokens"], temperature=params["temperature"],
        top_p=params["top_p"], top_k=params["top_k"], seed=params["seed"],
        choices=(tuple(display_label(x) for x in labels)
                 if prompt.get("output", "label") == "label" else None),
    )


def carbon_of(rt: runtime.WorkerRuntime, job: store.Job) -> tuple[float, float]:
    """(PUE, kg CO2e per kWh) of the job's experiment, looked up once per experiment."""
    carbon = job.spec.get("carbon", {})
    if job.experiment_id not in rt.intensity_by_experiment:
        rt.intensity_by_experiment[job.experiment_id] = grid_intensity_kg_per_kwh(
            carbon.get("country_iso_code", "CAN"), carbon.get("carbon_intensity_g_per_kwh"))
    return float(carbon.get("pue", 1.0)), rt.intensity_by_experiment[job.experiment_id]


def load_model(rt: runtime.WorkerRuntime, job: store.Job):
    if job.engine not in rt.options.engines:
        raise EngineError(f"this worker ({rt.name}) runs engines {list(rt.options.engines)}, "
                          f"not {job.engine!r}: pin the model to a queue whose worker has it",
                          retryable=False)
    engine = rt.engine(job.engine)
    info = engine.load(job.model, job.variant)
    if job.variant_id not in rt.seen_variants:
        store.record_model_info(rt.database_url, job.variant_id, dict(vars(info)))
        rt.seen_variants.add(job.variant_id)
    return engine


def measure(rt: runtime.WorkerRuntime, job: store.Job, engine, request: InferenceRequest
            ) -> tuple[Generation, Measurement, str | None]:
    """The generation, its energy window and, when the window was paused (SIGSTOP, the
    machine asleep), why its time and energy are not the inference's (else None)."""
    window = f"task-{job.task_id}"
    rt.pause_watch.begin()
    rt.meter.begin(window)
    try:
        generation = engine.generate(request)
    finally:
        measurement = rt.meter.end(window)
        paused = rt.pause_watch.end()
    if paused:
        log.warning("task %s: result marked invalid: %s", job.task_id, paused)
    return generation, measurement, paused


def account_for(rt: runtime.WorkerRuntime, job: store.Job, m: Measurement) -> Accounted:
    """The experiment's PUE and grid, and this machine's idle power, applied to one measurement."""
    pue, intensity = carbon_of(rt, job)
    return account(m.cpu_kwh, m.ram_kwh, m.gpu_kwh, m.duration_s, pue=pue,
                   intensity_kg_per_kwh=intensity, idle_watts=rt.idle_watts)


def result_row(rt: runtime.WorkerRuntime, job: store.Job, request: InferenceRequest,
               gen: Generation, measured: Measurement, paused: str | None = None) -> dict:
    labels = job.spec["dataset"]["labels"]
    prediction = parse_label(gen.text, labels)
    energy = account_for(rt, job, measured)
    return dict(
        task_id=job.task_id, experiment_id=job.experiment_id, variant_id=job.variant_id,
        worker=rt.name, hardware_profile=rt.hardware.profile,
        prediction=prediction, parse_ok=prediction is not None, raw_output=gen.text[:4000],
        prompt_tokens=gen.prompt_tokens, prompt_tokens_uncached=gen.prompt_tokens_uncached,
        output_tokens=gen.output_tokens, load_s=gen.load_s, prompt_s=gen.prompt_s,
        decode_s=gen.decode_s, e2e_s=gen.e2e_s, threads=rt.options.threads,
        energy_cpu_kwh=energy.cpu_kwh, energy_ram_kwh=energy.ram_kwh, energy_gpu_kwh=energy.gpu_kwh,
        energy_kwh=energy.energy_kwh, co2_kg=energy.co2_kg, energy_method=measured.method,
        idle_energy_kwh=energy.idle_energy_kwh,
        energy_detail=measured.detail, energy_measured_kwh=at_the_wall(measured.measured_kwh, energy.pue),
        window_started_at=datetime.fromtimestamp(measured.started_at, timezone.utc), window_s=measured.duration_s,
        carbon_intensity_kg_per_kwh=energy.carbon_intensity_kg_per_kwh,
        pue=energy.pue, valid=paused is None, invalid_reason=paused,
        cpu_freq_mhz=thermal.cpu_freq_mhz(), temperature_c=thermal.temperature_c(),
    )


def on_experiment_finished(rt: runtime.WorkerRuntime) -> None:
    """Let the estimator refit for this hardware profile (it decides if enough is new)."""
    app.send_task(REFIT_TASK, args=[rt.hardware.profile], kwargs={"force": True},
                  queue=ESTIMATOR_QUEUE)


def run_job(task, rt: runtime.WorkerRuntime, job: store.Job) -> tuple[bool, str]:
    """Infer, measure and store one claimed task: (experiment finished?, outcome)."""
    def failed(reason: str) -> tuple[bool, str]:
        return store.fail(rt.database_url, job.task_id, job.experiment_id, reason,
                          worker=rt.name, attempt=job.attempt), "failed"

    if not job.text.strip():
        return failed("empty text: nothing to classify (fix or drop that row of the dataset)")
    try:
        request = build_request(job)
        engine = load_model(rt, job)
        # The estimate this inference is expected to cost, recorded before it runs (worker.expect).
        estimate = expect.expected(rt.database_url, rt.hardware.profile, job.variant_id, request,
                                   rt.options.threads, carbon_of(rt, job)[0])
        generation, energy, paused = measure(rt, job, engine, request)
    except EngineError as exc:
        if exc.retryable and task.request.retries < ENGINE_RETRIES:
            store.release(rt.database_url, job.task_id, str(exc), worker=rt.name, attempt=job.attempt)
            raise task.retry(countdown=2 ** task.request.retries * 5, exc=exc)
        return failed(str(exc))
    except DB_DOWN:
        raise
    except Exception as exc:  # a bug must fail one task visibly, not hang the experiment
        log.exception("task %s failed", job.task_id)
        return failed(f"worker error ({type(exc).__name__}): {exc}")
    try:
        return store.with_db_retry(store.write_result, rt.database_url,
                                   {**result_row(rt, job, request, generation, energy, paused), **estimate},
                                   (job.spec.get("sustain") or {}).get("minutes"), job.attempt), "done"
    except store.StaleAttempt as stale:
        # Issue 16: paused past its lease (SIGSTOP, a laptop asleep), another worker took over.
        log.warning("task %s: result dropped, not counted: %s", job.task_id, stale)
        return False, "stale"
    except DB_DOWN:
        raise
    except DBAPIError as exc:   # e.g. permission denied: retrying cannot help
        log.exception("task %s: result could not be stored", job.task_id)
        return failed(f"the result could not be stored: {str(exc).splitlines()[0]}")


@app.task(name=INFER_TASK, bind=True, acks_late=True, max_retries=None)
def infer(self, task_id: int) -> str:
    task_id = validate_task_id(task_id)
    rt = runtime.current()
    # In hand from now, the claim included: a Ctrl-C during the claim waits for this task too. (The
    # heartbeat extends only a lease this worker holds, so naming it before the claim is harmless.)
    rt.current_task = task_id
    try:
        try:
            job = store.claim(rt.database_url, task_id, rt.name, rt.options.lease_seconds,
                              rt.known_variants)
        except store.LeaseHeld as held:
            # Maybe its worker died just now: look again once the lease has run out.
            raise self.retry(countdown=held.seconds_left + 1, exc=held)
        if job is None:   # say which: a cancelled task is not a finished one
            return f"skipped: task {task_id} is {store.task_status(rt.database_url, task_id) or 'not in the database'}"
        experiment_finished, outcome = run_job(self, rt, job)
        if outcome == "stale":   # another attempt holds the task: its worker does what follows
            return f"stale: task {task_id}'s result of attempt {job.attempt} dropped"
        if experiment_finished:
            on_experiment_finished(rt)
        if job.spec.get("sustain"):   # a sustained run's next pass (store.write_result wrote it)
            for next_id, queue in store.take_unsent(rt.database_url, job.experiment_id):
                app.send_task(INFER_TASK, args=[next_id], queue=queue)
        if job.spec.get("stop") and store.round_over(rt.database_url, job.experiment_id):
            app.send_task(ADVANCE_TASK, args=[job.experiment_id], queue=SCHEDULER_QUEUE)
        return outcome
    except DB_DOWN as exc:
        # Postgres is away: keep the message and try again later, never drop a measurement.
        log.warning("database unavailable for task %s, retrying: %s", task_id, str(exc).splitlines()[0])
        raise self.retry(countdown=min(DB_RETRY_MAX_S, 2 ** min(self.request.retries, 6)), exc=exc)
    finally:
        rt.current_task = None
