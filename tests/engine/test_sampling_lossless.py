"""Speculative sampling must keep the target's distribution exactly.

Two levels: the accept/resample rule alone on fixed distributions (many samples,
fast), and the whole loop on tiny random models whose exact next-two-token
distribution we can enumerate. Each test also runs a deliberately broken
resampler through the same statistic to show the bound can fail.
"""

from __future__ import annotations

import torch

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.loop import sampling
from specchat.engine.loop.sampling import SamplingSettings, logits_to_probs, verify
from specchat.engine.policy.draft_length import AdaptiveK

from .helpers import exact_two_token_marginals, sampled_marginals, total_variation, word_tokenizer

SAMPLE = SamplingSettings(temperature=1.0)


def broken_verify(draft_ids, draft_probs, target_logits, target_probs, settings, generator):
    """Resamples a rejection from q itself instead of norm(max(0, q - p)): biased."""
    for i, token in enumerate(draft_ids):
        p = float(draft_probs[i, token])
        if float(torch.rand((), generator=generator)) * p <= float(target_probs[i, token]):
            continue
        return sampling.Verdict(i, sampling.sample(target_probs[i], generator), False)
    return sampling.Verdict(len(draft_ids), sampling.sample(target_probs[-1], generator), True)


def first_token_counts(rule, p: torch.Tensor, q: torch.Tensor, n: int) -> torch.Tensor:
    """Draft one token from p, verify against q; count the first token of the answer."""
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros_like(q)
    q_rows = torch.stack([q, q])
    for _ in range(n):
        drafted = sampling.sample(p, gen)
        verdict = rule([drafted], p[None], q_rows.log(), q_rows, SAMPLE, gen)
        counts[drafted if verdict.n_accepted else verdict.next_token] += 1
    return counts


def test_accept_resample_rule_keeps_target_distribution():
    p = torch.tensor([0.50, 0.20, 0.10, 0.10, 0.05, 0.05])  # drafter, over-confident in token 0
    q = torch.tensor([0.10, 0.30, 0.25, 0.05, 0.20, 0.10])  # target
    n = 20000
    good = total_variation(first_token_counts(verify, p, q, n), q)
    broken = total_variation(first_token_counts(broken_verify, p, q, n), q)
    bound = 0.02  # sampling noise at n=20000 over 6 tokens is ~0.006
    assert good < bound
    assert broken > bound, "the statistic must be able to catch a biased resampler"


def test_speculative_loop_keeps_target_distribution(tiny_llama, monkeypatch):
    vocab = 12
    target, draft_model = tiny_llama(vocab, seed=0), tiny_llama(vocab, seed=7)
    for model in (target, draft_model):  # random init is near-uniform; sharpen so p and q differ
        model.lm_head.weight.data.mul_(6.0)
    tokenizer = word_tokenizer(vocab)
    drafter = ModelDrafter(draft_model, name="tiny-draft", vocab_size=vocab)
    prompt = [3, 1, 4, 1, 5]
    # Temperature and top-k are applied identically to both sides; top-k changes the support.
    settings = SamplingSettings(temperature=1.5, top_k=8)
    exact_first, exact_second = exact_two_token_marginals(target, prompt, settings)
    n = 1200
    first, second = sampled_marginals(target, drafter, tokenizer, prompt, settings, n)
    bound = 0.07  # noise at n=1200 over 12 tokens is ~0.03
    assert total_variation(first, exact_first) < bound
    assert total_variation(second, exact_second) < bound

    monkeypatch.setattr("specchat.engine.loop.speculative.verify", broken_verify)
    first_b, second_b = sampled_marginals(target, drafter, tokenizer, prompt, settings, n)
    broken = max(total_variation(first_b, exact_first), total_variation(second_b, exact_second))
    print(f"TV first={total_variation(first, exact_first):.3f} second={total_variation(second, exact_second):.3f} "
          f"broken={broken:.3f}; exact first={exact_first.tolist()}")
    assert broken > bound


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0]).log_softmax(-1)
    probs = logits_to_probs(logits, SamplingSettings(temperature=1.0, top_p=0.7))
    base = torch.softmax(logits, -1)
    # the top token holds < 0.7, the top two reach it: exactly those two stay
    assert base[0] < 0.7 <= base[0] + base[1]
    assert (probs > 0).tolist() == [True, True, False, False]
    assert torch.isclose(probs.sum(), torch.tensor(1.0))


def _measured_policy() -> AdaptiveK:
    """The adaptive rule after it has measured a cost curve (each token fed costs a
    tenth of a step): it stops drafting after a draft its drafter was unsure of."""
    policy = AdaptiveK(max_k=2, draft_cost=0.001, first_held=1.0)
    policy.verify_cost = {fed: 0.045 + 0.0045 * (fed - 1) for fed in (1, 2, 3)}
    return policy


def test_a_draft_length_chosen_from_the_drafters_probabilities_keeps_the_distribution(tiny_llama):
    vocab = 12
    target, draft_model = tiny_llama(vocab, seed=0), tiny_llama(vocab, seed=7)
    target.lm_head.weight.data.mul_(6.0)
    draft_model.lm_head.weight.data.mul_(12.0)  # sharper: its p ranges widely, and so do the cuts
    drafter = ModelDrafter(draft_model, name="tiny-draft", vocab_size=vocab)
    prompt = [3, 1, 4, 1, 5]
    settings = SamplingSettings(temperature=1.5, top_k=8)
    exact_first, exact_second = exact_two_token_marginals(target, prompt, settings)
    lengths: list[int] = []
    first, second = sampled_marginals(target, drafter, word_tokenizer(vocab), prompt, settings, 1200,
                                       policy=_measured_policy, lengths=lengths)
    print("verified drafts per first round:", {n: lengths.count(n) for n in set(lengths)})
    assert {1, 2} <= set(lengths)  # the rule stopped some runs early
    assert total_variation(first, exact_first) < 0.07
    assert total_variation(second, exact_second) < 0.07


def test_a_sampled_token_follows_its_distribution_and_never_takes_a_zero_weight_id():
    # weights of any total, a zero inside and at both ends, a tiny tail share
    weights = torch.tensor([0.0, 3.0, 0.0, 1.0, 5.0, 1e-3, 0.0])
    gen = torch.Generator().manual_seed(1)
    n = 40_000
    counts = torch.zeros_like(weights)
    for _ in range(n):
        counts[sampling.sample(weights, gen)] += 1
    assert counts[weights == 0].sum() == 0
    assert total_variation(counts / n, weights / weights.sum()) < 0.01
    one, two = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [sampling.sample(weights, one) for _ in range(20)] == [sampling.sample(weights, two) for _ in range(20)]


def test_top_p_keeps_the_same_tokens_whether_its_cut_lies_among_the_likeliest_or_not():
    torch.manual_seed(0)
    for scale in (8.0, 3.0, 0.3):  # peaked (the cut among 256), middling, flat (a full sort)
        logits = torch.randn(3, 49152) * scale
        for top_p in (0.5, 0.9, 0.99):
            kept = logits_to_probs(logits, SamplingSettings(temperature=1.0, top_p=top_p)) > 0
            # the definition, by a full sort: a token stays while the mass before it is under top_p
            probs = torch.softmax(logits, -1)
            values, order = torch.sort(probs, -1, descending=True)
            expected = torch.zeros_like(kept).scatter(-1, order, values.cumsum(-1) - values < top_p)
            assert torch.equal(kept, expected), (scale, top_p)
