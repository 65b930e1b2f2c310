"""Memory figure for the gauges: GPU memory on CUDA, the process's resident set on the CPU."""

from __future__ import annotations

import os
import sys


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource  # peak, not current, where /proc is missing (macOS: bytes)

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


def memory_text(device: object) -> str:
    torch = sys.modules.get("torch")  # only ask torch if the engine already imported it
    if torch is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        used = torch.cuda.memory_allocated(device) / 2**30
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        return f"{used:.2f} / {total:.0f} GiB GPU"
    rss = _rss_bytes()
    return "—" if rss is None else f"{rss / 2**20:.0f} MiB RSS"
