"""The drafter network and its KV cache, on a small random configuration."""

from __future__ import annotations

import torch

from specchat.distill.train import drafting_passes
from specchat.engine.drafters.draft_model import DraftConfig, DraftModel
from specchat.engine.drafters.trained import TrainedDrafter
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.model.kv_cache import KVCache

TARGET_VOCAB = 300


def _model(layers: int = 2, seed: int = 0, reads_target_states: bool = False) -> DraftModel:
    torch.manual_seed(seed)
    cfg = DraftConfig(hidden_size=64, num_layers=layers, num_heads=4, num_kv_heads=2, head_dim=16,
                      intermediate_size=96, draft_vocab=40, target_vocab=TARGET_VOCAB,
                      reads_target_states=reads_target_states)
    vocab = torch.randperm(TARGET_VOCAB)[:40]
    model = DraftModel(cfg, torch.randn(TARGET_VOCAB, 64), vocab)
    for p in model.parameters():
        p.data.normal_(0, 0.3)  # random enough that argmaxes differ between positions
    return model.eval()


def test_cached_chunks_and_rollback_match_one_full_pass():
    model = _model()
    ids = torch.randint(0, TARGET_VOCAB, (1, 30))
    with torch.no_grad():
        full = model(ids)
        drafter = TrainedDrafter(model, "t", chunk=7)  # several prefill chunks
        drafter._feed(ids[0, :20].tolist(), want_logits=False)
        drafter._feed(ids[0, :12].tolist() + [5, 6, 7], want_logits=False)  # diverge: rollback to 12
        step = drafter._feed(ids[0].tolist(), want_logits=True)
    assert drafter._cache.length == 30
    torch.testing.assert_close(step, full[0, -1], rtol=1e-4, atol=1e-4)


def test_greedy_proposal_maps_draft_indices_to_target_ids():
    model = _model()
    drafter = TrainedDrafter(model, "t", use_lookup=False)
    tokens = torch.randint(0, TARGET_VOCAB, (25,)).tolist()
    proposal = drafter.propose(tokens, 5, SamplingSettings(), None)
    assert len(proposal.ids) == 5 and proposal.dists is None
    allowed = set(model.vocab_ids.tolist())
    assert all(t in allowed for t in proposal.ids)
    # The same proposal, token by token, from full passes over the growing sequence.
    seq = list(tokens)
    with torch.no_grad():
        for token, p in zip(proposal.ids, proposal.p):
            probs = torch.softmax(model(torch.tensor([seq]))[0, -1], -1)
            assert int(model.vocab_ids[probs.argmax()]) == token
            assert abs(float(probs.max()) - p) < 1e-4
            seq.append(token)


def test_sampled_proposal_has_full_vocabulary_distributions_zero_outside_the_subset():
    model = _model()
    drafter = TrainedDrafter(model, "t", use_lookup=False)
    gen = torch.Generator().manual_seed(0)
    proposal = drafter.propose(list(range(10)), 3, SamplingSettings(temperature=0.8), gen)
    assert proposal.dists.shape == (3, TARGET_VOCAB)
    torch.testing.assert_close(proposal.dists.sum(-1), torch.ones(3))
    outside = torch.ones(TARGET_VOCAB, dtype=torch.bool)
    outside[model.vocab_ids] = False
    assert float(proposal.dists[:, outside].abs().sum()) == 0.0
    for i, (token, p) in enumerate(zip(proposal.ids, proposal.p)):
        assert p == float(proposal.dists[i, token]) > 0


def test_save_and_load_round_trip(tmp_path):
    model = _model(layers=1)
    model.save(tmp_path, {"command": "test"})
    loaded = DraftModel.load(tmp_path, model.embed, torch.float32)
    ids = torch.randint(0, TARGET_VOCAB, (1, 9))
    with torch.no_grad():
        # Weights are stored in bf16: equal to that precision.
        torch.testing.assert_close(loaded(ids), model.to(torch.bfloat16).float()(ids), rtol=0.02, atol=0.02)
    assert loaded.vocab_ids.tolist() == model.vocab_ids.tolist()


def test_loading_for_another_target_is_refused(tmp_path):
    import pytest

    model = _model(layers=1)
    model.save(tmp_path, {"command": "test"})
    with pytest.raises(ValueError, match="another target"):
        DraftModel.load(tmp_path, torch.randn(TARGET_VOCAB, 64), torch.float32)


def test_lookup_copies_a_repeated_continuation_before_asking_the_model():
    from specchat.engine.drafters.drafting import lookup

    assert lookup([9, 1, 2, 3, 4, 7, 1, 2, 3]) == 4  # longest match first (1 2 3 -> 4)
    assert lookup([5, 6, 8, 1, 2, 5, 6]) == 8
    assert lookup([1, 2, 3, 4]) is None and lookup([3, 1, 3]) is None  # one-token matches don't count
    model = _model()
    drafter = TrainedDrafter(model, "t")
    tokens = [11, 12, 13, 14, 15, 16, 17, 11, 12]
    greedy = drafter.propose(tokens, 3, SamplingSettings(), None)
    assert greedy.ids == [13, 14, 15] and greedy.p == [1.0, 1.0, 1.0]
    sampled = drafter.propose(tokens, 2, SamplingSettings(temperature=1.0), torch.Generator().manual_seed(0))
    assert sampled.ids == [13, 14] and sampled.dists[0, 13] == 1.0 and sampled.dists[1].sum() == 1.0
    # Where nothing repeats, the model drafts: its cache followed the copied tokens.
    plain = TrainedDrafter(model, "plain", use_lookup=False)
    after = drafter.propose(tokens + [13, 14, 15, 16, 17, 99], 1, SamplingSettings(), None)
    assert after.ids == plain.propose(tokens + [13, 14, 15, 16, 17, 99], 1, SamplingSettings(), None).ids


def test_training_passes_see_what_drafting_sees():
    # Pass j at position i must be the state drafting computes for its (j+1)-th token in
    # a round that starts after real pair i-j: real states before, its own pairs after.
    model = _model(reads_target_states=True)
    n, passes = 12, 3
    ids = torch.randint(0, TARGET_VOCAB, (1, n))
    states = torch.randn(1, n, 64)
    with torch.no_grad():
        trained = drafting_passes(model, ids, states, passes)
        for i in range(passes - 1, n):
            for j in range(passes):
                start = i - j
                cache = KVCache(model.cfg.num_layers)
                hidden = model.features(ids[:, :start + 1], cache, states[:, :start + 1])[0, -1]
                for p in range(start + 1, i + 1):  # each drafted pair reads the state predicted before it
                    hidden = model.features(ids[:, p:p + 1], cache, hidden[None, None])[0, -1]
                torch.testing.assert_close(trained[j][0, i], hidden, rtol=1e-4, atol=1e-4)
