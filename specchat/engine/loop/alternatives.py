"""Verifying a drafted run and its alternatives in one target pass (greedy rounds).

A round drafts a run d1..dk; an alternative at position i is another candidate for
d(i+1): it reads the same prefix (last, d1..di) and nothing else. One pass feeds
[last, d1..dk, alternatives…], each alternative with its position's position id and
an attention mask that shows every input only its own ancestors, so each row's
logits are those a plain pass over its own branch would give.

Greedy verification walks the run as before; where the run is rejected at position
n, the target's own choice there may be an alternative at n: then that alternative
is accepted too, and the token after it comes from its own row. Why it pays: a
target pass over a few more tokens costs little more than the run's own pass (on the
fp16-packed CPU default a 4-token pass 68 ms, a 6-token one 72), and the drafter's
second and third guesses are right often enough (the shipped drafter's teacher-forced
tokens per round rise 6–13% with 5 drafted tokens in all; on the bench at k = 4 1.92
to 2.02, 1.33× to 1.40×).

Sampling rounds keep the single run: the run rule is lossless as it is, while
several candidates per position need another rule (recursive rejection sampling).

Afterwards the cache keeps only the accepted branch: an accepted alternative's keys
and values are moved to the place after the accepted run.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from specchat.engine.drafters.protocol import Alternative
from specchat.engine.loop.sampling import Verdict
from specchat.engine.model.forward import forward_logits
from specchat.engine.model.kv_cache import KVCache
from specchat.engine.model.windows import layer_windows


def cheap_width(device: torch.device, precision: str) -> int:
    """How wide "auto" fills a verify pass. The fp16-packed CPU default: 6 (one pass
    over 1 / 2 / 4 / 6 / 8 tokens took 53 / 62 / 68 / 72 / 82 ms on a 2-core EPYC: 5
    and 6 cost the same, 7 jumps). On CUDA 8: a pass of the embedded target in NF4 on
    an H100 is bound by the host (~6,000 small ops a pass), so 1 / 2 / 4 / 8 / 16 / 32
    tokens took 40 / 48 / 54 / 34 / 30 / 35 ms (medians of 30; the spread between runs
    is larger than any width effect); a larger target turns compute-bound sooner, so
    not more than 8. The CPU decoder's int4 and int8 (Xeon, 300 tokens of context):
    4, since their kernels take rows four at a time (a pass over 4 tokens cost 1.45x
    one, over 5 about 2x). Elsewhere (bf16 or bitsandbytes 4-bit on a CPU: each token
    fed costs nearly a step) 1: no alternatives unless asked for. The k auto rule
    weighs each alternative by the measured pass costs; this is only the cap."""
    if device.type == "cuda":
        return 8
    return {"fp16-packed": 6, "fp16": 6, "int4": 4, "int4-q8head": 4, "q4_1": 4, "int8": 4}.get(precision, 1)


def spare_for(k: int, requested: int | None, width: int) -> int:
    """Alternatives to ask of the drafter for a run of k: `requested` when set,
    else ("auto") whatever fills the pass up to `width` tokens; none without a run."""
    if k <= 0:
        return 0
    return requested if requested is not None else max(0, width - 1 - k)


def pass_layout(cached: int, run: int, alternatives: list[Alternative]) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids [q] and a boolean attention mask [q, cached + q] (True = may
    attend) for the inputs [last, d1..d_run, alternatives…] after `cached` positions."""
    q = 1 + run + len(alternatives)
    depth = list(range(run + 1)) + [a.position + 1 for a in alternatives]
    mask = torch.zeros(q, cached + q, dtype=torch.bool)
    mask[:, :cached] = True
    for row in range(q):
        mask[row, cached:cached + depth[row]] = True  # its ancestors: last, d1.. up to its depth
        mask[row, cached + row] = True  # itself
    return torch.tensor(depth) + cached, mask


def forward_with_alternatives(model: PreTrainedModel, cache: KVCache, last: int, run: list[int],
                              alternatives: list[Alternative]) -> torch.Tensor:
    """Float logits [1 + len(run) + len(alternatives), V]: rows 0..len(run) as a plain
    verify pass gives them, then one row per alternative (the distribution after it)."""
    cached = cache.get_seq_length()
    positions, allowed = pass_layout(cached, len(run), alternatives)
    ids = [last, *run, *(a.token_id for a in alternatives)]
    return forward_logits(model, cache, ids, keep=len(ids), position_ids=positions,
                          attention_mask=tree_masks(model, cached, positions, allowed))


def tree_masks(model: PreTrainedModel, cached: int, positions: torch.Tensor, allowed: torch.Tensor):
    """The pass's additive 4D mask, with each layer kind's window applied over
    absolute positions (a sliding layer sees only the last `window` of them): one
    tensor when every layer has the same window, else one per layer type, as the
    hybrid models (Gemma 2/3, Qwen2 with sliding layers) take it."""
    # An additive mask works with every attention implementation (eager adds it).
    dtype = model.dtype if model.dtype.is_floating_point else torch.float32
    kv_positions = torch.cat([torch.arange(cached), positions])
    distance = positions[:, None] - kv_positions[None, :]

    def additive(window: int | None) -> torch.Tensor:
        seen = allowed if window is None else allowed & (distance < window)
        return torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)[None, None]

    windows = layer_windows(model.config)
    if len(set(windows.values())) == 1:
        return additive(next(iter(windows.values())))
    return {kind: additive(window) for kind, window in windows.items()}


def verify_greedy(run: list[int], alternatives: list[Alternative], logits: torch.Tensor) -> tuple[Verdict, int | None]:
    """The greedy verdict on the run, and the index of the accepted alternative (None
    when none was). After an accepted alternative the next token is its row's argmax,
    reported as a bonus: the target's own token after an accepted draft."""
    argmax = torch.argmax(logits, dim=-1).tolist()
    k, n = len(run), 0
    while n < k and run[n] == argmax[n]:
        n += 1
    if n < k:
        for j, alt in enumerate(alternatives):
            if alt.position == n and alt.token_id == argmax[n]:
                return Verdict(n_accepted=n, next_token=argmax[1 + k + j], bonus=True), j
    return Verdict(n_accepted=n, next_token=argmax[n], bonus=n == k), None


def accepted_rows(n_accepted: int, run: int, alternative: int | None) -> list[int]:
    """Rows of the pass on the accepted branch: last, the accepted run, and the
    accepted alternative if any. The last of them gave the round's emitted token."""
    return list(range(n_accepted + 1)) + ([1 + run + alternative] if alternative is not None else [])

