"""A drafter's calibration, measured with the engine: P(accepted | reached) by its p.

The k auto rule decides from the drafter's p of each draft how far to draft and
what to verify (engine/policy/draft_length.py); what p means in acceptance it learns in
the conversation, and a fresh process starts from this measurement instead of
from p itself. It is taken the way a user's chat runs the pair: the target and the
drafter loaded with the defaults of this machine, greedy speculation at a fixed
k = 8 without alternatives (so every reached draft is judged), on prompts of the
distillation's kinds that it did not train on. Written beside the weights as
calibration.json; for the shipped drafter:

    specchat distill --calibrate specchat/weights/smoldraft
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from specchat.engine.cpu.machine import cpu_name
from specchat.engine.policy.calibration import Calibration, write_calibration

PROMPTS = 80
MAX_NEW_TOKENS = 64
K = 8
_SEED = 7  # the prompt set's seed; the training prompts (seed 0) are left out
_TRAINING_PROMPTS = 4864  # the most any distillation here used


def calibration_prompts(count: int = PROMPTS) -> list[str]:
    from specchat.distill.prompts import make_prompts

    trained_on = set(make_prompts(_TRAINING_PROMPTS, seed=0))
    fresh = [p for p in make_prompts(count * 4, seed=_SEED) if p not in trained_on]
    return fresh[:count]


def measure_calibration(target, drafter, prompts: list[str], on_prompt: Callable[[int], None] = lambda _i: None,
                        max_new_tokens: int = MAX_NEW_TOKENS) -> Calibration:
    """Counts (not decayed) over every round of every prompt, each in a fresh session."""
    from specchat.engine.loop.events import Round
    from specchat.engine.loop.session import ChatSession, GenerationSettings

    calibration = Calibration()
    settings = GenerationSettings(k=K, alternatives=0, temperature=0.0, max_new_tokens=max_new_tokens)
    for i, prompt in enumerate(prompts):
        drafter.reset()
        for event in ChatSession(target, drafter, settings=settings).send(prompt):
            if isinstance(event, Round):
                calibration.add_run(event.drafted)
        on_prompt(i + 1)
    return calibration


def calibrate(directory: Path, target_spec: str = "embedded", count: int = PROMPTS,
              max_new_tokens: int = MAX_NEW_TOKENS, log: Callable[[str], None] = print) -> Path:
    """Measure the drafter in `directory` against its target and write calibration.json."""
    from specchat.engine.drafters.loading import load_trained_drafter
    from specchat.models import load_target, trained_drafter_quant

    target = load_target(target_spec, progress=log)
    drafter = load_trained_drafter(target, directory, name=Path(directory).name,
                                   quant=trained_drafter_quant(None, target.device))
    prompts = calibration_prompts(count)
    started = time.time()
    calibration = measure_calibration(target, drafter, prompts, max_new_tokens=max_new_tokens,
                                      on_prompt=lambda i: log(f"calibrating: prompt {i} of {len(prompts)}"))
    measured = {
        "command": f"specchat distill --calibrate {directory} --calibration-prompts {count} "
                   f"--calibration-tokens {max_new_tokens}",
        "target": {"spec": target_spec, "name": target.name, "precision": target.precision},
        "prompts": len(prompts), "max_new_tokens": max_new_tokens, "k": K, "alternatives": 0,
        "cpu": cpu_name(), "seconds": round(time.time() - started, 1),
    }
    path = write_calibration(directory, calibration, measured)
    rates = ", ".join(f"{r:.2f}" for r in calibration.to_dict()["rate"])
    log(f"wrote {path}: acceptance by p bucket (tenths, then copies) {rates}")
    return path
