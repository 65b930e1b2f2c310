"""Train the drafter on the target's own answers, resumably.

Loss per answer position: cross-entropy to the target's argmax (what greedy
verification accepts) mixed with cross-entropy to the target's top-k distribution
renormalised over the draft vocabulary (soft labels carry more per token, which
matters when a CPU can only generate a few hundred answers).

The run checkpoints model, optimizer, step and RNG every `checkpoint_every` steps;
started again with the same settings it continues from the last checkpoint.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from specchat.distill.batching import length_groups
from specchat.engine.drafters.draft_model import DraftConfig, DraftModel
from specchat.engine.drafters.drafting import lookup


@dataclass
class TrainSettings:
    layers: int = 1
    draft_vocab: int = 4096
    steps: int = 1000  # the shipped drafter's: ~6 passes over 2,432 answers
    tokens_per_batch: int = 2048
    lr: float = 3e-3
    warmup: int = 10
    # The target's final norm is scaled for its 30th layer's stream; after one layer it
    # makes confidently wrong logits (initial loss 16 against 6.7 at 0.2). Token drafters only.
    norm_scale: float = 0.2
    soft_weight: float = 0.5  # share of the soft (top-k) loss; the rest is the argmax CE
    holdout: float = 0.05  # share of greedy answers kept out for evaluation
    checkpoint_every: int = 50
    seed: int = 0
    # Drafters that read the target's hidden states (EAGLE-style) only:
    reads_target_states: bool = False
    state_weight: float = 1.0  # weight of the state-prediction loss beside the token loss
    state_noise: float = 0.0  # uniform noise on input states: drafting reads predicted ones
    # Drafting steps trained per batch (training-time test, see `drafting_passes`): pass j
    # is the (j+1)-th drafted token, reading predicted states as drafting does.
    unroll: int = 1


def init_from_target(target, cfg: DraftConfig, vocab: list[int], norm_scale: float = 1.0) -> DraftModel:
    """Layers from the target's first layers, final norm and head rows from the target
    (its head is its embedding table), so training starts near the target's own view."""
    embed = target.get_input_embeddings().weight.detach().float()
    model = DraftModel(cfg, embed, torch.tensor(vocab))
    base = target.model
    for i, layer in enumerate(model.layers):
        src = base.layers[i]
        pairs = {"input_layernorm": src.input_layernorm, "post_attention_layernorm": src.post_attention_layernorm,
                 "q_proj": src.self_attn.q_proj, "k_proj": src.self_attn.k_proj, "v_proj": src.self_attn.v_proj,
                 "o_proj": src.self_attn.o_proj, "gate_proj": src.mlp.gate_proj, "up_proj": src.mlp.up_proj,
                 "down_proj": src.mlp.down_proj}
        for name, module in pairs.items():
            getattr(layer, name).weight.data.copy_(module.weight.detach().float())
    head = target.get_output_embeddings().weight.detach().float()
    model.head.weight.data.copy_(head[torch.tensor(vocab)])
    if cfg.reads_target_states:
        # Its output is a prediction of the target's normed state, read by the target's
        # own output rows (kept frozen, as EAGLE does): the target's norm fits unscaled.
        norm_scale = 1.0
        model.head.weight.requires_grad_(False)
        # Start as "the next state is this state": the fused input is the target's state.
        h = cfg.hidden_size
        model.fuse.weight.data.zero_()
        model.fuse.weight.data[:, h:] = torch.eye(h)
    model.norm.weight.data.copy_(base.norm.weight.detach().float() * norm_scale)
    return model.float()


@dataclass
class Example:
    inputs: list[int]  # prompt + answer without its last token
    start: int  # first input position whose prediction is trained (last prompt token)
    hard: torch.Tensor  # [n] draft indices (-100 outside the draft vocabulary)
    soft_ids: torch.Tensor  # [n, k] draft indices (-100 outside)
    soft_p: torch.Tensor  # [n, k] target probabilities, renormalised over the kept ones
    # Drafters that read target states: [len(inputs) + 1, hidden] target states, where
    # input position i reads row i and predicts row i + 1.
    states: torch.Tensor | None = None


