"""The draft → verify → accept loop.

State between rounds: `tokens`, the whole verified sequence; the target's KV cache
holds every token but the last one. A round:

1. the drafter proposes up to k tokens after `tokens`, and the draft-length policy
   keeps the first few of them, d1..dk (policy/draft_length.py);
2. one target forward over [last, d1..dk] gives k+1 distributions;
3. `sampling.verify` accepts a prefix d1..dn and yields the target's own next token
   (the correction, or the bonus after full acceptance);
4. the target cache is cropped by k − n (it now ends just before the new last
   token); model drafters resynchronise themselves next round.

Greedy rounds may also verify alternatives (other candidates at drafted positions)
in the same pass; see loop/alternatives.py.

With NoDrafter every round is one plain decoding step through the same code, which
is what makes it an honest baseline.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
from transformers import PreTrainedModel

from specchat.engine.drafters.protocol import Drafter
from specchat.engine.loop.alternatives import accepted_rows, forward_with_alternatives, verify_greedy
from specchat.engine.loop.detok import IncrementalDecoder
from specchat.engine.loop.events import AlternativeToken, DraftedToken, EmittedToken, FinishReason, Round
from specchat.engine.loop.sampling import SamplingSettings, logits_to_probs, penalise_repeats, repeat_masks, verify
from specchat.engine.model.forward import StateTap, forward_logits, output_vocab_size, sync_cache
from specchat.engine.model.kv_cache import KVCache
from specchat.engine.policy.draft_length import AdaptiveK, FixedK


def clock(device: torch.device) -> float:
    # CUDA kernels run asynchronously: without a sync the timings would be launch times.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def prefill(model: PreTrainedModel, cache: KVCache, cached: list[int], drafter: Drafter,
            prompt: list[int]) -> int:
    """Bring the target's cache to prompt[:-1] (keeping the longest common prefix with
    what it holds, `cached`) and the drafter up to the prompt; a drafter that reads
    the target's states gets those of the positions fed. Returns how many tokens the
    target was fed (the rest were reused)."""
    reads_states = getattr(drafter, "reads_target_states", False)
    with StateTap(model, enabled=reads_states) as tap:
        _, fed = sync_cache(model, cache, cached, prompt[:-1], keep=0)
    if reads_states and fed:
        drafter.take_target_states(len(prompt) - 1 - fed, tap.states())
    drafter.prefill(prompt)
    return fed


@dataclass
class DecodeState:
    """What a turn's decoding produced so far; read by the session after the loop."""

    tokens: list[int]  # verified sequence: prompt + generated
    prompt_len: int
    text: str = ""
    finish_reason: FinishReason | None = None
    rounds: int = 0

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len:]


@dataclass
class StopRules:
    eos_ids: frozenset[int]
    stop_strings: tuple[str, ...] = ()
    max_new_tokens: int = 512
    max_total_tokens: int = 1 << 30  # the model's context length


