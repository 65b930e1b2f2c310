"""Logits → probabilities, and the lossless accept / resample rule.

The same `SamplingSettings` shape both sides: the drafter's proposals and the
target's verdicts use identical logits processing, so p and q are comparable.

Greedy (temperature <= 0) is the limit of sampling: a token is accepted iff it is
the target's argmax, and the correction is the argmax. For display, greedy rounds
still report p and q as temperature-1 softmax probabilities.

A repetition penalty (`penalise_repeats`) changes the logits before all of this,
by the tokens of the answer before each position (the prompt is exempt, so quoting
the user's text is not penalised). The target's rows in a verify pass each get the
penalty of their own prefix, so the answer is still exactly the target's own
(penalised) greedy answer or distribution; drafters apply it too, only so that they
guess that answer better.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0  # 1 = off; as transformers' repetition_penalty
    penalty_start: int = 0  # where the answer starts: earlier tokens are not penalised

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")


def repeat_masks(context: list[int], branches: list[list[int]], vocab_size: int,
                 device: torch.device) -> torch.Tensor:
    """[len(branches), vocab_size] booleans: row i marks the tokens of `context`
    followed by `branches[i]`, the sequence before that row's position."""
    masks = torch.zeros(len(branches), vocab_size, dtype=torch.bool)
    if context:
        masks[:, torch.tensor(context, dtype=torch.long)] = True
    rows = [i for i, branch in enumerate(branches) for _ in branch]
    if rows:
        masks[torch.tensor(rows), torch.tensor([t for branch in branches for t in branch])] = True
    return masks.to(device)


def answer_mask(tokens: list[int], settings: SamplingSettings, vocab_size: int,
                device: torch.device) -> torch.Tensor | None:
    """[vocab_size] booleans marking the tokens of the answer in `tokens` (the whole
    sequence), which a drafter penalises and extends as it drafts; None when the
    penalty is off."""
    if settings.repetition_penalty == 1.0:
        return None
    return repeat_masks(tokens[settings.penalty_start:], [[]], vocab_size, device)[0]


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' repetition penalty: the logit of a token already in the sequence
    (`seen`, booleans shaped like `logits`) is divided by `penalty` when positive and
    multiplied by it otherwise, so a penalty above 1 makes every repeat less likely."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def logits_to_probs(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Probabilities over the last dimension after temperature, top-k and top-p.

    Greedy settings give the plain softmax (used only for reporting p and q).
    """
    logits = logits.float()
    if settings.greedy:
        return torch.softmax(logits, dim=-1)
    logits = logits / settings.temperature
    if settings.top_k and settings.top_k < logits.shape[-1]:
        kth = torch.topk(logits, settings.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        logits = _nucleus(logits, settings.top_p)
    return torch.softmax(logits, dim=-1)


_NUCLEUS_CANDIDATES = (256, 2048)  # the likeliest tokens searched for a top-p cut, before all


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """-inf outside the smallest set of likeliest tokens whose mass reaches top_p: a
    token is dropped once the mass before it already does; the first always stays.
    The cut is looked for among the 256 likeliest tokens, then 2,048, and the whole
    vocabulary is sorted only where those hold less than top_p: sorting 49k
    probabilities took 1.4 ms a row on a 2-core EPYC, half a plain step; the 256
    likeliest ~35 us."""
    probs = torch.softmax(logits, dim=-1)
    for width in _NUCLEUS_CANDIDATES:
        if width < logits.shape[-1]:
            values, order = torch.topk(probs, width, dim=-1)  # descending
            if bool((values.sum(dim=-1) >= top_p).all()):
                break
    else:  # no candidate set held enough: all of them, in order
        values, order = torch.sort(probs, dim=-1, descending=True)
    keep_sorted = values.cumsum(dim=-1) - values < top_p
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token id from a 1-D distribution (probabilities, or weights of any total),
    by its inverse CDF: the first id whose cumulative weight passes a uniform draw
    times the total. torch.multinomial took ~760 us over a 49k vocabulary on a
    2-core EPYC, a quarter of a plain step; this ~60. The sums are float64, so a
    tail token's share is not lost to rounding, and an id of weight 0 is never drawn
    (its cumulative weight equals its predecessor's)."""
    cdf = probs.double().cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64, device=probs.device)
    return int(torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=probs.numel() - 1))


def pick(logits: torch.Tensor, probs: torch.Tensor, settings: SamplingSettings,
         generator: torch.Generator | None) -> int:
    """The next token: argmax when greedy, else a sample from probs."""
    if settings.greedy:
        return int(torch.argmax(logits).item())
    return sample(probs, generator)


@dataclass
class Verdict:
    """The outcome of verifying one drafted run."""

    n_accepted: int
    next_token: int  # the correction (after a rejection) or the bonus token
    bonus: bool  # True when every drafted token was accepted


def verify(
    draft_ids: list[int],
    draft_probs: torch.Tensor | None,
    target_logits: torch.Tensor,
    target_probs: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator | None,
) -> Verdict:
    """Speculative verification of k drafted tokens against k+1 target positions.

    target_logits / target_probs: [k+1, V]; row i is the target's distribution for the
    token after the i-th drafted one (row 0: for the first drafted token).
    draft_probs: [k, V] drafter distributions, or None for a deterministic drafter
    (then p is one-hot on the drafted token).

    Sampling follows Leviathan et al. / Chen et al.: accept token x with probability
    min(1, q(x)/p(x)); on rejection sample from norm(max(0, q − p)); on full
    acceptance sample a bonus token from the last target row. This keeps exactly the
    target's distribution.
    """
    k = len(draft_ids)
    if settings.greedy:
        argmax = torch.argmax(target_logits, dim=-1).tolist()
        n = 0
        while n < k and draft_ids[n] == argmax[n]:
            n += 1
        return Verdict(n_accepted=n, next_token=argmax[n], bonus=n == k)

    for i, token in enumerate(draft_ids):
        q = float(target_probs[i, token])
        p = float(draft_probs[i, token]) if draft_probs is not None else 1.0
        u = float(torch.rand((), generator=generator, device=target_probs.device))
        if u * p <= q:  # u <= q/p without dividing by a tiny p
            continue
        if draft_probs is not None:
            residual = torch.clamp(target_probs[i] - draft_probs[i], min=0.0)
        else:
            residual = target_probs[i].clone()
            residual[token] = 0.0
        total = float(residual.sum())
        # total == 0 only when q == p exactly, in which case rejection has probability 0;
        # guard against float round-off anyway.
        correction = sample(residual / total, generator) if total > 0 else sample(target_probs[i], generator)
        return Verdict(n_accepted=i, next_token=correction, bonus=False)
    return Verdict(n_accepted=k, next_token=sample(target_probs[k], generator), bonus=True)
