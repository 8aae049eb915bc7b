"""The machine a benchmark ran on, recorded next to every figure it produced."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model, cores, the CPU kernels torch and numpy's OpenBLAS picked (AVX2, AVX512, ...), GPU (or None), Python
    and torch versions. A run is bit-identical run after run on one machine, not across kernel paths: under other
    OpenBLAS kernels the same tables give another coreset (docs/operations.md, "Determinism")."""
    import torch

    from unseen.training import compute_kernels

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        **compute_kernels(),
        "gpu": f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})" if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def describe(facts: dict[str, object]) -> str:
    """The machine in one line, as reports print it next to the timings."""
    blas = f", {facts['blas_kernels']}" if facts.get("blas_kernels") else ""
    device = facts["gpu"] or f"CPU only, {facts['cores']} cores, {facts.get('cpu_kernels', 'kernels not recorded')} kernels{blas}"
    return f"{device}; {facts['cpu']}; {platform.system()} {platform.release()}; Python {facts['python']}, torch {facts['torch']}"