class SpeculativeDecoder:
    def __init__(self, model: PreTrainedModel, cache: KVCache, cached: list[int], drafter: Drafter,
                 decoder: IncrementalDecoder, sampling: SamplingSettings,
                 policy: AdaptiveK | FixedK, rules: StopRules,
                 generator: torch.Generator | None, cancel: threading.Event,
                 spare: Callable[[int], int] = lambda k: 0) -> None:
        # `cached` mirrors the ids whose keys and values the target cache holds.
        self.model, self.cache, self.cached, self.drafter = model, cache, cached, drafter
        self.decoder, self.sampling, self.policy, self.rules = decoder, sampling, policy, rules
        self.generator, self.cancel = generator, cancel
        # Alternatives to ask for beside a run of k (greedy rounds only).
        self.spare = spare if sampling.greedy else (lambda k: 0)
        self.vocab_size = output_vocab_size(model)

    def run(self, state: DecodeState, turn: int) -> Iterator[Round]:
        """Yield one Round per speculation round until a stop rule or cancel fires.
        Sets state.finish_reason. The target cache must hold state.tokens[:-1]."""
        device = self.model.device
        reads_states = getattr(self.drafter, "reads_target_states", False)
        # The repetition penalty covers this turn's answer only.
        sampling = replace(self.sampling, penalty_start=state.prompt_len)
        while state.finish_reason is None:
            if self.cancel.is_set():
                state.finish_reason = "cancelled"
                return
            remaining = self.rules.max_new_tokens - len(state.generated)
            room = self.rules.max_total_tokens - len(state.tokens)
            if remaining <= 0 or room <= 0:
                state.finish_reason = "length"
                return
            # The round adds up to k+1 tokens; never draft past either limit.
            k = self.policy.choose(min(remaining, room) - 1)

            t0 = clock(device)
            # k is the cap: the policy may stop the drafter sooner and verify fewer.
            # Alternatives are asked for as if the run were one token long (the most
            # a run can have beside it) and trimmed once the run's length is known.
            proposal = self.drafter.propose(state.tokens, k, sampling, self.generator,
                                            spare=self.spare(min(k, 1)), more=self.policy.draft_more)
            if sampling.greedy:
                n, alternatives = self.policy.submit(proposal.p[:k], proposal.alternatives, self.spare)
            else:
                # Whether a sampled draft is verified may depend only on the drafts before
                # it (as draft_more's answers do): cutting it for its own p would verify
                # a draft not drawn from p, and the output would leave the target's
                # distribution (test_sampling_lossless measures it).
                n, alternatives = len(proposal.ids[:k]), []
            draft_ids = proposal.ids[:n]
            unverified = len(proposal.ids[:k]) - n
            t1 = clock(device)
            with StateTap(self.model, enabled=reads_states) as tap:
                if alternatives:
                    logits = forward_with_alternatives(self.model, self.cache, state.tokens[-1], draft_ids,
                                                       alternatives)
                else:
                    logits = forward_logits(self.model, self.cache, [state.tokens[-1], *draft_ids],
                                            keep=len(draft_ids) + 1)
            logits = logits[:, : self.vocab_size]
            if sampling.repetition_penalty != 1.0:
                # Each row by its own prefix: the run up to it, or an alternative's branch.
                branches = [draft_ids[:i] for i in range(len(draft_ids) + 1)]
                branches += [draft_ids[: a.position] + [a.token_id] for a in alternatives]
                seen = repeat_masks(state.generated, branches, logits.shape[-1], logits.device)
                logits = penalise_repeats(logits, seen, sampling.repetition_penalty)
            probs = logits_to_probs(logits, sampling)
            if alternatives:
                verdict, chosen = verify_greedy(draft_ids, alternatives, logits)
            else:
                dists = proposal.dists[: len(draft_ids)] if proposal.dists is not None else None
                verdict, chosen = verify(draft_ids, dists, logits, probs, sampling, self.generator), None
            # The pass's rows on the accepted branch: last, the accepted run, an accepted alternative.
            rows = accepted_rows(verdict.n_accepted, len(draft_ids), chosen)
            self.cache.keep_rows(len(state.tokens) - 1, rows)
            path = draft_ids[: verdict.n_accepted] + ([alternatives[chosen].token_id] if chosen is not None else [])
            self.cached[:] = state.tokens + path
            if reads_states:  # the states of the last token and the accepted drafts
                self.drafter.take_target_states(len(state.tokens) - 1, tap.states()[rows])
            t2 = clock(device)

            r = self._record(state, turn, k, draft_ids, proposal.p, alternatives, chosen, probs, rows[-1],
                             verdict, t1 - t0, t2 - t1, unverified)
            self.policy.observe(r, proposal.catchup_tokens)
            state.rounds += 1
            yield r

    def _record(self, state, turn, k, draft_ids, draft_p, alternatives, chosen, probs, emit_row, verdict,
                draft_s, verify_s, unverified=0) -> Round:
        """Append the round's new tokens to the state, apply the stop rules, and
        describe the round. Greedy rounds report plain-softmax p and q. `emit_row` is
        the row of probs the emitted token came from."""
        n = verdict.n_accepted
        peeked = self.decoder.peek(draft_ids)
        drafted = [
            DraftedToken(token_id=t, text=peeked[i], p=float(draft_p[i]) if i < len(draft_p) else 1.0,
                         q=float(probs[i, t]), accepted=i < n)
            for i, t in enumerate(draft_ids)
        ]
        offered = [
            AlternativeToken(position=a.position, token_id=a.token_id,
                             text=self.decoder.peek(draft_ids[: a.position] + [a.token_id])[-1], p=a.p,
                             q=float(probs[a.position, a.token_id]), accepted=j == chosen)
            for j, a in enumerate(alternatives)
        ]
        kind = "target" if not draft_ids else ("bonus" if verdict.bonus else "correction")
        emitted: EmittedToken | None = EmittedToken(
            token_id=verdict.next_token, text="", kind=kind, q=float(probs[emit_row, verdict.next_token]))
        # Each new token paired with the event entry that shows it.
        new = [(t, drafted[i]) for i, t in enumerate(draft_ids[:n])]
        new += [(a.token_id, a) for a in offered if a.accepted] + [(verdict.next_token, emitted)]
        for i, (token, slot) in enumerate(new):
            state.tokens.append(token)
            if token in self.rules.eos_ids:
                slot.text = ""  # an end-of-turn token is not part of the answer
                state.finish_reason = "eos"
            else:
                slot.text = self.decoder.push(token)
                state.text += slot.text
                if self._hit_stop(state, [entry for _, entry in new[: i + 1]]):
                    state.finish_reason = "stop"
                elif (len(state.generated) >= self.rules.max_new_tokens
                      or len(state.tokens) >= self.rules.max_total_tokens):
                    state.finish_reason = "length"
            if state.finish_reason is not None:
                if slot is not emitted:  # the turn ended inside the drafted run
                    emitted = None
                    if i < n:  # before the end of the accepted run: drop what comes after it
                        del drafted[i + 1:]
                        offered = [a for a in offered if a.position <= i and not a.accepted]
                break
        return Round(turn=turn, index=state.rounds, k=k, drafted=drafted, emitted=emitted,
                     draft_time_s=draft_s, verify_time_s=verify_s, alternatives=offered, unverified=unverified)

    def _hit_stop(self, state: DecodeState, entries: list) -> bool:
        """True when the answer now contains a stop string. The stop string is cut from
        the answer and, as far as they hold it, from this round's pieces (`entries`);
        a part shown in an earlier round stays shown."""
        newest = len(entries[-1].text)  # only a match that ends in the newest piece is new
        for stop in self.rules.stop_strings:
            at = state.text.find(stop, max(0, len(state.text) - newest - len(stop) + 1))
            if at < 0:
                continue
            excess = len(state.text) - at
            state.text = state.text[:at]
            for entry in reversed(entries):
                cut = min(excess, len(entry.text))
                entry.text = entry.text[: len(entry.text) - cut]
                excess -= cut
            return True
        return False
