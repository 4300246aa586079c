"""What this machine's energy figures will be, and why: `greenctl doctor` and a worker's start.

`probe()` reads the machine (powercap files, NVML, cpufreq, other worker processes);
`plan(facts)` and `summary_lines(plan)` are pure: per component (CPU, RAM, GPU) the
method a worker will record, why, and what would make it better.
"""
from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from worker.energy import POWERCAP, rapl_domains

DOCS = "docs/operations.md#energy-counters"


@dataclass(frozen=True)
class Facts:
    """What the probes read. Paths are strings so the facts are plain JSON."""
    os: str
    cpu_model: str
    rapl_domains: dict[str, bool] = field(default_factory=dict)   # domain name -> energy_uj readable
    rapl_unreadable_path: str | None = None                       # the first energy_uj we cannot read
    powermetrics: bool = False                                    # macOS powermetrics on PATH
    root: bool = False
    nvml_gpus: list[str] = field(default_factory=list)
    nvml_error: str | None = None
    governor: str | None = None
    turbo: str | None = None                                      # "on" | "off" | None (not readable)
    virtualization: str | None = None                             # e.g. "kvm"; None: bare metal or unknown
    other_workers: list[int] = field(default_factory=list)        # pids of other greenctl workers
    cpu_watts: float | None = None
    ram_watts: float | None = None
    exclude_ram: bool = False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _virtualization() -> str | None:
    """The hypervisor's name, from systemd-detect-virt or the CPU's 'hypervisor' flag."""
    import subprocess

    if shutil.which("systemd-detect-virt"):
        try:
            for kind in ("--vm", "--container"):
                out = subprocess.run(["systemd-detect-virt", kind], capture_output=True, text=True, timeout=5)
                name = out.stdout.strip()
                if name and name != "none":
                    return name if kind == "--vm" else f"{name} (container)"
            return None
        except (OSError, subprocess.SubprocessError):
            pass
    flags = next((line for line in (_read(Path("/proc/cpuinfo")) or "").splitlines()
                  if line.startswith("flags")), "")
    return "unknown hypervisor" if " hypervisor" in flags else None


def _turbo() -> str | None:
    no_turbo = _read(Path("/sys/devices/system/cpu/intel_pstate/no_turbo"))
    if no_turbo is not None:
        return "off" if no_turbo == "1" else "on"
    boost = _read(Path("/sys/devices/system/cpu/cpufreq/boost"))
    return None if boost is None else ("on" if boost == "1" else "off")


def _nvml() -> tuple[list[str], str | None]:
    try:
        import pynvml
    except ImportError:
        return [], "pynvml is not installed"
    try:
        pynvml.nvmlInit()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        return [n.decode() if isinstance(n, bytes) else n for n in names], None
    except Exception as exc:   # no NVIDIA driver: the usual case on a laptop
        return [], f"NVML not available ({type(exc).__name__})"


def _other_workers() -> list[int]:
    """Pids of other `greenctl worker` processes on this host (any user)."""
    import psutil

    me, out = os.getpid(), []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if p.info["pid"] != me and is_worker_command(cmd):
            out.append(p.info["pid"])
    return sorted(out)


def is_worker_command(cmd: list[str]) -> bool:
    """Whether argv is a `greenctl worker` process itself (not a shell or sudo around one,
    not a `--calibrate` run)."""
    if not cmd or "--calibrate" in cmd:
        return False
    title = " ".join(cmd)
    if title.startswith("[celeryd: greenctl-"):
        # Celery renamed the process (setproctitle): "[celeryd: greenctl-Q@HOST:MainProcess] -active- (worker …)".
        return "--calibrate" not in title and not title.startswith("[celeryd: greenctl-scheduler@")
    exe = os.path.basename(cmd[0])
    if exe == "greenctl":
        return cmd[1:2] == ["worker"]
    return exe.startswith("python") and any(cmd[i:i + 3] == ["-m", "greenctl", "worker"] for i in range(len(cmd)))


