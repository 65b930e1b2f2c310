"""The drafter that reads the target's hidden states: the states it is handed are the
target's own, at the right positions, and speculation with it stays lossless."""

from __future__ import annotations

import torch

from specchat.engine.drafters.draft_model import DraftConfig, DraftModel
from specchat.engine.drafters.states_reading import FeatureDrafter
from specchat.engine.loop.sampling import SamplingSettings

from .helpers import decode_once, word_tokenizer

GREEDY = SamplingSettings(temperature=0.0)


def _feature_model(target, draft_vocab: int, seed: int = 0) -> DraftModel:
    """A random state-reading drafter sized for `target` (its embeddings shared)."""
    torch.manual_seed(seed)
    c = target.config
    cfg = DraftConfig(hidden_size=c.hidden_size, num_layers=1, num_heads=c.num_attention_heads,
                      num_kv_heads=c.num_key_value_heads, head_dim=c.hidden_size // c.num_attention_heads,
                      intermediate_size=c.intermediate_size, draft_vocab=draft_vocab,
                      target_vocab=c.vocab_size, reads_target_states=True)
    vocab = torch.randperm(c.vocab_size)[:draft_vocab]
    return DraftModel(cfg, target.get_input_embeddings().weight.detach(), vocab).eval()


def _target_greedy(model, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_states_handed_over_are_the_targets_own_at_every_position(tiny_llama):
    target = tiny_llama(48, seed=0)
    drafter = FeatureDrafter(_feature_model(target, draft_vocab=48), "states", use_lookup=False)
    prompt = [5, 9, 2, 7, 7, 1, 30, 4]
    state, rounds, _ = decode_once(target, word_tokenizer(48), drafter, prompt, k=3, new_tokens=20,
                                   sampling=GREEDY)
    assert any(r.drafted and not r.drafted[-1].accepted for r in rounds)  # rollbacks happened
    known = drafter._states.known
    assert known == len(state.tokens) - 1  # every verified token but the last, like the target cache
    with torch.no_grad():
        full = target.get_decoder()(input_ids=torch.tensor([state.tokens[:known]])).last_hidden_state[0]
    torch.testing.assert_close(drafter._states.rows[:known], full, rtol=1e-4, atol=1e-4)


def test_cached_pairs_after_rollback_match_one_full_pass(tiny_llama):
    target = tiny_llama(48, seed=0)
    model = _feature_model(target, draft_vocab=48, seed=3)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    tokens = torch.randint(0, 48, (30,)).tolist()
    states = torch.randn(29, model.cfg.hidden_size)
    drafter = FeatureDrafter(model, "t", chunk=7)
    drafter.take_target_states(0, states[:20])
    drafter.prefill(tokens[:21])
    drafter.take_target_states(12, states[12:29])  # states from 12 on rewritten: pairs from 12 are stale
    with torch.no_grad():
        last = drafter._feed(tokens, want_output=True)
        full = model.features(torch.tensor([tokens[1:]]), None, states[None])[0, -1]
    assert drafter._cache.length == 29
    torch.testing.assert_close(last, full, rtol=1e-4, atol=1e-4)


def test_greedy_output_equals_target_greedy(tiny_llama):
    target = tiny_llama(48, seed=2)
    drafter = FeatureDrafter(_feature_model(target, draft_vocab=32, seed=1), "states")
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    for k in (1, 4):
        state, _, _ = decode_once(target, word_tokenizer(48), drafter, prompt, k=k, new_tokens=24,
                                  sampling=GREEDY)
        assert state.generated == _target_greedy(target, prompt, 24)


def test_without_the_targets_states_it_drafts_nothing(tiny_llama):
    target = tiny_llama(48, seed=0)
    drafter = FeatureDrafter(_feature_model(target, draft_vocab=48), "states")
    assert drafter.propose([1, 2, 3, 4], 3, GREEDY, None).ids == []


def test_a_session_keeps_the_states_right_across_turns(embedded):
    from specchat.engine.drafters.protocol import NoDrafter
    from specchat.engine.loop.session import ChatSession, GenerationSettings

    drafter = FeatureDrafter(_feature_model(embedded.model, draft_vocab=256), "states")
    settings = GenerationSettings(max_new_tokens=10, k=2)
    spec = ChatSession(embedded, drafter, settings=settings)
    plain = ChatSession(embedded, NoDrafter(), settings=settings)
    for text in ("Name a colour.", "And another one?"):  # turn 2 reuses turn 1's cache
        assert list(spec.send(text))[-1].text == list(plain.send(text))[-1].text
    cached = spec._cached
    assert drafter._states.known == len(cached)
    with torch.no_grad():
        full = embedded.model.get_decoder()(input_ids=torch.tensor([cached])).last_hidden_state[0]
    torch.testing.assert_close(drafter._states.rows[: len(cached)], full, rtol=1e-3, atol=1e-3)


def test_runs_cut_by_the_adaptive_rule_keep_output_and_states_right(tiny_llama):
    from specchat.engine.policy.draft_length import AdaptiveK

    target = tiny_llama(48, seed=0)
    drafter = FeatureDrafter(_feature_model(target, draft_vocab=48), "states", use_lookup=False)
    prompt = [5, 9, 2, 7, 7, 1, 30, 4]
    # Measured costs where each verified token costs 40% of a step: unsure drafts are cut.
    policy = AdaptiveK(max_k=4, draft_cost=0.001, first_held=1.0,
                       verify_cost={fed: 0.045 + 0.018 * (fed - 1) for fed in range(1, 6)})
    state, rounds, _ = decode_once(target, word_tokenizer(48), drafter, prompt, k=4, new_tokens=20,
                                   sampling=GREEDY, policy=policy)
    assert any(r.unverified for r in rounds)  # drafts were made and left unverified
    assert state.generated == _target_greedy(target, prompt, 20)
    known = drafter._states.known
    assert known == len(state.tokens) - 1
    with torch.no_grad():
        full = target.get_decoder()(input_ids=torch.tensor([state.tokens[:known]])).last_hidden_state[0]
    torch.testing.assert_close(drafter._states.rows[:known], full, rtol=1e-4, atol=1e-4)
