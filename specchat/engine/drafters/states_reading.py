"""A drafter that reads the target's hidden states (EAGLE-style).

The target's last hidden state at a position (after the final norm: what its output
layer reads) already says most of what comes next. This drafter's input at position i
is the pair (state_i, token_{i+1}); its output is a prediction of state_{i+1}, which its
output layer (rows of the target's own, over the draft vocabulary) turns into a guess
at token_{i+2}. To draft further it feeds its own predicted state back in.

The target hands its states over after every pass (`take_target_states`): the
prompt's at prefill, and after each verification those of the last verified token and
the accepted drafts. The drafter keeps them by position. Its own KV cache only ever
holds pairs built from real target states; the pairs made while drafting (from its
own predictions) are dropped at the end of each proposal and rebuilt from the
target's states once they are known.
"""

from __future__ import annotations

from typing import Callable

import torch

from specchat.engine.drafters.draft_model import DraftModel
from specchat.engine.drafters.drafting import draft_run
from specchat.engine.drafters.protocol import Proposal
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.model.forward import common_prefix
from specchat.engine.model.kv_cache import KVCache


class TargetStates:
    """The target's hidden states by position, for the verified sequence's prefix."""

    def __init__(self, hidden: int, dtype: torch.dtype, device) -> None:
        self.rows = torch.zeros(256, hidden, dtype=dtype, device=device)
        self.known = 0  # states for positions [0, known) are held

    def put(self, start: int, states: torch.Tensor) -> None:
        if start > self.known:
            raise ValueError(f"target states from position {start} leave a gap after {self.known}")
        end = start + states.shape[0]
        if end > self.rows.shape[0]:
            grown = self.rows.new_zeros(max(end, 2 * self.rows.shape[0]), self.rows.shape[1])
            grown[: self.known] = self.rows[: self.known]
            self.rows = grown
        self.rows[start:end] = states.to(self.rows.dtype)
        self.known = end  # anything after a rewritten position belonged to another sequence


class FeatureDrafter:
    """The Drafter protocol over a `DraftModel` with reads_target_states, plus the
    same prompt lookup as TrainedDrafter (a copied continuation first)."""

    kind = "model"
    calibration = None  # as TrainedDrafter's: set by load_trained_drafter
    load_notes: tuple[str, ...] = ()
    reads_target_states = True

    def __init__(self, model: DraftModel, name: str, chunk: int = 512, use_lookup: bool = True) -> None:
        self.model = model
        self.name = name
        self.chunk = chunk
        self.use_lookup = use_lookup
        self.reset()

    def reset(self) -> None:
        model = self.model
        self._cache = KVCache(model.cfg.num_layers)
        self._pairs: list[int] = []  # token of each cached pair (pair i holds token i+1)
        self._states = TargetStates(model.cfg.hidden_size, model.compute_dtype, model.device)

    def take_target_states(self, start: int, states: torch.Tensor) -> None:
        """The target's hidden states for positions start.. of the verified sequence."""
        self._states.put(start, states)
        # A pair reads the state before its token: pairs from `start` on are stale.
        self._cache.truncate(start)
        del self._pairs[start:]

    def prefill(self, tokens: list[int]) -> None:
        self._feed(tokens, want_output=False)

    @torch.inference_mode()
    def _feed(self, tokens: list[int], want_output: bool) -> torch.Tensor | None:
        """Make the cache hold the pairs (state_i, token_{i+1}) for every i the target
        has a state for; return the predicted state after the last token when that
        pair is the final one (the only one a draft can start from)."""
        usable = min(len(tokens) - 1, self._states.known)
        if usable < 0 or (want_output and usable < len(tokens) - 1):
            return None
        common = common_prefix(self._pairs, tokens[1:], limit=usable - (1 if want_output else 0))
        self._cache.truncate(common)
        del self._pairs[common:]
        device = self.model.device
        output = None
        for start in range(common, usable, self.chunk):
            end = min(start + self.chunk, usable)
            ids = torch.tensor([tokens[start + 1:end + 1]], device=device)
            hidden = self.model.features(ids, self._cache, self._states.rows[None, start:end])
            self._pairs.extend(tokens[start + 1:end + 1])
            output = hidden[0, -1]
        self.catchup = usable - common
        return output

    @torch.inference_mode()
    def propose(self, tokens: list[int], k: int, sampling: SamplingSettings,
                generator: torch.Generator | None, spare: int = 0,
                more: Callable[[list[float]], bool] | None = None) -> Proposal:
        if k <= 0:
            return Proposal()
        hidden = self._feed(tokens, want_output=True)
        if hidden is None:  # the target's states do not reach the end: nothing to draft from
            return Proposal()
        real = self._cache.length
        proposal = draft_run(self.model, hidden, self.model.head, self._step, tokens, k, sampling, generator,
                             self.use_lookup, self.catchup, spare, more)
        self._cache.truncate(real)  # drop the pairs built on predicted states
        return proposal

    def _step(self, drafted: list[int], hidden: torch.Tensor) -> torch.Tensor:
        """Each next pair reads the drafter's own predicted state: one pass a token."""
        for token in drafted:
            ids = torch.tensor([[token]], device=self.model.device)
            hidden = self.model.features(ids, self._cache, hidden[None, None])[0, -1]
        return hidden
