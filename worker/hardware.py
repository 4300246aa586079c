"""What machine this worker runs on: read once at start-up."""
from __future__ import annotations

import os
import platform
import re
import socket
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class Hardware:
    hostname: str
    cpu_model: str
    cores: int
    ram_gb: float
    gpu: str
    os: str

    @property
    def profile(self) -> str:
        """A stable name for 'this kind of machine', used to group measurements and fits."""
        cpu = re.sub(r"[^a-z0-9]+", "-", self.cpu_model.lower()).strip("-")[:48] or "cpu"
        gpu = "-" + re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-")[:32] if self.gpu else ""
        return f"{cpu}-{self.cores}c{gpu}"

    def as_dict(self) -> dict:
        return asdict(self) | {"profile": self.profile}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str:
    try:
        import pynvml
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() > 0:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else name
    except Exception:  # no NVIDIA driver: the usual case on a laptop
        pass
    return ""


def detect() -> Hardware:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Hardware(
        hostname=socket.gethostname(),
        cpu_model=_cpu_model(),
        cores=cores,
        ram_gb=round(psutil.virtual_memory().total / 2**30, 1),
        gpu=_gpu(),
        os=f"{platform.system()} {platform.release()}",
    )
