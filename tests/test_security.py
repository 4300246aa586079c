"""Security on real servers: JSON-only messages, task arguments checked by the worker,
no credentials in output or logs, least-privilege database roles, data never executed."""
from __future__ import annotations

import ast
import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.celery_app import INFER_TASK, celery_settings
from tests.processes import MODEL, ROOT, base_env, greenctl, greenctl_json, worker, write_spec
from tests.test_faults import query, valkey, wait_until

SOURCE_DIRS = ("greenctl", "shared", "scheduler", "worker", "estimator", "bench")


# -- messages: JSON only, arguments validated where they are used -------------------------

def test_celery_is_configured_for_json_only(monkeypatch):
    conf = celery_settings("redis://127.0.0.1:1/0", 600)
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == "json" and conf["event_serializer"] == "json"
    from shared.celery_app import app, configure

    configure("redis://127.0.0.1:1/0", "postgresql://x@127.0.0.1/x")
    assert list(app.conf.accept_content) == ["json"] and app.conf.task_serializer == "json"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (
                f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else "")
            yield node, name


def test_no_unsafe_deserialization_or_eval_in_the_code():
    """No pickle (or its relatives), no unsafe YAML loader, no eval/exec, no shell=True."""
    problems = []
    for directory in SOURCE_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                    bad = {n.split(".")[0] for n in names if n} & {"pickle", "cPickle", "dill", "cloudpickle",
                                                                    "marshal", "shelve", "joblib"}
                    if bad:
                        problems.append(f"{path}:{node.lineno} imports {bad}")
            for node, name in _calls(tree):
                if name in {"eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                            "pd.read_pickle", "pandas.read_pickle"}:
                    problems.append(f"{path}:{node.lineno} calls {name}")
                if any(k.arg == "shell" and getattr(k.value, "value", False) is True for k in node.keywords):
                    problems.append(f"{path}:{node.lineno} runs a shell")
    assert problems == []


class _Exploit:
    """Unpickling this creates a directory: the proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_running_worker_refuses_pickle_and_invalid_task_ids(tmp_path, fresh_db_url):
    from celery import Celery

    marker = tmp_path / "pickle-was-executed"
    with valkey(tmp_path / "valkey") as broker:
        env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=broker.url,
                       GREENCTL_STATE_DIR=str(tmp_path / "state"))
        log = tmp_path / "worker.log"
        with worker(env, "sec", log, "--threads", "1") as proc:
            app = Celery("attacker", broker=broker.url)     # anyone who can reach the broker
            # A pickled message, as an attacker with access to the broker would send it.
            app.send_task(INFER_TASK, args=[_Exploit(marker)], queue="sec", serializer="pickle")
            wait_until(lambda: b"Refusing to deserialize untrusted content of type pickle" in log.read_bytes(),
                       30, "the worker refuses the pickle")
            # JSON, but not a task id: refused by the task before it touches the database.
            bad_ids = ["1; DROP TABLE task", 1.5, -3, True, None, [1], {"id": 1}, 2**70]
            for value in bad_ids:
                app.send_task(INFER_TASK, args=[value], queue="sec")
            wait_until(lambda: len(re.findall(r"raised unexpected: ValueError\(.task id must be a positive integer",
                                              log.read_text())) == len(bad_ids), 30, "every invalid task id refused")
            app.send_task(INFER_TASK, args=[1], kwargs={"sql": "DELETE FROM task"}, queue="sec")
            wait_until(lambda: b"unexpected keyword argument 'sql'" in log.read_bytes(), 30,
                       "unexpected keyword arguments refused")
            assert proc.poll() is None                           # still serving
            app.close()
    assert not marker.exists()
    # The control: the same payload, unpickled, does run.
    import pickle

    live = tmp_path / "payload-is-live"
    pickle.loads(pickle.dumps(_Exploit(live)))
    assert live.is_dir()
    # Nothing reached the database: no rows, the schema intact.
    assert query(fresh_db_url, "SELECT count(*) FROM task")[0][0] == 0


def test_validate_task_id():
    from worker.tasks import validate_task_id

    assert validate_task_id(7) == 7
    for bad in ("7", 7.0, 0, -1, True, None, [7], 2**31, 2**70):
        with pytest.raises(ValueError, match="task id must be a positive integer"):
            validate_task_id(bad)


# -- no credentials in output or logs ------------------------------------------------------

def test_no_credentials_in_cli_output_reports_or_logs(tmp_path, fresh_db_url):
    """Real passwords in both URLs (Valkey with requirepass; the system Postgres trusts
    local connections, so its password is carried but not checked); the local cluster
    (`greenctl up`) runs an experiment; nothing printed or logged holds either password."""
    pg_secret, vk_secret = f"pg-{uuid.uuid4().hex}", f"vk-{uuid.uuid4().hex}"
    db = fresh_db_url.replace("postgres@", f"postgres:{pg_secret}@", 1)
    assert pg_secret in db
    outputs: dict[str, str] = {}
    state = tmp_path / "state"
    with valkey(tmp_path / "valkey", password=vk_secret) as broker:
        env = base_env(GREENCTL_DATABASE_URL=db, GREENCTL_BROKER_URL=broker.url, GREENCTL_STATE_DIR=str(state),
                       GREENCTL_QUEUE="sec")
        spec = write_spec(tmp_path / "sec.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                          sample=3, queue="sec")
        try:
            up = greenctl(["up", "--workers", "1", "--wait", "120"], env, timeout=180)
            outputs["up"] = up.stdout + up.stderr
            assert "***" in up.stdout
            out = greenctl(["submit", str(spec), "--wait", "--json", "--timeout", "120"], env, timeout=180)
            outputs["submit"] = out.stdout + out.stderr
            eid = json.loads(out.stdout)["experiment_id"]
            # Read-only commands, each its own process: run a few at a time (the same outputs,
            # less wall time than one after the other).
            wrong = env | {"GREENCTL_BROKER_URL": broker.url.replace(vk_secret, vk_secret[::-1])}
            away = env | {"GREENCTL_DATABASE_URL": f"postgresql://postgres:{pg_secret}@127.0.0.1:1/greenctl"}
            calls = {" ".join(args): (args, env, True) for args in (
                ["status"], ["status", str(eid), "--json"], ["report", str(eid)],
                ["report", str(eid), "--format", "json"], ["report", str(eid), "--format", "md"],
                ["report", str(eid), "--format", "html", "--output", str(tmp_path / "r.html")],
                ["workers"], ["workers", "--json"], ["ps"], ["ps", "--json"])}
            calls |= {"submit wrong broker password": (["submit", str(spec)], wrong, False),
                      "status unreachable db": (["status"], away, False)}
            with ThreadPoolExecutor(max_workers=4) as pool:
                futures = {where: pool.submit(greenctl, args, e, timeout=120, check=check)
                           for where, (args, e, check) in calls.items()}
                procs = {where: f.result() for where, f in futures.items()}
            outputs |= {where: proc.stdout + proc.stderr for where, proc in procs.items()}
            assert json.loads(procs[f"status {eid} --json"].stdout)["n_done"] == 3
            # Errors name the server, masked: a wrong broker password, an unreachable database.
            proc = procs["submit wrong broker password"]
            assert proc.returncode != 0 and "redis://:***@" in proc.stderr
            proc = procs["status unreachable db"]
            assert proc.returncode == 1 and "postgres:***@127.0.0.1:1" in proc.stderr
            # The operating system's `ps` shows every process's command line to every user.
            import psutil

            from greenctl.cluster.records import cluster_dir, read_all

            records = read_all(cluster_dir(state))
            assert {r.name for r in records} >= {"scheduler", "estimator", "worker-1"}
            for r in records:
                outputs[f"command line of {r.name}"] = " ".join(psutil.Process(r.pid).cmdline())
            files_while_running = _files(state)
        finally:
            down = greenctl(["down", "--grace", "20"], env, timeout=120, check=False)
            outputs["down"] = down.stdout + down.stderr
    logs = {**files_while_running, **_files(state)}
    assert any(name.endswith("worker-1.log") and "celery" in text for name, text in logs.items())
    assert any(name.endswith(".pid.json") for name in logs)
    for where, text in {**outputs, **logs}.items():
        for secret in (pg_secret, vk_secret, vk_secret[::-1]):
            assert secret not in text, f"a password appears in {where}"


def _files(directory: Path) -> dict[str, str]:
    """Every file under `directory` (logs, pid records, Celery beat's schedule), as text."""
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in directory.rglob("*") if p.is_file()}


# -- database roles ------------------------------------------------------------------------

@pytest.fixture()
def roles(fresh_db_url):
    """A worker and a scheduler role made by `greenctl db roles`, unique to this test (roles
    are cluster-wide), dropped at the end."""
    from shared.roles import drop_roles

    suffix = uuid.uuid4().hex[:8]
    names = {"worker": f"gc_test_worker_{suffix}", "scheduler": f"gc_test_scheduler_{suffix}"}
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL="redis://127.0.0.1:1/0")
    try:
        out = greenctl(["db", "roles", "--worker-role", names["worker"], "--scheduler-role", names["scheduler"]], env)
        assert f"{names['worker']}" in out.stdout and "created" in out.stdout
        again = greenctl(["db", "roles", "--worker-role", names["worker"], "--scheduler-role", names["scheduler"]], env)
        assert "updated" in again.stdout and "created" not in again.stdout        # idempotent
        yield names
    finally:
        drop_roles(fresh_db_url, *names.values())


