"""Which weight format and KV cache the target's CPU decoder uses on this machine:
chosen at a model's first load on a machine, kept for every later load.

The choice belongs to the target and the machine. Its key names the CPU, its vector
unit, torch, the thread count and the decoder's arithmetic, never the drafter, the
front end or the process: plain decoding, every drafter, `/spec off` and the bench's
runs all get one numerical model, so greedy answers are the same whatever drafts.
What a drafter costs is k auto's business (policy/draft_length.py), not the format's.

Three measurements, on the warm-up text (warmup.WARMUP_TEXT):

1. Fidelity. A format is a candidate only if its next-token distribution stays
   within MAX_KL (mean KL, nats) of the model's own float weights on every position
   of the text. The embedded GGUF is 4-bit (Q4_1), so int4 reproduces it (KL ~3e-4,
   bf16 activations) and q4_1 more closely (~2e-5, activations as two int8 codes,
   a bf16 KV cache); requantizing those weights to int8 per row does not (~3e-3),
   nor does int4 on an fp16 hub model. The output layer is fp16, or the file's own
   Q8_0 blocks (int4-q8head, q4_1): in 4 or 8 bits per row it changed one next token
   in 20.
2. Speed: the target's own passes, with no drafter: plain steps and verify passes of
   VERIFY_ROWS tokens (what k auto mostly verifies), formats alternating so drift
   favours none. Among the candidates within FORMAT_MARGIN of the fastest, the
   preferred one wins: the format this machine chose before (an earlier decoder
   version's choice), else the most faithful. Noise between near-equal formats thus
   never flips a choice, and a re-measure replaces a format only by a clear margin.
3. The KV cache, for a format whose cache is bf16: int8 (cpu/int8_kv.py) where it stays
   within MAX_KL on the warm-up text and its attention over LONG_CONTEXT positions,
   as the kernel runs it on a cache of the model's shape, is not clearly slower than
   bf16's (at most KV_SLOWER of it): it halves what a long document's step reads and
   holds, so a near tie goes to it. A 0.9x threshold chose bf16 on one run and int8
   on the next on a 2-core Zen 4 (int8 at 0.71-0.94x of bf16 across runs).

The choice is stored in the user cache (formats/<model>.json) under that key, so a
later load skips the measurements (a format asked for with --quant keeps its
measured KV cache the same way); another machine (an AVX2 EPYC, an AMX Xeon)
measures its own.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from specchat.engine.cpu import decoder as cpu_decoder, huge_pages, int8_kv, kernel_build
from specchat.engine.cpu.machine import cpu_name
from specchat.engine.cpu.quant import weight_formats
from specchat.engine.cpu.quant.block_formats import block_weights
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.model.forward import forward_logits, new_cache
from specchat.engine.policy.warmup import FixedRun, WarmupContext, warmup_ids

CANDIDATES = ("fp16", "int4", "int4-q8head", "q4_1", "int8")
MAX_KL = 1e-3
# A verify pass of three tokens: two drafts and the bonus row, what the k auto rule
# mostly verifies. At five rows the int4 formats, whose products take rows four at a
# time, paid a jump the rule avoids.
VERIFY_ROWS = 3
ROUNDS = 8  # timed passes of each kind a repetition, per format
# A format faster than the preferred one by less than this is within noise: the
# preferred one stays (alternating runs of one format on a 2-core EPYC spread ~10%).
FORMAT_MARGIN = 0.15
LONG_CONTEXT = 4096
KV_SLOWER = 1.25
# The CPU decoder's arithmetic, in the key: bumped whenever a format's numbers or
# speed can change (a kernel, a cache layout, a format), so that choices measured on
# the old arithmetic are measured again; an entry under an older version still names
# the machine's earlier choice (earlier_choice). What each version changed is in
# docs/benchmarks.md ("DECODER_VERSION").
DECODER_VERSION = 9
_MACHINE_FIELDS = 4  # the key's fields that name the machine (cpu, vector unit, torch, threads)


@dataclass
class FormatChoice:
    format: str  # a weight_formats name, or "" where the CPU decoder does not apply
    reason: str
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # format -> {"kl", "step_ms", ...}
    kv: str = ""  # "int8": an int8 KV cache (cpu/int8_kv.py); "": the format's own


def held_as(choice: FormatChoice) -> str:
    """How a choice holds the target, as `specchat models` names it ("q4_1, KV int8")."""
    own = "bf16" if choice.format in weight_formats.BF16_CACHE else "fp32"
    return f"{choice.format}, KV {choice.kv or own}"


def chosen_here(cache_dir: Path, model_name: str) -> FormatChoice | None:
    """The choice remembered for `model_name` on this machine, if one was made."""
    return remembered(store_path(cache_dir, model_name), machine_key())


def machine_key() -> str:
    """What a measured choice depends on: the CPU, its vector unit, torch, threads, the
    decoder's arithmetic. Never the drafter: the target is one model whatever drafts."""
    return (f"{cpu_name()} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads | decoder {DECODER_VERSION}")


