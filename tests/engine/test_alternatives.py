"""Alternatives: other drafted candidates verified in the same target pass (greedy)."""

from __future__ import annotations

import torch

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.protocol import Alternative, choose_alternatives
from specchat.engine.loop.alternatives import (accepted_rows, forward_with_alternatives, pass_layout, spare_for,
                                               verify_greedy)
from specchat.engine.loop.events import event_from_json, to_json
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.engine.model.forward import forward_logits, new_cache

from .helpers import as_target, decode_once, word_tokenizer

GREEDY = SamplingSettings(temperature=0.0)


def test_layout_shows_each_input_its_own_branch_only():
    # [last, d1, d2, alt@0, alt@1] after 3 cached positions
    positions, mask = pass_layout(3, 2, [Alternative(0, 11, 0.2), Alternative(1, 12, 0.1)])
    assert positions.tolist() == [3, 4, 5, 4, 5]
    block = mask[:, 3:].int().tolist()
    assert block == [[1, 0, 0, 0, 0],   # last
                     [1, 1, 0, 0, 0],   # d1 reads last
                     [1, 1, 1, 0, 0],   # d2 reads last, d1
                     [1, 0, 0, 1, 0],   # the alternative to d1 reads last only
                     [1, 1, 0, 0, 1]]   # the alternative to d2 reads last, d1
    assert mask[:, :3].all()


def test_every_row_equals_a_plain_pass_over_its_branch(tiny_llama):
    model = tiny_llama(48, seed=0)
    context, last, run = [3, 9, 4, 17, 8], 21, [5, 6, 7]
    alternatives = [Alternative(0, 30, 0.3), Alternative(0, 31, 0.2), Alternative(2, 32, 0.1)]
    cache = new_cache(model)
    forward_logits(model, cache, context, keep=0)
    logits = forward_with_alternatives(model, cache, last, run, alternatives)
    assert logits.shape[0] == 1 + len(run) + len(alternatives)
    plain = forward_logits(model, new_cache(model), context + [last] + run, keep=len(run) + 1)
    torch.testing.assert_close(logits[: len(run) + 1], plain, rtol=1e-4, atol=1e-4)
    for j, alt in enumerate(alternatives):
        branch = context + [last] + run[: alt.position] + [alt.token_id]
        expected = forward_logits(model, new_cache(model), branch, keep=1)[0]
        torch.testing.assert_close(logits[1 + len(run) + j], expected, rtol=1e-4, atol=1e-4)


def test_cache_keeps_the_accepted_branch_only(tiny_llama):
    model = tiny_llama(48, seed=0)
    context, last, run = [3, 9, 4, 17, 8], 21, [5, 6, 7]
    alternatives = [Alternative(0, 30, 0.3), Alternative(1, 33, 0.2)]
    cache = new_cache(model)
    forward_logits(model, cache, context, keep=0)
    forward_with_alternatives(model, cache, last, run, alternatives)
    # Say the run was rejected at position 1 and the alternative there (index 1) accepted.
    cache.keep_rows(len(context), accepted_rows(1, len(run), 1))
    branch = context + [last, 5, 33]
    assert cache.get_seq_length() == len(branch)
    fresh = new_cache(model)
    forward_logits(model, fresh, branch, keep=0)
    for kept, plain in zip(cache.layers, fresh.layers):
        for held, expected in zip(kept.filled(), plain.filled()):
            torch.testing.assert_close(held, expected, rtol=1e-4, atol=1e-5)


def test_greedy_verdict_takes_an_alternative_where_the_run_breaks():
    vocab = 10
    logits = torch.full((6, vocab), -1.0)
    # argmax per row: run rows 0..2, then one row per alternative
    for row, best in enumerate([4, 7, 1, 2, 8, 9]):
        logits[row, best] = 1.0
    alternatives = [Alternative(0, 6, 0.2), Alternative(1, 7, 0.3), Alternative(1, 3, 0.1)]
    verdict, chosen = verify_greedy([4, 5], alternatives, logits)
    assert (verdict.n_accepted, chosen, verdict.next_token, verdict.bonus) == (1, 1, 8, True)
    verdict, chosen = verify_greedy([4, 5], alternatives[2:], logits)
    assert (verdict.n_accepted, chosen, verdict.next_token, verdict.bonus) == (1, None, 7, False)
    assert accepted_rows(1, 2, 1) == [0, 1, 4]


def test_alternatives_are_ranked_by_the_chance_they_are_needed_and_right():
    candidates = [Alternative(0, 1, 0.30), Alternative(0, 2, 0.05), Alternative(1, 3, 0.40), Alternative(2, 4, 0.9)]
    # reach: position 0 always, 1 with p(run[0]) = 0.5, 2 with 0.5 * 0.1
    chosen = choose_alternatives(candidates, [0.5, 0.1, 0.9], spare=2)
    assert [a.token_id for a in chosen] == [1, 3]
    assert choose_alternatives(candidates, [0.5, 0.1, 0.9], spare=0) == []
    assert spare_for(1, None, 6) == 4 and spare_for(5, None, 6) == 0 and spare_for(2, 3, 6) == 3
    assert spare_for(0, 3, 6) == 0


