"""The Drafter protocol over a trained `DraftModel` (draft_model.py) that reads
tokens alone: its own KV cache, prompt lookup first, the model's logits elsewhere."""

from __future__ import annotations

from typing import Callable

import torch

from specchat.engine.drafters.draft_model import DraftModel
from specchat.engine.drafters.drafting import draft_run
from specchat.engine.drafters.protocol import Proposal
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.model.forward import common_prefix
from specchat.engine.model.kv_cache import KVCache
from specchat.engine.policy.calibration import Calibration


class TrainedDrafter:
    """The Drafter protocol over a `DraftModel` and its own KV cache, with prompt
    lookup first: where the context's last tokens occurred before, the continuation
    found there is proposed (see `lookup`), elsewhere the model's.

    Like ModelDrafter it is handed the whole verified sequence each round and keeps
    the ids its cache holds, so a rollback is a shorter common prefix (the cache only
    moves its length back) and a bonus token is caught up on the next call.
    """

    kind = "model"
    # How often its drafts hold by p (calibration.json beside the weights), which the
    # k auto rule starts from; and what loading it had to say (a missing calibration).
    calibration: Calibration | None = None
    load_notes: tuple[str, ...] = ()

    def __init__(self, model: DraftModel, name: str, chunk: int = 512, use_lookup: bool = True) -> None:
        self.model = model
        self.name = name
        self.chunk = chunk  # long prompts are fed in pieces to bound the attention mask
        self.use_lookup = use_lookup
        self.reset()

    def reset(self) -> None:
        model = self.model
        self._cache = KVCache(model.cfg.num_layers)
        self._cached: list[int] = []

    @torch.inference_mode()
    def _feed(self, tokens: list[int], want_logits: bool) -> torch.Tensor | None:
        """Make the cache hold `tokens`; return draft logits after the last of them.
        At least one token is re-fed when logits are wanted."""
        common = common_prefix(self._cached, tokens, limit=len(tokens) - (1 if want_logits else 0))
        self._cache.truncate(common)
        del self._cached[common:]
        fresh = tokens[common:]
        logits = None
        device = self.model.device
        for start in range(0, len(fresh), self.chunk):
            piece = fresh[start:start + self.chunk]
            logits = self.model(torch.tensor([piece], device=device), self._cache, logits_to_keep=1)
            self._cached.extend(piece)
        self.catchup = len(fresh)
        return None if logits is None else logits[0, -1]

    def prefill(self, tokens: list[int]) -> None:
        if len(tokens) > 1:
            self._feed(tokens[:-1], want_logits=False)

    @torch.inference_mode()
    def propose(self, tokens: list[int], k: int, sampling: SamplingSettings,
                generator: torch.Generator | None, spare: int = 0,
                more: Callable[[list[float]], bool] | None = None) -> Proposal:
        if k <= 0:
            return Proposal()
        logits = self._feed(tokens, want_logits=True)
        return draft_run(self.model, logits, lambda out: out, self._step, tokens, k, sampling, generator,
                         self.use_lookup, self.catchup, spare, more)

    def _step(self, drafted: list[int], _logits: torch.Tensor) -> torch.Tensor:
        """Feed drafted tokens (one pass); draft logits after the last."""
        logits = self.model(torch.tensor([drafted], device=self.model.device), self._cache, logits_to_keep=1)[0, -1]
        self._cached.extend(drafted)
        return logits