def store_path(cache_dir: Path, model_name: str) -> Path:
    return cache_dir / "formats" / (re.sub(r"[^A-Za-z0-9._-]+", "_", model_name) + ".json")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: measure again


def _valid(entry) -> bool:
    return isinstance(entry, dict) and entry.get("format") in CANDIDATES and entry.get("kv", "") in ("", "int8")


def remembered(path: Path, key: str) -> FormatChoice | None:
    entry = _read(path).get(key)
    if not _valid(entry):
        return None
    measured = entry.get("measured")
    return FormatChoice(entry["format"], "measured before on this machine",
                        measured if isinstance(measured, dict) else {}, entry.get("kv", ""))


def earlier_choice(path: Path, key: str) -> str | None:
    """The format this machine chose for the model under another key (an earlier
    decoder version, or a key that named the drafter): what a re-measure must beat by
    a clear margin. The commonest where several disagree."""
    machine = " | ".join(key.split(" | ")[:_MACHINE_FIELDS]) + " | "
    formats = Counter(entry["format"] for other, entry in _read(path).items()
                      if other != key and other.startswith(machine) and "| asked " not in other and _valid(entry))
    return formats.most_common(1)[0][0] if formats else None


def remember(path: Path, key: str, choice: FormatChoice) -> None:
    data = _read(path)
    data[key] = {"format": choice.format, "kv": choice.kv, "measured": choice.measured}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)  # two processes measuring at once never leave half a file
    except OSError:
        pass  # a read-only cache: the next load measures again


def _kl(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return torch.nn.functional.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True,
                                      reduction="batchmean").item()


def build(model, name: str, kv: str = "", calibration: list[int] | None = None) -> cpu_decoder.CpuDecoder:
    """The CPU decoder with its layers in format `name` and the output layer in the
    format's own (weight_formats.HEADS), else fp16; kv "int8": an int8 KV cache, its
    key channels calibrated on `calibration` (token ids)."""
    head = weight_formats.HEADS.get(name) or ("fp16" if weight_formats.available("fp16") else "fp32")
    bf16 = name in weight_formats.BF16_CACHE
    kv_dtype = torch.int8 if kv == "int8" else torch.bfloat16 if bf16 else torch.float32
    decoder = cpu_decoder.CpuDecoder(model, weight_formats.maker(name), weight_formats.maker(head), exact=bf16,
                                       kv_dtype=kv_dtype)
    if kv == "int8":
        decoder.calibrate_key_channels(calibration)
    return decoder


def _long_attention_ms(model, kv: str) -> float:
    """One step's attention over LONG_CONTEXT positions in every layer, as the kernel
    reads a cache of this model's shape (one buffer a layer, so memory is read as a
    long document's step reads it)."""
    config = model.config
    heads, d = config.num_attention_heads, int8_kv.head_size(config)
    kv_heads, layers = config.num_key_value_heads, config.num_hidden_layers
    shape = (kv_heads, LONG_CONTEXT, d)
    if kv == "int8":
        caches = [(torch.full(shape, 128, dtype=torch.uint8), torch.ones(shape, dtype=torch.int8),
                   torch.full(shape[:2], 0.01), torch.full(shape[:2], 0.01)) for _ in range(layers)]
    else:
        caches = [(torch.ones(shape, dtype=torch.bfloat16), torch.ones(shape, dtype=torch.bfloat16))
                  for _ in range(layers)]
    queries, visible = torch.ones(heads, 1, d), torch.ones(1, LONG_CONTEXT, dtype=torch.bool)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for cache in caches:
            torch.ops.specchat_cpu.attend_rows(queries, cache[0], cache[1], visible, 0.125, *cache[2:])
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def choose_kv(model, tokenizer, name: str, progress: Callable[[str], None] = lambda _m: None
              ) -> tuple[str, dict[str, float]]:
    """The KV cache for format `name` (int8 or the format's own, "") and what was measured."""
    if name not in weight_formats.BF16_CACHE or not kernel_build.available() \
            or int8_kv.head_size(model.config) % int8_kv.BLOCK:
        return "", {}
    progress("choosing the KV cache: int8 fidelity and speed…")
    ids = warmup_ids(tokenizer)
    reference = forward_logits(model, new_cache(model), ids, keep=len(ids))
    decoder = build(model, name, "int8", ids)
    kl = _kl(decoder.logits(ids, new_cache(model), keep=len(ids)), reference)
    bf16_ms, int8_ms = _long_attention_ms(model, ""), _long_attention_ms(model, "int8")
    measured = {"kl": round(kl, 6), "bf16_ms": round(bf16_ms, 2), "int8_ms": round(int8_ms, 2)}
    return ("int8" if kl <= MAX_KL and int8_ms <= KV_SLOWER * bf16_ms else ""), measured


