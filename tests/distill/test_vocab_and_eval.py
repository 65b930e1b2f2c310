"""Draft vocabulary choice and the offline acceptance estimate."""

from __future__ import annotations

import torch

from specchat.distill.train import evaluate
from specchat.distill.vocab import choose_vocab, coverage, index_map
from specchat.engine.drafters.draft_model import DraftConfig, DraftModel


def _rec(labels):
    return {"prompt": [1, 2], "answer": list(labels), "labels": list(labels),
            "top_ids": torch.tensor([[t] for t in labels], dtype=torch.int32),
            "top_logprobs": torch.zeros(len(labels), 1, dtype=torch.float16), "sampled": False}


def test_vocab_is_most_frequent_first_with_forced_tokens():
    recs = [_rec([5, 5, 5, 7, 7, 9]), _rec([7, 3])]
    assert choose_vocab(recs, 3, always=(2,)) == [2, 5, 7]
    assert choose_vocab(recs, 10) == [5, 7, 3, 9]  # ties broken by id
    assert coverage(recs, [5, 7]) == 6 / 8
    table = index_map([5, 7], 12)
    assert table[5] == 0 and table[7] == 1 and table[3] == -100


def test_evaluate_counts_rounds_like_greedy_verification():
    # A drafter that always predicts draft index 0 (token 4): it agrees exactly where the
    # answer has a 4. Answer 4 4 4 4 4 8 4 at k=4: round 1 accepts 4 (+1 bonus token),
    # round 2 starts at the 8: rejected (+1 correction), round 3: the last 4 accepted
    # with nothing after it.
    cfg = DraftConfig(hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4,
                      intermediate_size=8, draft_vocab=2, target_vocab=10)
    model = DraftModel(cfg, torch.zeros(10, 8), torch.tensor([4, 8]))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.norm.weight.fill_(1.0)
        model.head.weight[0] = 1.0  # zero hidden states: a tie broken to index 0
    out = evaluate(model, [_rec([4, 4, 4, 4, 4, 8, 4])], index_map([4, 8], 10), k=4)
    assert out["token_agreement"] == 6 / 7
    assert out["tokens_per_round_k4"] == 7 / 3
    assert out["acceptance_k4"] == 5 / 12  # three rounds of 4 drafted