def _as(url: str, role: str) -> str:
    from shared.roles import role_url

    return role_url(url, role)


def _denied(url: str, sql: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            try:
                conn.execute(sa.text(sql))
            except sa.exc.ProgrammingError as exc:
                conn.rollback()
                return "permission denied" in str(exc) or "must be owner" in str(exc)
            conn.rollback()
            return False
    finally:
        engine.dispose()


def test_worker_role_runs_experiments_but_cannot_delete_tasks_or_create_experiments(tmp_path, fresh_db_url, roles):
    worker_db, scheduler_db = _as(fresh_db_url, roles["worker"]), _as(fresh_db_url, roles["scheduler"])
    with valkey(tmp_path / "valkey") as broker:
        spec = write_spec(tmp_path / "roles.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                          sample=2, queue="roles")
        # Submitting is the scheduler role's job; running it the worker role's, and it is enough.
        cli = base_env(GREENCTL_DATABASE_URL=scheduler_db, GREENCTL_BROKER_URL=broker.url,
                       GREENCTL_STATE_DIR=str(tmp_path / "state"))
        runner = cli | {"GREENCTL_DATABASE_URL": worker_db}
        with worker(runner, "roles", tmp_path / "worker.log", "--threads", "1"):
            eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "60"], cli, timeout=120)[
                "experiment_id"]
        status = greenctl_json(["status", str(eid), "--json"], cli)
        assert (status["status"], status["n_done"]) == ("done", 2)
        assert greenctl_json(["workers", "--json"], cli)["workers"][0]["queue"] == "roles"
    # What the worker role must not do.
    for sql in ("DELETE FROM task", "DELETE FROM result", "DELETE FROM experiment",
                "INSERT INTO experiment (name, spec, status, n_tasks, created_at) VALUES ('x', '{}', 'queued', 0, now())",
                "INSERT INTO task (experiment_id, variant_id, sample_index, repeat, text, label, status, attempts) "
                "SELECT experiment_id, variant_id, 99, 0, 'x', 'positive', 'queued', 0 FROM task LIMIT 1",
                "INSERT INTO variant (experiment_id, model, engine, variant, is_baseline, queue, params) "
                "VALUES (1, 'm', 'embedded', 'q4_0', false, 'q', '{}')",
                "UPDATE task SET text = 'changed'", "UPDATE task SET experiment_id = 1",
                "UPDATE result SET energy_kwh = 0", "UPDATE experiment SET spec = '{}'",
                "UPDATE variant SET params = '{}'",
                "SELECT * FROM estimator_fit", "DROP TABLE result", "TRUNCATE task",
                "CREATE TABLE stolen (x int)", "ALTER TABLE task ADD COLUMN x int",
                "UPDATE alembic_version SET version_num = 'x'"):
        assert _denied(worker_db, sql), f"the worker role may: {sql}"
    # The scheduler role writes rows (inside a transaction rolled back here) but changes no schema.
    assert not _denied(scheduler_db, "DELETE FROM result")
    assert not _denied(scheduler_db, "INSERT INTO experiment (name, spec, status, n_tasks, created_at) "
                                     "VALUES ('x', '{}', 'queued', 0, now())")
    for sql in ("DROP TABLE task", "CREATE TABLE stolen (x int)", "ALTER TABLE task ADD COLUMN x int",
                "TRUNCATE task", "UPDATE alembic_version SET version_num = 'x'"):
        assert _denied(scheduler_db, sql), f"the scheduler role may: {sql}"
    # Nothing was lost to the attempts above.
    assert query(fresh_db_url, "SELECT count(*), count(DISTINCT task_id) FROM result")[0] == (2, 2)