def make_example(rec: dict, table: torch.Tensor, states: torch.Tensor | None = None) -> Example:
    """A token drafter reads token i and predicts the target's choice after it. A state
    drafter reads (state i, token i+1), so its inputs start one token later and each
    prediction sits one position earlier."""
    prompt, answer = rec["prompt"], rec["answer"]
    hard = table[torch.tensor(rec["labels"], dtype=torch.long)]
    soft_ids = table[rec["top_ids"].long()]
    p = rec["top_logprobs"].float().exp() * (soft_ids >= 0)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-9)
    seq = prompt + answer
    if states is None:
        return Example(seq[:-1], len(prompt) - 1, hard, soft_ids, p)
    return Example(seq[1:], len(prompt) - 2, hard, soft_ids, p, states)


def batches(examples: list[Example], tokens_per_batch: int, rng: random.Random) -> list[list[Example]]:
    """Length-sorted groups (little padding), in a shuffled order."""
    groups = length_groups(examples, lambda e: len(e.inputs), tokens_per_batch)
    rng.shuffle(groups)
    return groups


def collate(group: list[Example]):
    width = max(len(e.inputs) for e in group)
    k = group[0].soft_ids.shape[1]
    ids = torch.zeros(len(group), width, dtype=torch.long)
    hard = torch.full((len(group), width), -100, dtype=torch.long)
    soft_ids = torch.full((len(group), width, k), -100, dtype=torch.long)
    soft_p = torch.zeros(len(group), width, k)
    batch = {"ids": ids, "hard": hard, "soft_ids": soft_ids, "soft_p": soft_p}
    if group[0].states is not None:
        hidden = group[0].states.shape[1]
        batch["states_in"] = torch.zeros(len(group), width, hidden)
        batch["states_next"] = torch.zeros(len(group), width, hidden)
        batch["valid"] = torch.zeros(len(group), width, dtype=torch.bool)
    for row, e in enumerate(group):
        n = len(e.hard)
        ids[row, : len(e.inputs)] = torch.tensor(e.inputs)
        # Right padding: causal attention never lets a real position see a pad.
        hard[row, e.start:e.start + n] = e.hard
        soft_ids[row, e.start:e.start + n] = e.soft_ids
        soft_p[row, e.start:e.start + n] = e.soft_p
        if e.states is not None:
            m = len(e.inputs)
            batch["states_in"][row, :m] = e.states[:m].float()
            batch["states_next"][row, :m] = e.states[1:m + 1].float()
            batch["valid"][row, :m] = True
    return batch


def loss_fn(model: DraftModel, batch: dict, s: TrainSettings) -> tuple[torch.Tensor, float]:
    """Token loss, and for a state drafter the state loss too, averaged over `s.unroll`
    drafting steps (`drafting_passes`). Reports the first step's agreement."""
    if not model.cfg.reads_target_states:
        return token_loss(model, model.features(batch["ids"]), batch, s.soft_weight)
    states = batch["states_in"]
    if s.state_noise:
        states = states + (torch.rand_like(states) * 2 - 1) * s.state_noise
    total, first_acc = 0.0, 0.0
    valid = batch["valid"]
    for step, predicted in enumerate(drafting_passes(model, batch["ids"], states, s.unroll)):
        loss, acc = token_loss(model, predicted, batch, s.soft_weight)
        loss = loss + s.state_weight * F.smooth_l1_loss(predicted[valid], batch["states_next"][valid])
        total = total + loss
        first_acc = acc if step == 0 else first_acc
    return total / s.unroll, first_acc


def _drafting_mask(n: int, j: int, device) -> torch.Tensor:
    """[n, (j+1)n]: query i sees pass 0's keys at <= i-j, pass p's only at i-j+p."""
    ones = torch.ones(n, n, dtype=torch.bool, device=device)
    return torch.cat([ones.tril(-j)] + [ones.tril(p - j).triu(p - j) for p in range(1, j + 1)], dim=1)


