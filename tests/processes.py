"""Real processes for end-to-end tests: `greenctl` commands and worker subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "greenctl" / "data" / "financial_sentiment.csv"
MODEL = "smollm2:135m-instruct"


def write_spec(path: Path, models: list[dict], sample: int = 4, queue: str = "default",
               **overrides) -> Path:
    spec = {
        "name": path.stem,
        "dataset": {"path": str(DATASET), "labels": ["positive", "negative", "neutral"],
                    "sample": sample, "stratify": True, "seed": 7},
        "prompt": {"template": "label-only", "few_shot": 0},
        "models": models,
        "carbon": {"country_iso_code": "CAN", "pue": 1.2},
        "placement": {"queue": queue},
    } | overrides
    path.write_text(yaml.safe_dump(spec))
    return path


def greenctl(args: list[str], env: dict, timeout: float = 300, check: bool = True
             ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "greenctl", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"greenctl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def greenctl_json(args: list[str], env: dict, timeout: float = 300):
    return json.loads(greenctl(args, env, timeout).stdout)


def registered(env: dict, queue: str) -> bool:
    out = greenctl(["workers", "--json"], env, check=False)
    return out.returncode == 0 and any(w["queue"] == queue and w["online"] for w in json.loads(out.stdout)["workers"])


@contextmanager
def worker(env: dict, queue: str, log: Path, *extra: str, ready_timeout: float = 90):
    """A `greenctl worker` subprocess, stopped (warm, then hard) when the block ends."""
    with service([sys.executable, "-m", "greenctl", "worker", "--queue", queue, *extra], env, log,
                 f"worker on {queue}", ready_timeout) as proc:
        yield proc


@contextmanager
def service(argv: list[str], env: dict, log: Path, what: str, ready_timeout: float = 90):
    """A Celery service subprocess (worker, scheduler), yielded once its log says "ready.",
    stopped (SIGTERM to its group, then SIGKILL after 30 s) when the block ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def measure_lock() -> Path:
    """This pytest process's own measuring lock, the default of every env base_env makes.
    With the host-wide one (/tmp/greenctl-measure.lock), a worker another pytest-xdist worker
    SIGSTOPs mid-inference (test_hardening, test_multihost) would hold every other test's
    inferences for tens of seconds. Tests on one pytest worker still take turns through it."""
    return Path(tempfile.gettempdir()) / f"greenctl-measure-pytest-{os.getpid()}.lock"


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENCTL_")}
    if "GREENCTL_CACHE_DIR" in os.environ:
        env["GREENCTL_CACHE_DIR"] = os.environ["GREENCTL_CACHE_DIR"]
    env["GREENCTL_MEASURE_LOCK"] = str(measure_lock())     # a caller's own (in `extra`) wins
    return env | extra
