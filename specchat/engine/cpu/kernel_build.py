"""specchat's own CPU kernels (cpu/kernels/*/*.cpp), built for this machine on first use.

They register torch operators under `torch.ops.specchat_cpu` (LIBRARY; the C++
side names it once, in kernels/common/library.h):
- `q8_0_mm`, `q4_1_mm` (kernels/quants/): GGUF's 8-bit and 4-bit blocks against
  activations as two int8 codes per block, the weights read once per pass
  (cpu/quant/block_formats.py);
- `attend_rows` (kernels/attention/): attention for the few query rows of a step or
  a verify pass (cpu/decoder.py), over a bf16, fp32 or int8 cache (cpu/int8_kv.py);
- `rms_norm`, `rotate_into_cache`, `silu_mul` (kernels/layer/between_products.cpp):
  the steps between a CPU layer's products, one operator each instead of a chain of
  torch's small ones;
- `fused_layers` (kernels/layer/fused_layers.cpp): a pass through every layer in one
  call (cpu/fused_layers.py).

Compiled with this machine's vector unit (-march=native) into the user cache, once
per CPU, torch and source; about 15 s on 2 cores. Where no C++ compiler or ninja is
at hand (or the build fails), `why_unavailable` says why, and the engine keeps
torch's own kernels: nothing depends on these but speed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch

LIBRARY = "specchat_cpu"  # as kernels/common/library.h names it
KERNELS = Path(__file__).parent / "kernels"  # common/, quants/, attention/, layer/
_SOURCES = sorted(KERNELS.rglob("*.cpp"))
_HEADERS = sorted(KERNELS.rglob("*.h"))  # shared by the sources
# -fopenmp: at::parallel_for then runs on torch's own OpenMP team (torch's libgomp,
# already loaded, serves the library); without it every kernel runs on one core.
# -ffp-contract=off: a sum is computed by the instructions written, the same in
# every code path, so results do not depend on how rows were grouped.
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]


def _build_directory() -> Path:
    from specchat.engine.cpu.machine import cpu_name
    from specchat.local_models import cache_root

    digest = hashlib.sha1(f"{cpu_name()}|{torch.__version__}|{' '.join(_FLAGS)}".encode())
    for source in _SOURCES + _HEADERS:  # a changed header rebuilds too
        digest.update(source.read_bytes())
    return cache_root() / "kernels" / digest.hexdigest()[:16]


def built() -> bool:
    """Whether the kernels are loaded already (asking would not build them)."""
    return hasattr(torch.ops.specchat_cpu, "attend_rows")


def compiled() -> bool:
    """Whether this machine's build of the current sources is on disk (loading it
    takes a moment; building it ~15 s)."""
    return (_build_directory() / f"{LIBRARY}.so").is_file()


@lru_cache(maxsize=None)
def why_unavailable() -> str | None:
    """None once the kernels are loaded, else why they cannot be (built on first call)."""
    if built():
        return None
    try:
        from torch.utils import cpp_extension

        directory = _build_directory()
        directory.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(name=LIBRARY, sources=[str(s) for s in _SOURCES], extra_cflags=_FLAGS,
                           extra_ldflags=["-fopenmp"], build_directory=str(directory), is_python_module=False,
                           verbose=False)
        if not built():
            return "the kernels' library loaded but registered no operators"
    except Exception as error:  # no compiler, no ninja, a foreign platform: torch's kernels remain
        text = str(error).strip()
        return f"{type(error).__name__}: {text.splitlines()[0] if text else 'build failed'}"
    return None


def available() -> bool:
    return why_unavailable() is None
