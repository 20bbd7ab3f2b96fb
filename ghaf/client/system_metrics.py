"""Optional system metrics for a run: CPU, memory and, when NVIDIA's NVML is present,
GPU utilisation and memory, sampled every N seconds and logged as ``system/*`` metrics."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ghaf.client.active_run import ActiveRun

log = logging.getLogger("ghaf.client")


def _nvml() -> Any:
    """The NVML module with its library loaded, or None (no driver, no package)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver or package: GPU metrics are simply absent
        return None
    return pynvml


class SystemSampler:
    def __init__(self, run: ActiveRun, *, interval: float) -> None:
        import psutil

        self._run = run
        self._interval = max(interval, 0.1)
        self._psutil = psutil
        self._process = psutil.Process()
        self._nvml = _nvml()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ghaf-system-metrics", daemon=True)
        psutil.cpu_percent(interval=None)  # the first reading only starts the clock

    def sample(self) -> dict[str, float]:
        memory = self._psutil.virtual_memory()
        found = {
            "system/cpu_percent": float(self._psutil.cpu_percent(interval=None)),
            "system/memory_percent": float(memory.percent),
            "system/memory_used_mb": memory.used / 2**20,
            "system/process_rss_mb": self._process.memory_info().rss / 2**20,
        }
        if self._nvml is not None:
            nvml = self._nvml
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                gpu_memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                found[f"system/gpu{index}_utilization_percent"] = float(rates.gpu)
                found[f"system/gpu{index}_memory_used_mb"] = gpu_memory.used / 2**20
        return found

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._run.log_metrics(self.sample())
            except Exception:  # sampling must never break the run
                log.exception("ghaf: sampling system metrics failed")
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
