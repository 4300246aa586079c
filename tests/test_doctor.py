"""`greenctl doctor` and the pure parts of the measured-share bookkeeping (no root needed;
the measured path itself is checked against known power in tests/test_known_power.py)."""
from __future__ import annotations

import json
import subprocess
import sys

from shared.accounting import measured_share, measured_share_note
from worker.doctor import Facts, is_worker_command, plan, summary_lines
from worker.energy import combined_method, counter_delta_uj, measured_kwh


def test_a_wrapped_counter_still_gives_the_energy_between_two_reads():
    # 1000 uJ below the top, then 500 uJ past zero: 1500 uJ.
    assert counter_delta_uj(999_000, 500, 1_000_000) == 1_500
    assert counter_delta_uj(100, 600, 1_000_000) == 500


def test_a_mixed_row_is_not_plain_rapl_and_its_measured_part_is_the_counters():
    assert combined_method({"cpu": "rapl", "ram": "estimated", "gpu": "none"}) == "rapl+estimated"
    assert combined_method({"cpu": "rapl", "ram": "rapl", "gpu": "none"}) == "rapl"
    assert combined_method({"cpu": "rapl", "ram": "excluded", "gpu": "none"}) == "rapl"
    assert measured_kwh(2.0, 3.0, 0.0, {"cpu": "rapl", "ram": "estimated", "gpu": "none"}) == 2.0


def test_the_report_sentence_names_what_was_measured_and_what_estimated():
    share = measured_share([(0.38, 1.0), (None, 5.0)])      # a row from before the column: left out
    assert share == 0.38
    assert measured_share_note(share, ["cpu=rapl ram=estimated gpu=none"]) == \
        "38 % measured (CPU, RAPL), 62 % estimated (RAM, CodeCarbon's constant)"
    assert measured_share_note(None, ["cpu=rapl ram=estimated gpu=none"]) is None
    assert measured_share([(None, 1.0)]) is None


def _facts(**kw) -> Facts:
    return Facts(**({"os": "Linux", "cpu_model": "Test CPU"} | kw))


def test_unreadable_rapl_is_estimated_and_the_fix_is_named():
    p = plan(_facts(rapl_domains={"package-0": False}, rapl_unreadable_path="/sys/x/energy_uj"))
    assert p["cpu"]["method"] == "estimated" and "not readable" in p["cpu"]["why"]
    assert "chmod" in p["cpu"]["better"] and "udev" in p["cpu"]["better"] and "/sys/x/energy_uj" in p["cpu"]["better"]
    assert p["energy_method"] == "estimated"


def test_a_readable_dram_domain_measures_ram_and_flags_override_it():
    both = {"package-0": True, "dram": True}
    assert plan(_facts(rapl_domains=both))["energy_method"] == "rapl"
    assert plan(_facts(rapl_domains={"package-0": True}))["energy_method"] == "rapl+estimated"
    assert plan(_facts(rapl_domains=both, ram_watts=4.0))["ram"]["method"] == "forced"
    assert plan(_facts(rapl_domains={"package-0": True}, exclude_ram=True))["energy_method"] == "rapl"
    lines = summary_lines(plan(_facts(other_workers=[11, 12], virtualization="kvm")))
    assert "virtualized: kvm" in lines and any("2 (pids 11, 12)" in line for line in lines)


def test_only_worker_processes_count_as_workers():
    assert is_worker_command(["/usr/bin/python3", "-m", "greenctl", "worker", "--queue", "q"])
    assert is_worker_command(["/venv/bin/greenctl", "worker"])
    assert not is_worker_command(["sh", "-c", "x", "python", "-m", "greenctl", "worker"])
    assert not is_worker_command(["/venv/bin/greenctl", "workers"])
    assert not is_worker_command(["/venv/bin/greenctl", "worker", "--calibrate"])


def test_doctor_json_says_per_component_what_and_why():
    out = subprocess.run([sys.executable, "-m", "greenctl", "doctor", "--json"], capture_output=True,
                         text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    for comp in ("cpu", "ram", "gpu"):
        assert report[comp]["method"] and report[comp]["why"]
    assert report["machine"]["cpu_model"]
    text = subprocess.run([sys.executable, "-m", "greenctl", "doctor"], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert text.startswith(f"energy method: {report['energy_method']}")


def test_a_worker_renamed_by_celery_is_still_a_worker():
    # With setproctitle installed (a dependency since join tokens), Celery retitles its processes.
    assert is_worker_command(["[celeryd: greenctl-default@vm:MainProcess] -active- (worker --queue default)"])
    assert not is_worker_command(["[celeryd: greenctl-scheduler@vm:MainProcess] -active- (scheduler)"])
    assert not is_worker_command(["[celeryd: greenctl-q@vm:MainProcess] -active- (worker --calibrate)"])