def probe(powercap: Path = POWERCAP, cpu_watts: float | None = None, ram_watts: float | None = None,
          exclude_ram: bool = False) -> Facts:
    """Read this machine (no writes)."""
    from worker.hardware import _cpu_model

    domains = {name: os.access(d / "energy_uj", os.R_OK) for name, d in rapl_domains(powercap).items()}
    unreadable = next((str(d / "energy_uj") for name, d in rapl_domains(powercap).items()
                       if not domains[name]), None)
    gpus, nvml_error = _nvml()
    return Facts(
        os=platform.system(), cpu_model=_cpu_model(), rapl_domains=domains,
        rapl_unreadable_path=unreadable, powermetrics=shutil.which("powermetrics") is not None,
        root=hasattr(os, "geteuid") and os.geteuid() == 0, nvml_gpus=gpus, nvml_error=nvml_error,
        governor=_read(Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")), turbo=_turbo(),
        virtualization=_virtualization(), other_workers=_other_workers(),
        cpu_watts=cpu_watts, ram_watts=ram_watts, exclude_ram=exclude_ram)


def rapl_fix(path: str | None) -> str:
    """The exact commands that let a non-root worker read RAPL (docs/operations.md)."""
    return ("until reboot: sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
            "/sys/class/powercap/intel-rapl:*:*/energy_uj; for good: a group and a udev rule, "
            "sudo groupadd -f powercap && sudo usermod -aG powercap $USER, then in "
            "/etc/udev/rules.d/99-greenctl-rapl.rules: SUBSYSTEM==\"powercap\", ACTION==\"add\", "
            "RUN+=\"/bin/chgrp powercap /sys%p/energy_uj\", RUN+=\"/bin/chmod g+r /sys%p/energy_uj\""
            + (f" (unreadable now: {path})" if path else "") + f"; see {DOCS}")


def plan(f: Facts) -> dict:
    """Per component: {"method", "why", "better"} (better None when nothing would help), plus
    the machine lines. Methods are those a worker records (worker/energy.py METHODS)."""
    package = {k: v for k, v in f.rapl_domains.items() if k.startswith("package")}
    cpu: dict
    if f.cpu_watts is not None:
        cpu = {"method": "forced", "why": f"--cpu-watts {f.cpu_watts:g} W, scaled by CPU load",
               "better": "drop --cpu-watts to use a power counter where there is one"}
    elif package and all(package.values()):
        cpu = {"method": "rapl", "why": f"RAPL package counter readable ({', '.join(sorted(package))})",
               "better": None}
    elif package:
        cpu = {"method": "estimated", "why": "RAPL is present but its energy_uj is not readable by this user",
               "better": rapl_fix(f.rapl_unreadable_path)}
    elif f.os == "Darwin":
        cpu = {"method": "powermetrics" if f.root and f.powermetrics else "estimated",
               "why": "macOS: CodeCarbon reads powermetrics, which needs root",
               "better": None if f.root else "run the worker with sudo (powermetrics needs root)"}
    else:
        cpu = {"method": "estimated", "why": "no RAPL counter (/sys/class/powercap/intel-rapl* missing"
                                             + (f"; virtualized: {f.virtualization}" if f.virtualization else "") + ")",
               "better": "run on bare metal with an Intel/AMD CPU exposing RAPL" if f.virtualization
               else "load the intel_rapl_common kernel module (modprobe intel_rapl_common)"}
    if f.ram_watts is not None:
        ram = {"method": "forced", "why": f"--ram-watts {f.ram_watts:g} W, constant", "better": None}
    elif f.exclude_ram:
        ram = {"method": "excluded", "why": "--exclude-ram: RAM is left out of every figure", "better": None}
    elif f.rapl_domains.get("dram"):
        ram = {"method": "rapl", "why": "RAPL dram counter readable", "better": None}
    elif "dram" in f.rapl_domains:
        ram = {"method": "estimated", "why": "RAPL dram counter present but not readable",
               "better": rapl_fix(f.rapl_unreadable_path)}
    else:
        ram = {"method": "estimated", "why": "no RAPL dram domain: CodeCarbon's constant per GB of RAM",
               "better": "--ram-watts W if you know it, or --exclude-ram to leave RAM out"}
    if f.nvml_gpus:
        gpu = {"method": "nvml", "why": f"NVML: {', '.join(f.nvml_gpus)}", "better": None}
    else:
        gpu = {"method": "none", "why": f.nvml_error or "no NVIDIA GPU", "better": None}
    from worker.energy import combined_method

    return {
        "cpu": cpu, "ram": ram, "gpu": gpu,
        "energy_method": combined_method({"cpu": cpu["method"], "ram": ram["method"], "gpu": gpu["method"]}),
        "machine": {"cpu_model": f.cpu_model, "os": f.os, "governor": f.governor, "turbo": f.turbo,
                    "vm": f.virtualization, "other_workers": f.other_workers},
        "facts": asdict(f),
    }


def summary_lines(p: dict) -> list[str]:
    """The plan as the lines `greenctl doctor` and a starting worker print."""
    out = [f"energy method: {p['energy_method']}"]
    for comp in ("cpu", "ram", "gpu"):
        c = p[comp]
        out.append(f"  {comp.upper()}: {c['method']} - {c['why']}")
        if c["better"]:
            out.append(f"    to improve: {c['better']}")
    m = p["machine"]
    out.append(f"CPU: {m['cpu_model']}; governor {m['governor'] or 'not readable'}; "
               f"turbo {m['turbo'] or 'not readable'}")
    out.append(f"virtualized: {m['vm']}" if m["vm"] else "virtualized: no (bare metal, as far as detectable)")
    if m["other_workers"]:
        out.append(f"other greenctl workers on this host: {len(m['other_workers'])} (pids "
                   f"{', '.join(map(str, m['other_workers']))}); measured windows take turns "
                   "through the host-wide lock")
    else:
        out.append("other greenctl workers on this host: none")
    return out
