"""`specchat models`: what could run here, without loading any model.

The offline default and its converted cache, the device `--device auto` picks,
whether bitsandbytes really quantizes on it (tried on one small layer, not
assumed), and the causal LMs already in the Hugging Face cache, read from their
config.json only, each with the drafter `specchat run --target` would pick for it
(drafter_pick.py: tokenizer files and safetensors headers, no weights).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from specchat import local_models
from specchat.drafter_pick import pick_drafter
from specchat.local_models import LocalModel


@dataclass
class CachedModel:
    spec: str  # what to pass to --target / --drafter
    source: str  # "hf-cache" | "specchat-cache"
    architecture: str
    vocab_size: int | None
    size_bytes: int
    drafter_for_default: bool  # same vocabulary size as the embedded default target
    drafter: str  # what drafts for it when it is the target and no drafter is named
    held_as: str  # its weight format and KV cache on this machine ("" until its first load)


@dataclass
class Inventory:
    default_target: str
    default_name: str
    default_available: bool  # the embedded GGUF is installed
    default_cache_ready: bool  # converted once already, so loading takes about a second
    default_problem: str | None
    default_held_as: str  # the default target's weight format and KV cache here ("" until its first load)
    device: str
    device_detail: str
    quantization: str  # "yes (…)" or "no: why"
    quantization_ok: bool
    models: list[CachedModel] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return "cuda", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return "cpu", f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _quantization(device: str) -> tuple[bool, str]:
    """Whether bitsandbytes 4-bit works on `device`, and what loads there by default."""
    ok, how = _bitsandbytes(device)
    if device == "cuda":
        return ok, how + (" (the default there)" if ok else "")
    from specchat.engine.cpu.quant import fp16_linear

    default = ("chosen at a model's first load on this machine, whatever the drafter: the GGUF's own "
               "blocks (q4_1), int4 or fp16 (see docs/engine.md)" if fp16_linear.available() else
               "none (this CPU lacks fbgemm's fp16 GEMM)")
    return ok, how + (" (with --quant 4bit|8bit)" if ok else "") + f"; the CPU default is {default}"


def _bitsandbytes(device: str) -> tuple[bool, str]:
    """Quantize one small layer with bitsandbytes on `device` and run it."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        return False, "no: bitsandbytes is not installed"
    try:
        layer = bnb.nn.Linear4bit(64, 64, quant_type="nf4", compute_dtype=torch.bfloat16).to(device)
        layer(torch.randn(1, 64, dtype=torch.bfloat16, device=device))
        if not layer.weight.bnb_quantized:
            return False, f"no: bitsandbytes {bnb.__version__} left the weights unquantized on {device}"
    except Exception as e:  # noqa: BLE001 - any failure means "cannot quantize here"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return False, f"no: bitsandbytes {bnb.__version__} failed on {device} ({first})"
    return True, f"yes: bitsandbytes {bnb.__version__} 4-bit works on {device}"


def _held_as(name: str) -> str:
    """The weight format and KV cache this machine chose for the model (cpu/format_choice.py)."""
    from specchat.engine.cpu import format_choice

    choice = format_choice.chosen_here(local_models.cache_root(), name)
    return format_choice.held_as(choice) if choice else ""


def _listed(model: LocalModel, default_vocab: int | None, candidates: list[LocalModel]) -> CachedModel:
    vocab = model.vocab_size
    return CachedModel(model.spec, model.source, model.architecture, vocab, model.size_bytes,
                       vocab is not None and vocab == default_vocab,
                       pick_drafter(model.spec, candidates).drafter, _held_as(model.spec.rsplit("/", 1)[-1]))


def take() -> Inventory:
    from specchat import models

    problem, default_vocab = None, None
    try:
        config = local_models.read_config(models.converted_dir(models.embedded_gguf_path()))
        available = True
        default_vocab = local_models.config_vocab_size(config) if config else None
    except models.ModelError as e:
        available, problem = False, str(e)
    on_disk = local_models.all_models()  # the embedded one too: it drafts for other SmolLM2s
    device, detail = _device()
    ok, quant = _quantization(device)
    return Inventory(
        default_target="embedded",
        default_name=models.EMBEDDED_NAME,
        default_available=available,
        default_cache_ready=models.embedded_cache_ready(),
        default_problem=problem,
        default_held_as=_held_as(models.EMBEDDED_NAME),
        device=device,
        device_detail=detail,
        quantization=quant,
        quantization_ok=ok,
        models=[_listed(m, default_vocab, on_disk) for m in on_disk if m.spec != "embedded"],
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def render(inv: Inventory, console) -> None:
    from rich.table import Table
    from rich.text import Text

    if inv.default_available:
        ready = "converted cache ready (loads in about a second)" if inv.default_cache_ready else \
            "not converted yet (the first run converts it once, about 30 s)"
        default = f"{inv.default_target} = {inv.default_name}, offline, {ready}"
        default += f"; held here as {inv.default_held_as}" if inv.default_held_as else \
            "; weight format and KV cache chosen at its first load here"
    else:
        default = f"{inv.default_target} unavailable: {inv.default_problem}"
    for label, value in (("default target", default),
                         ("device", f"{inv.device} ({inv.device_detail})"),
                         ("quantization", inv.quantization)):
        console.print(Text.assemble((f"{label:>15}  ", "bold"), value))
    if not inv.models:
        console.print(Text.assemble((f"{'cached models':>15}  ", "bold"), "none in the Hugging Face cache"))
        return
    table = Table(title="models on disk (usable as --target; \"drafter\": the one picked when it is the target; "
                        "same vocabulary as the default → also --drafter for it)", title_justify="left")
    for col in ("spec", "architecture", "vocab", "size", "drafter", "drafter for embedded", "held here as"):
        table.add_column(col)
    for m in inv.models:
        table.add_row(m.spec, m.architecture, str(m.vocab_size or "?"), _size(m.size_bytes), m.drafter,
                      "yes" if m.drafter_for_default else "no", m.held_as or "(not loaded yet)")
    console.print(table)
