"""A chat conversation on top of the speculative loop.

The session owns the history, renders it with the tokenizer's chat template,
keeps the target's KV cache across turns (only the new part of the conversation
is read each turn), and turns each `send()` into one stream of events:
TurnStart, Notice*, Round+, TurnEnd.

Whatever happens inside a turn, the history stays consistent: a cancelled or
failed answer is kept, marked with its status; after a failure the caches are
dropped and rebuilt from the history on the next turn.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from specchat.engine.drafters.protocol import Drafter
from specchat.engine.loop.alternatives import cheap_width, spare_for
from specchat.engine.loop.detok import IncrementalDecoder
from specchat.engine.loop.events import Event, Notice, Totals, TurnEnd, TurnStart
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.loop.speculative import DecodeState, SpeculativeDecoder, StopRules, clock, prefill
from specchat.engine.model.forward import kv_cache_label, new_cache
from specchat.engine.policy.costs import StepCosts
from specchat.engine.policy.draft_length import AdaptiveK, FixedK

# End-of-turn markers of common chat templates; whichever exist in the vocabulary stop a turn.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")
# Without a chat template we fall back to a plain transcript; a new speaker line ends the answer.
_PLAIN_STOPS = ("\nUser:", "\nSystem:")
_PASS_ROOM = 32  # positions a verify pass may write past the answer's last token (drafts and alternatives)


@dataclass
class GenerationSettings:
    k: int | None = None  # None = adaptive ("auto"); 0 = never draft
    max_k: int = 8
    # Alternatives verified beside each drafted run (greedy rounds): None = "auto", as
    # many as fill the verify pass to the device's cheap width (alternatives.cheap_width).
    alternatives: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                repetition_penalty=self.repetition_penalty)

    def validate(self) -> None:
        self.sampling().validate()
        if self.k is not None and self.k < 0:
            raise ValueError("k must be >= 0 or auto")
        if self.alternatives is not None and self.alternatives < 0:
            raise ValueError("alternatives must be >= 0 or auto")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str
    status: str = "complete"  # "complete" | "cancelled" | "error"


def end_of_turn_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    return frozenset(ids)


def context_length(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 4096)


class TurnRefused(Exception):
    """A turn the engine cannot run as asked; the message is for the user as it is."""


class ChatSession:
    def __init__(self, target: Any, drafter: Drafter, *, system_prompt: str | None = None,
                 settings: GenerationSettings | None = None, costs: StepCosts | None = None) -> None:
        self.target = target
        self.drafter = drafter
        self.system_prompt = system_prompt
        self.settings = settings or GenerationSettings()
        self.history: list[Message] = []
        self.turns = 0
        self._cancel = threading.Event()
        self._eos = end_of_turn_ids(target.model, target.tokenizer)
        self._ctx = context_length(target.model)
        self._cheap_width = cheap_width(target.model.device, getattr(target, "precision", ""))
        self._cache = new_cache(target.model)
        self._cached: list[int] = []  # ids whose keys/values self._cache holds
        self._policy: AdaptiveK | FixedK | None = None
        self._policy_key: tuple | None = None
        self._generator: torch.Generator | None = None
        self._seed_used: int | None = None
        # Measured step costs (warm_up, then the conversation's plain rounds): they seed
        # the k auto rule and give the speedup estimate its plain step.
        self.costs = costs or StepCosts()
        self.notes: list[str] = []  # warnings from loading, for the front end to show once

    def warm_up(self, progress=lambda _message: None) -> StepCosts:
        """Run and time the passes the k auto rule will use (policy/warmup.py), so the first
        answer starts from this machine's costs rather than from cold rounds."""
        from specchat.engine.policy.warmup import measure_costs

        self.costs = measure_costs(self.target, self.drafter, max_k=self.settings.max_k, width=self._cheap_width,
                                   spare=self._spare, progress=progress)
        self._policy = None
        return self.costs

    # -- conversation management ------------------------------------------------
    def cancel(self) -> None:
        """Stop the running turn at the next round boundary (thread-safe)."""
        self._cancel.set()

    def clear(self) -> None:
        self.history.clear()

    def set_system_prompt(self, text: str | None) -> None:
        self.system_prompt = text or None

    def set_drafter(self, drafter: Drafter) -> None:
        self.drafter = drafter
        self._policy = None
        if getattr(drafter, "reads_target_states", False):
            # It needs the target's states for the whole context, and only a target
            # pass makes them: the next prefill starts from scratch.
            self._drop_caches()

    def load_history(self, messages: list[Message]) -> None:
        self.history = [m for m in messages if m.role in ("user", "assistant")]

    # -- prompt rendering ---------------------------------------------------------
    def _messages(self, history: list[Message]) -> list[dict[str, str]]:
        """What the model reads. A turn that failed before answering anything (refused
        as too long, or the model failed at once) stays in the history but not here:
        the model would read a question with no answer, and a refused message would
        crowd the earlier exchanges out of every later prompt."""
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        unanswered = {i for i, m in enumerate(history)
                      if m.role == "assistant" and m.status == "error" and not m.content}
        unanswered |= {i - 1 for i in unanswered if i > 0 and history[i - 1].role == "user"}
        return out + [{"role": m.role, "content": m.content}
                      for i, m in enumerate(history) if i not in unanswered]

    def _render(self, history: list[Message]) -> list[int]:
        tok = self.target.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(self._messages(history), tokenize=False, add_generation_prompt=True)
        else:
            lines = [f"{m['role'].capitalize()}: {m['content']}" for m in self._messages(history)]
            text = "\n".join(lines) + "\nAssistant:"
        return tok(text, add_special_tokens=False)["input_ids"]

    def _fit_context(self, history: list[Message]) -> tuple[list[int], int]:
        """Prompt ids for the history, dropping the oldest exchanges until the prompt
        leaves room for an answer. Returns (ids, messages dropped)."""
        budget = self._ctx - min(self.settings.max_new_tokens, self._ctx // 4)
        dropped = 0
        ids = self._render(history)
        while len(ids) > budget and len(history) - dropped > 1:
            dropped += 2 if history[dropped].role == "user" and len(history) - dropped > 2 else 1
            ids = self._render(history[dropped:])
        if len(ids) >= self._ctx:
            # The newest message alone leaves no room for an answer. Cutting it would
            # answer a text the user did not send; they can shorten it themselves.
            raise TurnRefused(f"the message is too long: the prompt is {len(ids)} tokens and the "
                              f"model's context holds {self._ctx}, answer included")
        return ids, dropped

    def _policy_for_turn(self) -> AdaptiveK | FixedK:
        # The adaptive rule's measurements describe this hardware and drafter, so they
        # carry over between turns until either changes.
        key = (id(self.drafter), self.settings.k, self.settings.max_k)
        if self._policy is None or key != self._policy_key:
            k = 0 if self.drafter.kind == "none" else self.settings.k  # nothing to adapt
            self._policy = FixedK(k) if k is not None else AdaptiveK.seeded(
                self.settings.max_k, self.costs, self.drafter.name, getattr(self.drafter, "calibration", None))
            self._policy_key = key
        return self._policy

    def _spare(self, k: int) -> int:
        """Alternatives to verify beside a run of k this round (greedy rounds only)."""
        if not self.settings.sampling().greedy:
            return 0
        return spare_for(k, self.settings.alternatives, self._cheap_width)

    def _generator_for_turn(self) -> torch.Generator | None:
        seed = self.settings.seed
        if seed is None:
            return None
        if self._generator is None or self._seed_used != seed:
            self._generator = torch.Generator(device=self.target.model.device).manual_seed(seed)
            self._seed_used = seed
        return self._generator

    # -- one turn -------------------------------------------------------------------
    def send(self, user_text: str) -> Iterator[Event]:
        """Run one turn; yields TurnStart, Notice*, Round*, TurnEnd. Model failures
        end the turn with finish_reason "error" rather than raising; closing the
        generator early counts as cancelling."""
        self.settings.validate()
        self._cancel.clear()
        self.turns += 1
        turn = self.turns
        self.history.append(Message("user", user_text))
        # In the history from the start and updated every round, so a crash, a cancel
        # or an early close never loses what was shown.
        answer = Message("assistant", "", status="cancelled")
        self.history.append(answer)
        state: DecodeState | None = None
        totals = Totals()
        reason, error = "cancelled", None
        try:
            prompt, dropped = self._fit_context(self.history[:-1])
            del self.history[:dropped]
            start = self._prefill(turn, user_text, prompt)
            yield start
            if dropped:
                yield Notice(turn=turn, message=f"the conversation outgrew the model's context of "
                                                f"{self._ctx} tokens: the oldest {dropped} messages were left out")
            state = DecodeState(tokens=list(prompt), prompt_len=len(prompt))
            rounds = self._decoder().run(state, turn)
            while True:
                t0 = time.perf_counter()
                r = next(rounds, None)
                totals.elapsed_s += time.perf_counter() - t0  # engine time only, not the consumer's
                if r is None:
                    break
                totals.add_round(r)
                self.costs.observe(r)
                r.plain_step_s = self.costs.plain_step_s  # the estimate follows this turn's plain rounds too
                answer.content = state.text
                yield r
            reason = state.finish_reason or "cancelled"
        except GeneratorExit:
            raise
        except TurnRefused as exc:  # nothing ran, so the caches stay good
            reason, error = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - any model failure ends the turn, not the program
            reason, error = "error", _one_line(exc)
            self._drop_caches()
        finally:
            answer.content = state.text if state is not None else ""
            answer.status = reason if reason in ("cancelled", "error") else "complete"
        yield TurnEnd(turn=turn, finish_reason=reason, text=answer.content, totals=totals, error=error,
                      plain_step_s=self.costs.plain_step_s)

    def _prefill(self, turn: int, user_text: str, prompt: list[int]) -> TurnStart:
        """Bring both caches up to the prompt, reusing what earlier turns left."""
        model = self.target.model
        t0 = clock(model.device)
        # Room for the whole answer now, and for a verify pass past its end: growing
        # the cache mid-answer copies every layer (after a 3,500-token document ~40 MB,
        # a stall of ~10 ms that one-shot decoding there paid once per answer).
        self._cache.reserve(min(len(prompt) + self.settings.max_new_tokens, self._ctx) + _PASS_ROOM)
        fed = prefill(model, self._cache, self._cached, self.drafter, prompt)
        reused = len(prompt) - 1 - fed
        s = self.settings
        return TurnStart(turn=turn, target=self.target.name, drafter=self.drafter.name,
                         device=str(model.device), weights=getattr(self.target, "precision", ""),
                         kv_cache=kv_cache_label(model),
                         k=self._policy_for_turn().label(),
                         temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                         repetition_penalty=s.repetition_penalty,
                         max_new_tokens=s.max_new_tokens, prompt_tokens=len(prompt),
                         reused_tokens=reused, prefill_time_s=clock(model.device) - t0,
                         user_text=user_text, plain_step_s=self.costs.plain_step_s)

    def _decoder(self) -> SpeculativeDecoder:
        s = self.settings
        rules = StopRules(eos_ids=self._eos, stop_strings=tuple(s.stop) + self._template_stops(),
                          max_new_tokens=s.max_new_tokens, max_total_tokens=self._ctx)
        policy = self._policy_for_turn()
        policy.new_answer()
        return SpeculativeDecoder(self.target.model, self._cache, self._cached, self.drafter,
                                  IncrementalDecoder(self.target.tokenizer), s.sampling(),
                                  policy, rules, self._generator_for_turn(), self._cancel,
                                  spare=self._spare)

    def _template_stops(self) -> tuple[str, ...]:
        return () if getattr(self.target.tokenizer, "chat_template", None) else _PLAIN_STOPS

    def _drop_caches(self) -> None:
        self._cache = new_cache(self.target.model)
        self._cached = []
        self.drafter.reset()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