def drafting_passes(model: DraftModel, ids: torch.Tensor, states: torch.Tensor, passes: int) -> list[torch.Tensor]:
    """A state drafter's predicted states for its 1st..passes-th drafted token at every
    position at once (EAGLE-3's training-time test).

    When drafting, the j-th token's pair reads the state the drafter predicted one
    pair earlier, and attends to pairs built from the target's real states for the
    context plus the drafter's own pairs of this round. Pass j (0-based) reproduces
    that for every position i: its pair reads pass j-1's prediction at i-1, and sees
    pass 0's keys (real states) at positions <= i-j and pass p's key at i-j+p for
    p = 1..j: the chain of pairs a round starting after position i-j builds. Unrolling
    passes over all-predicted contexts instead trains on contexts drafting never sees.
    """
    n = ids.shape[1]
    reading = states
    cos, sin = model.rope(0, n, model.compute_dtype)
    keys: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in model.layers]
    out = []
    for j in range(passes):
        x = model.inputs(ids, reading)
        for layer, past in zip(model.layers, keys):
            q, k, v = layer.project(x, cos, sin)
            past.append((k, v))
            if j == 0:  # plain causal attention over real-state pairs
                x = layer.finish(x, q, k, v, None, True)
            else:
                x = layer.finish(x, q, torch.cat([kv[0] for kv in past], dim=2),
                                 torch.cat([kv[1] for kv in past], dim=2), _drafting_mask(n, j, ids.device), False)
        predicted = model.norm(x)
        out.append(predicted)
        reading = torch.cat([states[:, :1], predicted[:, :-1]], dim=1)
    return out


def token_loss(model: DraftModel, hidden: torch.Tensor, batch: dict, soft_weight: float) -> tuple[torch.Tensor, float]:
    """Loss over the answer positions only: the output layer, the costliest part, is
    not run on prompt positions or padding."""
    hard, soft_ids, soft_p = batch["hard"], batch["soft_ids"], batch["soft_p"]
    mask = hard >= 0
    mask |= soft_p.sum(-1) > 0
    logp = torch.log_softmax(model.head(hidden[mask]).float(), dim=-1)
    hard, soft_ids, soft_p = hard[mask], soft_ids[mask], soft_p[mask]
    hard_loss = F.nll_loss(logp, hard, ignore_index=-100) if (hard >= 0).any() else logp.sum() * 0
    picked = logp.gather(-1, soft_ids.clamp_min(0)) * (soft_ids >= 0)
    soft_loss = -(picked * soft_p).sum(-1).mean()
    known = hard >= 0
    acc = (logp.argmax(-1)[known] == hard[known]).float().mean().item() if known.any() else 0.0
    return (1 - soft_weight) * hard_loss + soft_weight * soft_loss, acc


def lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: DraftModel, examples: list[Example], s: TrainSettings, checkpoint: Path,
          on_step: Callable[[int, float, float], None] | None = None) -> DraftModel:
    """Train for s.steps batches; epoch e's batch order comes from (seed, e), so the
    step count alone says where a resumed run picks up."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr, weight_decay=0.0)
    step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["settings"] != asdict(s) or state["examples"] != len(examples):
            raise ValueError(f"{checkpoint} was written for other settings or data; remove it to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    per_epoch = len(batches(examples, s.tokens_per_batch, random.Random(0)))
    model.train()
    while step < s.steps:
        epoch, offset = divmod(step, per_epoch)
        groups = batches(examples, s.tokens_per_batch, random.Random(s.seed * 1000 + epoch))
        for group in groups[offset:]:
            if step >= s.steps:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, s)
            loss, acc = loss_fn(model, collate(group), s)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if on_step:
                on_step(step, loss.item(), acc)
            if step % s.checkpoint_every == 0 or step == s.steps:
                _save_checkpoint(checkpoint, model, opt, step, len(examples), s)
    model.eval()
    return model


def _save_checkpoint(path: Path, model, opt, step: int, n_examples: int, s: TrainSettings) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "examples": n_examples, "settings": asdict(s)}, tmp)
    tmp.replace(path)  # a checkpoint is either whole or the previous one


@dataclass
class RoundTally:
    """Greedy rounds along a held-out answer: each drafts k (the engine drafts k
    whatever follows), accepts the agreeing run n and adds one target token (fewer at
    the answer's end)."""
    k: int
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    tokens: int = 0

    def round(self, n: int, remaining: int) -> int:
        """Count a round that accepted n drafts; return the tokens it moved on by."""
        step = min(n + 1, remaining)
        self.drafted, self.accepted, self.rounds, self.tokens = \
            self.drafted + self.k, self.accepted + n, self.rounds + 1, self.tokens + step
        return step

    def figures(self) -> dict:
        return {f"acceptance_k{self.k}": self.accepted / max(self.drafted, 1),
                f"tokens_per_round_k{self.k}": self.tokens / max(self.rounds, 1)}


@torch.no_grad()
def evaluate(model: DraftModel, records: list[dict], table: torch.Tensor, k: int = 4,
             use_lookup: bool = False) -> dict:
    """Greedy acceptance the drafter would get on held-out greedy answers.

    Under greedy verification the context of every round is the target's own greedy
    answer, so teacher-forced agreement decides acceptance exactly: a round starting
    at position i accepts the run of agreeing positions from i, at most k, and adds
    one target token. (Numerics of a bf16 target may pick other ties; that is all.)
    """
    model.eval()
    tally = RoundTally(k)
    agree_total = positions = 0
    for rec in records:
        ex = make_example(rec, table)
        logits = model(torch.tensor([ex.inputs]))[0, ex.start:ex.start + len(ex.hard)]
        predicted = model.vocab_ids[logits.argmax(-1)].tolist()
        if use_lookup:
            seq = ex.inputs
            copied = [lookup(seq[: ex.start + j + 1]) for j in range(len(predicted))]
            predicted = [c if c is not None else p for c, p in zip(copied, predicted)]
        agree = [p == t for p, t in zip(predicted, rec["labels"])]
        agree_total += sum(agree)
        positions += len(agree)
        i = 0
        while i < len(agree):
            n = 0
            while n < k and i + n < len(agree) and agree[i + n]:
                n += 1
            i += tally.round(n, len(agree) - i)
    return {"token_agreement": agree_total / max(positions, 1), **tally.figures(), "answers": len(records)}


@torch.no_grad()
def evaluate_state_drafter(model: DraftModel, records: list[dict], states: list[torch.Tensor], k: int = 4,
                           use_lookup: bool = False) -> dict:
    """Greedy acceptance of a state drafter on held-out greedy answers, by running the
    engine's FeatureDrafter round by round: it drafts k tokens from the target states
    known so far (its later drafts read its own predicted states, as in the engine),
    the agreeing run is accepted, and the states of the accepted positions are handed
    over as a verify pass would."""
    from specchat.engine.drafters.states_reading import FeatureDrafter
    from specchat.engine.loop.sampling import SamplingSettings

    model.eval()
    greedy = SamplingSettings(temperature=0.0)
    tally = RoundTally(k)
    first = agree = positions = 0
    for rec, rec_states in zip(records, states):
        drafter = FeatureDrafter(model, "eval", use_lookup=use_lookup)
        seq, p, labels = rec["prompt"] + rec["answer"], len(rec["prompt"]), rec["labels"]
        # Teacher-forced: every pair reads the target's real state (the first draft of a round).
        hidden = model.features(torch.tensor([seq[1:]]), None, rec_states[None, :-1])[0, p - 2:p - 2 + len(labels)]
        predicted = model.vocab_ids[model.head(hidden).argmax(-1)].tolist()
        agree += sum(a == b for a, b in zip(predicted, labels))
        positions += len(labels)
        drafter.take_target_states(0, rec_states[: p - 1])
        j = 0  # answer position the round starts at
        while j < len(labels):
            proposal = drafter.propose(seq[: p + j], k, greedy, None)
            n = 0
            while n < len(proposal.ids) and j + n < len(labels) and proposal.ids[n] == labels[j + n]:
                n += 1
            first += n > 0
            step = tally.round(n, len(labels) - j)
            drafter.take_target_states(p + j - 1, rec_states[p + j - 1:p + j - 1 + step])
            j += step
    return {"token_agreement": agree / max(positions, 1), "round_first_agreement": first / max(tally.rounds, 1),
            **tally.figures(), "answers": len(records)}
