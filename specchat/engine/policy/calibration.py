"""How often a drafter's drafts hold, by its own probability p of them.

`Calibration` is P(a candidate is the target's token | the drafts before it held),
by p in tenths, with a bucket of its own for certain drafts (prompt-lookup copies
have p = 1). The k auto rule (policy/draft_length.py) keeps one per conversation, decayed
so recent rounds weigh most.

`specchat distill` measures one for the drafter it wrote, on prompts it did not
train on, and saves it beside the weights as calibration.json; the rule starts
from it, so a fresh process's first answer drafts as well as a later one. Without
the file (or with a bad one) the rule starts from the drafter's own p.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKETS = 10  # p in [0, 1) by tenths, then one bucket for certain drafts
CERTAIN = 0.9999
_DECAY = 0.99  # per drafting round (~100 rounds): each round fills only a few buckets
_PRIOR_STRENGTH = 2.0  # a bucket's prior, in observations, centred on the drafter's own p
# A measured calibration counts as this many observations per bucket at most, so the
# conversation's own rounds take over within a few dozen rounds.
SEED_WEIGHT = 20.0
FILE_NAME = "calibration.json"
FORMAT = 1


def bucket(p: float) -> int:
    return BUCKETS if p >= CERTAIN else min(int(p * BUCKETS), BUCKETS - 1)


def bucket_labels() -> list[str]:
    return [f"{b / BUCKETS:.1f}-{(b + 1) / BUCKETS:.1f}" for b in range(BUCKETS)] + ["copy (p = 1)"]


@dataclass
class Calibration:
    """Decayed counts per bucket: candidates judged, and of those the target's token."""

    accepted: list[float] = field(default_factory=lambda: [0.0] * (BUCKETS + 1))
    tried: list[float] = field(default_factory=lambda: [0.0] * (BUCKETS + 1))

    def decay(self) -> None:
        self.tried[:] = [t * _DECAY for t in self.tried]
        self.accepted[:] = [a * _DECAY for a in self.accepted]

    def add(self, p: float, accepted: bool) -> None:
        self.tried[bucket(p)] += 1.0
        self.accepted[bucket(p)] += float(accepted)

    def add_run(self, drafted) -> int | None:
        """Judge a round's drafted run (DraftedTokens) up to its first rejected draft:
        past it nothing was reached. Returns the rejected position, or None."""
        for i, token in enumerate(drafted):
            self.add(token.p, token.accepted)
            if not token.accepted:
                return i
        return None

    def rate(self, p: float) -> float:
        return self._bucket_rate(bucket(p))

    def best_rate(self) -> float:
        return max(self._bucket_rate(b) for b in range(BUCKETS + 1))

    def _bucket_rate(self, b: int) -> float:
        prior = min((b + 0.5) / BUCKETS, 0.9)  # the drafter's own p, until measured
        return (self.accepted[b] + _PRIOR_STRENGTH * prior) / (self.tried[b] + _PRIOR_STRENGTH)

    def seed(self, weight: float = SEED_WEIGHT) -> Calibration:
        """A copy to start a conversation from: each bucket's rate kept, its count
        capped at `weight` observations."""
        tried, accepted = [], []
        for t, a in zip(self.tried, self.accepted):
            scale = min(1.0, weight / t) if t > 0 else 0.0
            tried.append(t * scale)
            accepted.append(a * scale)
        return Calibration(accepted=accepted, tried=tried)

    def to_dict(self) -> dict[str, Any]:
        return {"buckets": bucket_labels(), "tried": self.tried, "accepted": self.accepted,
                "rate": [round(self._bucket_rate(b), 4) for b in range(BUCKETS + 1)]}


class CalibrationError(Exception):
    """A calibration file that cannot be used; the message is one line."""


def write_calibration(directory: Path, calibration: Calibration, measured: dict[str, Any]) -> Path:
    path = Path(directory) / FILE_NAME
    data = {"format": FORMAT, **calibration.to_dict(), "measured": measured}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def read_calibration(directory: Path) -> Calibration:
    """The calibration saved beside a drafter's weights; CalibrationError when it is
    missing or unreadable (the caller warns and starts cold)."""
    path = Path(directory) / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path} is unreadable ({type(exc).__name__})") from None
    try:
        if data["format"] != FORMAT:
            raise CalibrationError(f"{path} has format {data['format']!r}, not {FORMAT}")
        tried = [float(x) for x in data["tried"]]
        accepted = [float(x) for x in data["accepted"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path} lacks its counts ({type(exc).__name__}: {exc})") from None
    if len(tried) != BUCKETS + 1 or len(accepted) != BUCKETS + 1 or \
            any(a < 0 or a > t for a, t in zip(accepted, tried)):
        raise CalibrationError(f"{path} holds counts that are not {BUCKETS + 1} buckets of accepted <= tried")
    return Calibration(accepted=accepted, tried=tried)