def test_role_names_are_checked_before_any_sql(fresh_db_url):
    from shared.roles import RoleError, create_roles

    for bad in ('x"; DROP TABLE task; --', "Robert'); --", "", "a" * 64):
        with pytest.raises(RoleError, match="role name"):
            create_roles(fresh_db_url, worker=bad, scheduler="gc_never_created")
    assert query(fresh_db_url, "SELECT count(*) FROM pg_roles WHERE rolname = 'gc_never_created'")[0][0] == 0
    assert query(fresh_db_url, "SELECT count(*) FROM task")[0][0] == 0


# -- data is read, never executed; templates are not format strings ------------------------

HOSTILE = [
    "{0.__class__.__mro__[1].__subclasses__()}", "{labels} {text!r:>{width}}", "%(password)s %s %d",
    "=cmd|' /C calc'!A0", "__import__('os').system('touch pwned')", "$(touch pwned) `touch pwned`",
    "'); DROP TABLE task; --", "<script>alert(1)</script>", "!!python/object/apply:os.system ['touch pwned']",
]


def test_hostile_dataset_text_is_stored_and_prompted_verbatim(tmp_path, fresh_db_url, monkeypatch):
    """Submitted through the real CLI; each text lands in the task row unchanged and in the
    prompt unchanged (no str.format, no eval), and nothing ran."""
    import csv

    from shared.prompts import build_messages, render_plain
    from worker.tasks import build_request
    from worker.store import Job

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "hostile.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *[(t, ["positive", "negative", "neutral"][i % 3])
                                                      for i, t in enumerate(HOSTILE)]])
    spec = write_spec(tmp_path / "hostile.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                      queue="hostile", dataset={"path": str(data), "labels": ["positive", "negative", "neutral"],
                                                "stratify": False},
                      prompt={"template": "paper-checklist", "few_shot": 0})
    with valkey(tmp_path / "valkey") as broker:
        env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=broker.url,
                       GREENCTL_STATE_DIR=str(tmp_path / "state"))
        greenctl(["submit", str(spec), "--json"], env)
    rows = query(fresh_db_url, "SELECT t.text, e.spec FROM task t JOIN experiment e ON e.id = t.experiment_id "
                               "ORDER BY t.sample_index")
    stored = [r[0] for r in rows]
    assert stored == HOSTILE
    spec_row = rows[0][1]
    for text in stored:
        job = Job(task_id=1, experiment_id=1, variant_id=1, text=text, label="positive", attempt=1, model=MODEL,
                  engine="embedded", variant="q4_0", params={"max_tokens": 4, "temperature": 0.0, "top_p": 0.9,
                                                            "top_k": 50, "seed": 0}, spec=spec_row)
        request = build_request(job)
        assert text in request.messages[-1]["content"] and text in render_plain(request.messages)
        for template in ("label-only", "paper-checklist"):
            assert text in build_messages(template, text, ["a", "b"])[-1]["content"]
    assert not (tmp_path / "pwned").exists() and not (ROOT / "pwned").exists()


def test_a_join_token_on_the_command_line_leaves_the_process_title_at_import():
    # What another local user sees in `ps`: /proc/PID/cmdline, read after `import greenctl` only
    # (before any CLI import), and the token still in sys.argv for the CLI to read.
    import subprocess
    import sys

    token = "gct1." + "x" * 64
    code = ("import sys; sys.argv[1:] = ['worker', '--join', sys.argv[1]]; import greenctl; "
            "print(open('/proc/self/cmdline', 'rb').read().replace(b'\\0', b' ').decode()); "
            "print(sys.argv[-1] == %r)" % token)
    out = subprocess.run([sys.executable, "-c", code, token], capture_output=True, text=True, timeout=60).stdout
    title, kept = out.splitlines()
    assert token not in title and "--join ***" in title
    assert kept == "True"
