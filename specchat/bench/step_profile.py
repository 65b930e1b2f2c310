"""Where a plain decoding step's time goes: the weights' products, attention, the rest.

Measured with torch's profiler over a few plain steps after the warm-up text, on
the engine's thread, the way the answers run (forward.forward_logits). Ops are
classed by name: the linear kernels of every weight format read the weights;
scaled_dot_product_attention reads the KV cache; everything else (norms, rotary,
casts, copies, Python between ops) is the rest, the framework's share that a
compiled or fused step would cut.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile

from specchat.engine.model.forward import forward_logits, new_cache

WEIGHT_OPS = ("linear", "addmm", "aten::mm", "matmul", "_weight_int4pack_mm", "_weight_int8pack_mm", "q8_0_mm", "q4_1_mm",
              "linear_dynamic_fp16", "gemm")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "attend_rows")
STEPS = 8


def _kind(name: str) -> str | None:
    if any(op in name for op in ATTENTION_OPS):
        return "attention"
    if any(op in name for op in WEIGHT_OPS):
        return "weights"
    return None


@contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines on fd 2; they are not for the user."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_step(target, context_tokens: int = 300) -> dict[str, float]:
    """Milliseconds per plain step, by kind, at `context_tokens` of context. The
    weights' and attention's shares are the profiled kernels' own time; the rest is
    an unprofiled step's time less those two (the profiler inflates every small op)."""
    model = target.model
    cache = new_cache(model)
    with torch.inference_mode():
        forward_logits(model, cache, [t % 1000 + 100 for t in range(context_tokens)], keep=1)
        times = []
        for _ in range(1 + STEPS):  # the first is untimed
            start = time.perf_counter()
            forward_logits(model, cache, [42], keep=1)
            times.append(time.perf_counter() - start)
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(STEPS):
                forward_logits(model, cache, [42], keep=1)
    spent = {"weights": 0.0, "attention": 0.0}
    for event in prof.key_averages():
        kind = _kind(event.key)
        if kind is not None:
            spent[kind] += event.self_cpu_time_total / 1000 / STEPS  # µs over all steps -> ms a step
    step = 1000 * statistics.median(times[1:])
    return {"weights_ms": round(spent["weights"], 2), "attention_ms": round(spent["attention"], 2),
            "rest_ms": round(max(0.0, step - spent["weights"] - spent["attention"]), 2),
            "step_ms": round(step, 2), "context_tokens": context_tokens}
