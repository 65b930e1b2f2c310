"""A repetition penalty (on the answer's own tokens) changes the target's answer;
speculation must give exactly the penalised answer (greedy) or distribution
(sampling), checked against transformers' own RepetitionPenaltyLogitsProcessor."""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.sampling import SamplingSettings, logits_to_probs, penalise_repeats, repeat_masks
from specchat.engine.loop.session import end_of_turn_ids
from specchat.models import load_drafter

from .helpers import decode_once, word_tokenizer
from .test_greedy_lossless import PROMPTS, _prompt_ids
from .helpers import sampled_marginals, total_variation

PENALTY = 1.3  # strong enough to change the embedded target's greedy answers
NEW_TOKENS = 40


def test_masks_mark_each_rows_own_prefix_and_the_penalty_matches_transformers():
    masks = repeat_masks([1, 2], [[], [3], [3, 4], [5]], vocab_size=6, device=torch.device("cpu"))
    assert masks.tolist() == [[False, True, True, False, False, False],
                              [False, True, True, True, False, False],
                              [False, True, True, True, True, False],
                              [False, True, True, False, False, True]]
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0, 0.0]])
    expected = RepetitionPenaltyLogitsProcessor(PENALTY)(torch.tensor([[1, 3, 4]]), logits.clone())
    seen = repeat_masks([1, 3, 4], [[]], 6, torch.device("cpu"))
    assert torch.allclose(penalise_repeats(logits, seen, PENALTY), expected)
    assert penalise_repeats(logits, seen, 1.0) is logits


def _penalised_reference(embedded, prompt: list[int]) -> tuple[list[int], list[int]]:
    """transformers' greedy answer with the penalty on the answer's tokens, and without."""
    eos = sorted(end_of_turn_ids(embedded.model, embedded.tokenizer))
    answers = []
    for penalty in (PENALTY, 1.0):
        process = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=len(prompt))])
        out = embedded.model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                      logits_processor=process, eos_token_id=eos)
        ids = out[0, len(prompt):].tolist()
        answers.append(next((ids[: i + 1] for i, t in enumerate(ids) if t in eos), ids))
    return answers[0], answers[1]


def test_greedy_speculation_gives_the_penalised_targets_answer(embedded):
    settings = SamplingSettings(temperature=0.0, repetition_penalty=PENALTY)
    eos = end_of_turn_ids(embedded.model, embedded.tokenizer)
    shipped = load_drafter("smoldraft", embedded)
    changed = 0
    for text in PROMPTS[1:]:
        prompt = _prompt_ids(embedded, text)
        expected, unpenalised = _penalised_reference(embedded, prompt)
        changed += expected != unpenalised
        itself = ModelDrafter(embedded.model, name="self", vocab_size=49152)
        for drafter, k, spare in [(NoDrafter(), 0, 0), (NgramDrafter(), 4, 0), (itself, 4, 0),
                                  (shipped, 4, 3)]:
            state, rounds, _ = decode_once(embedded.model, embedded.tokenizer, drafter, prompt, k=k,
                                           new_tokens=NEW_TOKENS, sampling=settings, eos_ids=eos, spare=spare)
            assert state.generated == expected, f"{drafter.name} left the penalised target's answer"
            if drafter is itself:
                # It penalises its drafts as the target does each row: it is always right.
                assert all(t.accepted for r in rounds for t in r.drafted)
    assert changed, "the penalty must change an answer, or this test could not fail"


def test_sampling_keeps_the_penalised_targets_distribution(tiny_llama):
    vocab, penalty = 12, 10.0
    target, draft_model = tiny_llama(vocab, seed=0), tiny_llama(vocab, seed=7)
    for model in (target, draft_model):
        model.lm_head.weight.data.mul_(6.0)
    drafter = ModelDrafter(draft_model, name="tiny-draft", vocab_size=vocab)
    prompt = [3, 1, 4, 1, 5]
    # The exact distribution of the first two tokens, penalised by transformers' processor
    # (the prompt exempt: the first token is not penalised, the second only for repeating it).
    process = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=len(prompt))
    plain = SamplingSettings(temperature=1.0)
    with torch.inference_mode():
        exact_first = logits_to_probs(target(torch.tensor([prompt])).logits[0, -1], plain)
        batch = torch.tensor([prompt + [t] for t in range(vocab)])
        raw = target(batch).logits[:, -1]
        second_given = logits_to_probs(process(batch, raw.clone()), plain)
        exact_second = exact_first @ second_given
        exact_repeat = float(exact_first @ second_given.diagonal())  # P(second token == first)
        plain_repeat = float(exact_first @ logits_to_probs(raw, plain).diagonal())
    assert plain_repeat - exact_repeat > 0.05  # what the penalty changes, and the test measures
    n, repeats = 1200, []
    settings = SamplingSettings(temperature=1.0, repetition_penalty=penalty)
    first, second = sampled_marginals(target, drafter, word_tokenizer(vocab), prompt, settings, n, pairs=repeats)
    bound = 0.07  # noise at n=1200 over 12 tokens is ~0.03
    assert total_variation(first, exact_first) < bound
    assert total_variation(second, exact_second) < bound
    assert abs(sum(repeats) / n - exact_repeat) < 0.03  # noise ~0.008
