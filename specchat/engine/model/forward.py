"""One forward pass of a causal LM over new tokens, appending to its KV cache.

Kept in one place so the target and every model drafter call models the same way
(transformers 5.x takes `cache=`; `logits_to_keep` avoids computing the output
layer for positions nobody reads).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from specchat.engine.cpu import decoder as cpu_decoder
from specchat.engine.model.kv_cache import KVCache


def output_vocab_size(model: PreTrainedModel) -> int:
    """Rows of the model's logits (may exceed the tokenizer's vocabulary: padding).
    Read from the output layer's shape, which every kind of layer here states
    (nn.Linear, bitsandbytes, fp16-packed) without reading its weights."""
    head = model.get_output_embeddings()
    return getattr(head, "out_features", None) or model.config.vocab_size


def new_cache(model: PreTrainedModel) -> KVCache:
    return KVCache.for_model(model)


def kv_cache_label(model: PreTrainedModel) -> str:
    """How the model's KV cache is held, as the screens and --json name it: "int8",
    "bf16" or "fp32" on the CPU decoder, else the model's own dtype."""
    lean = cpu_decoder.attached(model)
    dtype = lean.kv_dtype if lean is not None else model.dtype
    names = {torch.int8: "int8", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    return names.get(dtype, str(dtype).removeprefix("torch."))


@torch.inference_mode()
def forward_logits(model: PreTrainedModel, cache: KVCache, token_ids: list[int], keep: int,
                   position_ids: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Feed token_ids after what the cache holds; return float logits [keep, V] for the
    last `keep` positions (keep=0: none, for a pure prefill). position_ids [n] and a 4D
    attention_mask (or one per layer type) replace the causal defaults (a pass over a
    tree of drafts)."""
    lean = cpu_decoder.attached(model)
    if lean is not None:  # the CPU fast path (cpu/decoder.py)
        return lean.logits(token_ids, cache, keep, position_ids, attention_mask)
    device = model.device
    input_ids = torch.tensor([token_ids], dtype=torch.long, device=device)
    extra = {}
    if position_ids is not None:
        extra["position_ids"] = position_ids[None].to(device)
    if isinstance(attention_mask, dict):  # one mask per layer type (a hybrid of windows)
        extra["attention_mask"] = {kind: mask.to(device) for kind, mask in attention_mask.items()}
    elif attention_mask is not None:
        extra["attention_mask"] = attention_mask.to(device)
    out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=max(keep, 1), **extra)
    return out.logits[0, -keep:].float() if keep else out.logits[0, :0].float()


def common_prefix(cached: list[int], tokens: list[int], limit: int) -> int:
    """How many leading ids the two sequences share, at most `limit`."""
    common, limit = 0, min(len(cached), limit)
    while common < limit and cached[common] == tokens[common]:
        common += 1
    return common


def sync_cache(model: PreTrainedModel, cache: KVCache, cached: list[int], tokens: list[int],
               keep: int, chunk: int = 512) -> tuple[torch.Tensor, int]:
    """Make the cache hold exactly `tokens` (cached = the ids it holds now, updated in
    place), reusing the longest common prefix, and return logits for the last `keep`
    of them, and how many tokens were fed. At least `keep` tokens are re-fed so their
    logits exist."""
    common = common_prefix(cached, tokens, limit=len(tokens) - keep)
    cache.truncate(common)
    del cached[common:]
    fresh = tokens[common:]
    if not fresh:
        return torch.empty(0), 0
    cache.reserve(len(tokens))  # one allocation for a long prompt, not one per chunk
    # Long prompts are fed in chunks so peak memory stays bounded; the last chunk
    # must hold the `keep` positions whose logits are wanted.
    starts = list(range(0, len(fresh), chunk))
    if len(starts) > 1 and len(fresh) - starts[-1] < keep:
        starts.pop()
    bounds = starts[1:] + [len(fresh)]
    for start, end in zip(starts, bounds):
        logits = forward_logits(model, cache, fresh[start:end], keep if end == len(fresh) else 0)
        cached.extend(fresh[start:end])
    return logits, len(fresh)


class StateTap:
    """Keeps the last hidden states (what the output layer reads, every position) of
    the model's passes while open, for a drafter that reads them. A forward hook on
    the decoder stack: the states are computed anyway, so this costs nothing."""

    def __init__(self, model: PreTrainedModel, enabled: bool = True) -> None:
        lean = cpu_decoder.attached(model) if enabled else None
        self._decoder = lean.body if lean is not None else model.get_decoder() if enabled else None
        self._passes: list[torch.Tensor] = []

    def __enter__(self) -> StateTap:
        if self._decoder is not None:
            self._handle = self._decoder.register_forward_hook(self._keep)
        return self

    def _keep(self, module, args, output) -> None:
        # last_hidden_state of the one sequence (the lean body returns it as a tensor)
        self._passes.append(output[0] if torch.is_tensor(output) else output[0][0])

    def __exit__(self, *exc) -> None:
        if self._decoder is not None:
            self._handle.remove()

    def states(self) -> torch.Tensor:
        """[positions fed, hidden] over every pass since the tap opened."""
        return torch.cat(self._passes) if len(self._passes) != 1 else self._passes[0]
