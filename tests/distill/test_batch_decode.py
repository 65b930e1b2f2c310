"""Batched decoding for the distill data: every row is what decoding its prompt
alone gives, although prompts are prefilled one by one after a shared prefix,
stacked left-padded, and rows leave the batch as they end."""

from __future__ import annotations

import pytest
import torch

from specchat.distill.batch_decode import decode_batch

SHARED = [5, 9, 2, 7]  # like the chat template's system block
PROMPTS = [SHARED + [11, 3], SHARED + [40, 41, 42, 43, 44, 45, 46], SHARED + [8], SHARED + [30, 31, 32]]


@torch.inference_mode()
def alone(model, prompt: list[int], new_tokens: int, eos_id: int | None) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding of one prompt, the whole sequence re-fed every step (no cache,
    no padding): the reference. Returns the ids and the log-probs at each step."""
    ids, logprobs = list(prompt), []
    for _ in range(new_tokens):
        step = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        logprobs.append(step)
        ids.append(int(step.argmax()))
        if ids[-1] == eos_id:
            break
    return ids[len(prompt):], logprobs


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama(vocab_size=64, seed=4)


def test_greedy_rows_equal_each_prompt_decoded_alone_and_leave_when_they_end(model):
    # An eos that one row emits early, so the batch shrinks while others go on.
    eos = alone(model, PROMPTS[1], 3, None)[0][2]
    expected = [alone(model, p, 12, eos) for p in PROMPTS]
    lengths = [len(ids) for ids, _ in expected]
    assert min(lengths) < 12 and max(lengths) == 12

    answers = decode_batch(model, PROMPTS, max_new_tokens=12, eos_id=eos, top_k=5)

    for answer, (ids, logprobs) in zip(answers, expected):
        assert answer.ids == ids
        assert [int(t[0]) for t in answer.top_ids] == ids  # greedy: the top id is what was emitted
        for top_ids, top_lp, reference in zip(answer.top_ids, answer.top_logprobs, logprobs):
            torch.testing.assert_close(top_lp.float(), reference[top_ids.long()], atol=2e-3, rtol=0)
            assert torch.equal(top_ids.long(), reference.topk(5).indices)


def test_sampled_rows_record_the_models_own_log_probs_at_each_position(model):
    generator = torch.Generator().manual_seed(7)
    answers = decode_batch(model, PROMPTS, max_new_tokens=10, eos_id=None, top_k=4, temperature=1.5,
                           generator=generator)
    again = decode_batch(model, PROMPTS, max_new_tokens=10, eos_id=None, top_k=4, temperature=1.5,
                         generator=torch.Generator().manual_seed(7))
    assert [a.ids for a in answers] == [a.ids for a in again]
    greedy = decode_batch(model, PROMPTS, max_new_tokens=10, eos_id=None, top_k=4)
    assert [a.ids for a in answers] != [a.ids for a in greedy]  # it did sample

    with torch.inference_mode():
        for prompt, answer in zip(PROMPTS, answers):
            # Teacher-forced over prompt + sampled answer: the log-probs before temperature.
            logits = model(torch.tensor([prompt + answer.ids])).logits[0, len(prompt) - 1:-1].float()
            reference = torch.log_softmax(logits, dim=-1)
            for position, (top_ids, top_lp) in enumerate(zip(answer.top_ids, answer.top_logprobs)):
                assert torch.equal(top_ids.long(), reference[position].topk(4).indices)
                torch.testing.assert_close(top_lp.float(), reference[position][top_ids.long()], atol=2e-3, rtol=0)


def test_one_id_prompts_have_nothing_to_prefill(model):
    prompts = [[3], [17]]
    answers = decode_batch(model, prompts, max_new_tokens=4, eos_id=None, top_k=2)
    assert [a.ids for a in answers] == [alone(model, p, 4, None)[0] for p in prompts]
