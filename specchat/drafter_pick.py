"""A drafter picked for a target the user named without one.

From the models already on this disk (the Hugging Face cache, specchat's converted
GGUFs, the embedded SmolLM2-135M), the smallest that can draft for the target: a
causal LM of the same family, with fewer parameters, whose tokenizer agrees with the
target's (vocab_match). Decided from config.json, safetensors headers and tokenizer
files; no weights are loaded. Nothing qualifies: the ngram drafter, which needs no
second model. Either way the choice comes with a one-line note for the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specchat.local_models import (COMPLETE_MARKER, EMBEDDED_NAME, LocalModel, all_models, converted_dir,
                                   model_in, parameter_count)
from specchat.vocab_match import first_difference, read_vocabulary

FALLBACK_DRAFTER = "ngram"  # works with any target: it needs no second model
NOTE_PREFIX = "drafter: "  # how a pick's note starts (the CLI prints it as information, not a warning)

# model_types whose sizes share a tokenizer across these names (Qwen2.5 and Qwen3 are
# both "qwen2"-tokenized, a MoE release keeps its dense sibling's); any other type only
# drafts for its own. The vocabulary check still decides: this only keeps, say, a
# Llama-tokenized SmolLM2 from being weighed against a Mistral.
COMPATIBLE_TYPES: tuple[frozenset[str], ...] = (
    frozenset({"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}),
    frozenset({"mistral", "mixtral"}),
    frozenset({"gemma", "gemma2"}),
    frozenset({"phi3", "phimoe"}),
)


@dataclass(frozen=True)
class Pick:
    drafter: str  # a --drafter spec; FALLBACK_DRAFTER when nothing qualified
    note: str  # one line saying what was chosen and why


def same_family(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return a == b or any(a in group and b in group for group in COMPATIBLE_TYPES)


def pick_drafter(target: str, models: list[LocalModel] | None = None) -> Pick:
    """The drafter for `target` (a spec); `models` defaults to everything on disk."""
    models = all_models() if models is None else models
    found = find_target(target, models)
    if found is None:
        where = "converted yet (its first run converts it)" if target.endswith(".gguf") else \
            "in the local Hugging Face cache"
        return _fallback(target, f"it is not {where}, so no drafter model can be matched to it")
    target_params = parameter_count(found.directory)
    if target_params is None:
        return _fallback(target, "its weights are not on disk to compare sizes with")
    candidates = sorted(_smaller_relatives(found, target_params, models), key=lambda pair: (pair[0], pair[1].spec))
    target_vocab = read_vocabulary(found.directory) if candidates else None
    if candidates and target_vocab is None:
        return _fallback(target, "its tokenizer files cannot be read to compare with")
    for params, candidate in candidates:  # smallest first
        drafter_vocab = read_vocabulary(candidate.directory)
        if drafter_vocab is not None and first_difference(target_vocab, drafter_vocab) is None:
            return Pick(candidate.spec, f"{NOTE_PREFIX}picked {_shown(candidate)} for target {target} "
                                        f"(same tokenizer, {_times(target_params / params)} smaller)")
    family = found.model_type or "same-family"
    return _fallback(target, f"no smaller {family} model with its tokenizer is in the local cache")


def find_target(spec: str, models: list[LocalModel]) -> LocalModel | None:
    """The target as a model on disk: a cached hub id, a model directory or an already
    converted .gguf; None when none of these has it."""
    for m in models:
        if m.spec == spec:
            return m
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") and path.is_file():
        converted = converted_dir(path)
        return model_in(converted, spec, "specchat-cache") if (converted / COMPLETE_MARKER).is_file() else None
    return model_in(path, spec, "local") if path.is_dir() else None


def _smaller_relatives(target: LocalModel, target_params: int, models: list[LocalModel]):
    for m in models:
        if m.directory == target.directory or not same_family(m.model_type, target.model_type):
            continue
        # Pre-quantized weights need their own libraries (and their packed tensors undercount
        # parameters); custom code would need --trust-remote-code, which drafters do not get.
        if "quantization_config" in m.config or "auto_map" in m.config:
            continue
        params = parameter_count(m.directory)
        if params is not None and params < target_params:
            yield params, m


def _fallback(target: str, why: str) -> Pick:
    return Pick(FALLBACK_DRAFTER, f"{NOTE_PREFIX}{FALLBACK_DRAFTER} for target {target}: {why}")


def _shown(model: LocalModel) -> str:
    return f"embedded ({EMBEDDED_NAME})" if model.spec == "embedded" else model.spec


def _times(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"
