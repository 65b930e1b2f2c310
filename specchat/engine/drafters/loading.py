"""Loading a drafter trained by `specchat distill` (drafters/draft_model.py) for a loaded
target: its weights, the format it computes in, and its saved calibration."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from specchat.engine.cpu.quant.fp16_linear import pack_fp16, replace_linears
from specchat.engine.drafters import cpu_passes
from specchat.engine.drafters.draft_model import DraftModel
from specchat.engine.drafters.trained import TrainedDrafter
from specchat.engine.policy.calibration import CalibrationError, read_calibration


def weights_dir(name: str = "smoldraft") -> Path:
    """Where a drafter shipped with specchat lives (package data)."""
    return Path(__file__).resolve().parents[2] / "weights" / name


def quantize_4bit(model: DraftModel, device) -> DraftModel:
    """Every linear layer as bitsandbytes NF4, as `--quant 4bit` loads a target; the
    norms and the shared embedding table stay in the model's compute dtype. The
    weights are quantized when they move to `device`."""
    import bitsandbytes as bnb

    def nf4(linear: nn.Linear) -> nn.Module:
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                      compute_dtype=model.compute_dtype, quant_type="nf4")
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
        return quantized

    return replace_linears(model, nf4).to(device)


def load_trained_drafter(target, directory: Path | None = None, *, name: str = "smoldraft",
                         dtype: torch.dtype | None = None, quant: str = "none"):
    """A shipped drafter for a loaded target (`specchat.models.LoadedModel`).

    dtype defaults to float32 on the CPU (no bf16 matrix units on most CPUs, and the
    drafter is small) and to the target's activation dtype on CUDA (float32 for the
    4-bit default). quant "4bit" quantizes its linear layers to NF4 (computing in that
    dtype); "fp16" packs them for fbgemm's fp16 GEMM on the CPU (computing in float32),
    as the target is.
    """
    directory = directory or weights_dir(name)
    if quant == "fp16":
        dtype = torch.float32
    if dtype is None:
        dtype = torch.float32 if target.device.type == "cpu" else target.model.dtype
    # The target's table is shared as it is (rows are cast after lookup), not copied.
    embed = target.model.get_input_embeddings().weight.detach()
    model = DraftModel.load(directory, embed, dtype)
    if quant == "4bit":
        model = quantize_4bit(model, target.device)
    else:
        model = model.to(target.device)
        if quant == "fp16":
            # from the float weights, before they are packed (on first call where CPU passes run)
            pack_fp16(model, lazy=cpu_passes.attach(model) is not None)
    if model.cfg.reads_target_states:
        from specchat.engine.drafters.states_reading import FeatureDrafter  # it builds on this module
        drafter = FeatureDrafter(model, name=name)
    else:
        drafter = TrainedDrafter(model, name=name)
    try:
        drafter.calibration = read_calibration(directory)
    except CalibrationError as exc:  # a cold start, not a failure
        drafter.load_notes = (f"drafter {name}: {exc}; k auto starts uncalibrated",)
    return drafter