def preferred(measured: dict[str, dict[str, float]], earlier: str | None = None) -> str:
    """Of the timed formats, the fastest unless one preferred to it (`earlier`, then
    the most faithful) is within FORMAT_MARGIN of its cost."""
    timed = {name: figures for name, figures in measured.items() if "cost_ms" in figures}
    fastest = min(figures["cost_ms"] for figures in timed.values())
    close = [name for name, figures in timed.items() if figures["cost_ms"] <= (1 + FORMAT_MARGIN) * fastest]
    return min(close, key=lambda name: (name != earlier, timed[name]["kl"]))


def measure(model, tokenizer, progress: Callable[[str], None] = lambda _m: None,
            earlier: str | None = None) -> FormatChoice:
    """Fidelity, then speed, of every available candidate on `model` (float weights)."""
    ids = warmup_ids(tokenizer)
    reference = forward_logits(model, new_cache(model), ids, keep=len(ids))
    measured: dict[str, dict[str, float]] = {}
    decoders = {}
    for name in CANDIDATES:
        if not weight_formats.available(name):
            continue
        progress(f"choosing the weight format: {name} fidelity…")
        decoder = build(model, name)
        kl = _kl(decoder.logits(ids, new_cache(model), keep=len(ids)), reference)
        measured[name] = {"kl": round(kl, 6)}
        if kl <= MAX_KL:
            decoders[name] = decoder
    if not decoders:
        return FormatChoice("", "no format kept the model's next-token distribution", measured)
    context = WarmupContext(model, tokenizer)
    steps: dict[str, list[float]] = {name: [] for name in decoders}
    passes: dict[str, list[float]] = {name: [] for name in decoders}
    for rep in range(3):  # the first repetition is a warm-up, untimed
        for name, decoder in decoders.items():
            progress(f"choosing the weight format: {name} speed ({rep + 1} of 3)…")
            with cpu_decoder.attached_as(model, decoder):
                plain = context.rounds(NoDrafter(), 0, ROUNDS)
                verify = context.rounds(FixedRun(), VERIFY_ROWS - 1, ROUNDS)
            if rep:
                steps[name] += [r.verify_time_s for r in plain]
                passes[name] += [r.verify_time_s for r in verify]
    for name in decoders:
        step_ms, pass_ms = 1000 * statistics.median(steps[name]), 1000 * statistics.median(passes[name])
        measured[name].update(step_ms=round(step_ms, 3), pass_ms=round(pass_ms, 3),
                              cost_ms=round(step_ms + pass_ms, 3))
    best = preferred(measured, earlier)
    why = "kept from before on this machine" if best == earlier else "the most faithful"
    return FormatChoice(best, f"{why} of the formats within {FORMAT_MARGIN:.0%} of the fastest, "
                              f"of those within KL {MAX_KL}", measured)


def settle(target, cache_dir: Path, progress: Callable[[str], None] = lambda _m: None,
           forced: str | None = None, huge_too: Iterable[torch.Tensor] = ()) -> FormatChoice:
    """Give `target` (a LoadedModel with float weights on the CPU) its CPU decoder in
    the remembered or measured format; the transformers model is then fp16-packed, as
    the fallback for callers that run it directly (distill's batches, the bench's peers),
    each layer on its first call where the CPU decoder runs the passes. `huge_too`:
    more block weights streamed every round (a trained drafter's), moved into huge
    pages with the target's; nothing of the drafter enters the choice."""
    from specchat.engine.cpu.quant import fp16_linear

    model = target.model
    why_not = cpu_decoder.unsupported(model)
    if why_not is None and not kernel_build.built():
        if not kernel_build.compiled():  # else loaded from the user cache, said nothing of
            progress("building specchat's CPU kernels for this machine (once, ~15 s)…")
        kernel_build.why_unavailable()
    path, key = store_path(cache_dir, target.name), machine_key()
    if why_not is not None:
        choice = FormatChoice("", f"transformers' forward ({why_not})")
    elif forced is not None:  # its KV cache is measured once per machine too (~1 s a load otherwise)
        key = f"{key} | asked {forced}"
        known = remembered(path, key)
        choice = FormatChoice(forced, "asked for (--quant)", *((known.measured, known.kv) if known else ()))
        if known is None:
            choice.kv, choice.measured["kv int8"] = choose_kv(model, target.tokenizer, forced, progress)
            remember(path, key, choice)
    else:
        choice = remembered(path, key)
        if choice is None:
            progress("choosing the weight format for this machine (once)…")
            choice = measure(model, target.tokenizer, progress, earlier_choice(path, key))
            if choice.format:
                choice.kv, choice.measured["kv int8"] = choose_kv(model, target.tokenizer, choice.format, progress)
                remember(path, key, choice)
    if choice.format:
        calibration = warmup_ids(target.tokenizer) if choice.kv else None
        decoder = build(model, choice.format, choice.kv, calibration)
        cpu_decoder.attach(model, decoder)
        target.precision = choice.format
        huge_pages.into_huge_pages(block_weights(decoder) + list(huge_too))
    if fp16_linear.available():  # packed when first called: with a CPU decoder, maybe never
        fp16_linear.pack_fp16(model, lazy=bool(choice.format))
        target.precision = target.precision if choice.format else "fp16-packed"
    target.format_choice = choice
    return choice