def test_greedy_output_is_the_targets_with_alternatives_accepted(tiny_llama):
    vocab = 40
    target, draft = tiny_llama(vocab, seed=0), tiny_llama(vocab, seed=3)
    prompt = [5, 6, 7, 8, 9, 10]
    plain, _, _ = decode_once(target, word_tokenizer(vocab), ModelDrafter(target, "self", vocab), prompt,
                              k=0, new_tokens=40, sampling=GREEDY)
    taken = 0
    for k, spare in [(1, 3), (2, 5), (4, 2)]:
        drafter = ModelDrafter(draft, "tiny", vocab)
        state, rounds, decoder = decode_once(target, word_tokenizer(vocab), drafter, prompt, k=k,
                                             new_tokens=40, sampling=GREEDY, spare=spare)
        assert state.generated == plain.generated
        assert "".join(r.text for r in rounds) == state.text
        assert all(len(r.alternatives) <= spare for r in rounds)
        taken += sum(1 for r in rounds for a in r.alternatives if a.accepted)
        # The cache holds the verified sequence but the last token, as a fresh pass makes it.
        assert decoder.cached == state.tokens[:-1] == state.tokens[: decoder.cache.get_seq_length()]
        after = forward_logits(target, decoder.cache, state.tokens[-1:], keep=1)
        torch.testing.assert_close(after, forward_logits(target, new_cache(target), state.tokens, keep=1),
                                   rtol=1e-4, atol=1e-4)
    assert taken > 0, "the test needs accepted alternatives"


def test_session_rounds_with_alternatives_survive_a_trace(tiny_llama):
    vocab = 40
    target, draft = tiny_llama(vocab, seed=0), tiny_llama(vocab, seed=3)
    tok = word_tokenizer(vocab)
    session = ChatSession(as_target(target, tok), ModelDrafter(draft, "tiny", vocab),
                          settings=GenerationSettings(k=2, alternatives=3, max_new_tokens=40))
    events = list(session.send("t5 t6 t7 t8"))
    rounds = [e for e in events if type(e).__name__ == "Round"]
    end = events[-1]
    assert any(r.alternatives for r in rounds)
    assert "".join(r.text for r in rounds) == end.text
    assert end.totals.alternatives == sum(len(r.alternatives) for r in rounds)
    assert end.totals.accepted == sum(r.n_accepted for r in rounds)
    for event in events:
        assert event_from_json(to_json(event)) == event
    # Sampling rounds keep the single run: alternatives are a greedy-only rule.
    session.settings = GenerationSettings(k=2, alternatives=3, max_new_tokens=20, temperature=0.8, seed=1)
    assert not any(getattr(e, "alternatives", None) for e in session.send("t9 t10"))


def test_shipped_drafter_alternatives_keep_the_embedded_targets_greedy_answer(embedded):
    from specchat.engine.drafters.protocol import NoDrafter
    from specchat.models import load_drafter

    drafter = load_drafter("smoldraft", embedded, quant="none")
    prompt = "Explain in two sentences why the sky is blue."
    plain = list(ChatSession(embedded, NoDrafter(), settings=GenerationSettings(max_new_tokens=40)).send(prompt))
    events = list(ChatSession(embedded, drafter, settings=GenerationSettings(
        k=1, alternatives=4, max_new_tokens=40)).send(prompt))
    assert events[-1].text == plain[-1].text and plain[-1].text
    assert events[-1].totals.alternatives_accepted > 0


def test_trained_drafter_reads_its_pick_and_alternatives_in_one_transfer():
    # read_greedy returns what argmax, softmax and topk give one by one (it only
    # gathers them into one device read); vocab ids map draft entries to target ids.
    from specchat.engine.drafters.draft_model import DraftConfig, DraftModel
    from specchat.engine.drafters.drafting import read_greedy
    from specchat.engine.drafters.protocol import alternatives_among

    torch.manual_seed(0)
    cfg = DraftConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                      intermediate_size=64, draft_vocab=50, target_vocab=400)
    model = DraftModel(cfg, torch.randn(400, 32), torch.randperm(400)[:50])
    for _ in range(20):
        logits = torch.randn(50) * 3
        probs = torch.softmax(logits, dim=-1)
        best = int(torch.argmax(logits))
        token, p, likeliest = read_greedy(model, logits, 4)
        assert token == int(model.vocab_ids[best]) and p == float(probs[best])
        top = torch.topk(probs, 4)
        assert likeliest == [(int(model.vocab_ids[i]), float(q)) for q, i in zip(top.values, top.indices)]
        alternatives = alternatives_among(2, likeliest, token)
        assert [a.token_id for a in alternatives] == [t for t, _ in likeliest if t != token][:3]
        assert all(a.position == 2 for a in alternatives)
