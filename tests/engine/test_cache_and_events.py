"""KV cache rollback, the event contract (JSON round trip), incremental detokenization."""

from __future__ import annotations

import torch

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.loop.detok import IncrementalDecoder
from specchat.engine.loop.events import event_from_json, to_json
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.engine.model.forward import forward_logits, new_cache

from .helpers import decode_once, word_tokenizer


def test_caches_are_rolled_back_to_the_accepted_length(tiny_llama):
    vocab = 40
    target, draft = tiny_llama(vocab, seed=0), tiny_llama(vocab, seed=3)
    drafter = ModelDrafter(draft, "tiny", vocab)
    prompt = [5, 6, 7, 8, 9, 10]
    state, rounds, decoder = decode_once(target, word_tokenizer(vocab), drafter, prompt, k=4, new_tokens=30,
                                         sampling=SamplingSettings(temperature=0.0))
    assert any(r.n_accepted < len(r.drafted) for r in rounds), "needs rejections to test rollback"
    # The target cache holds exactly the verified tokens but the last, and its
    # contents are what a fresh forward over those tokens computes.
    assert decoder.cache.get_seq_length() == len(state.tokens) - 1 == len(decoder.cached)
    assert decoder.cached == state.tokens[:-1]
    after_rollback = forward_logits(target, decoder.cache, state.tokens[-1:], keep=1)
    fresh = forward_logits(target, new_cache(target), state.tokens, keep=1)
    torch.testing.assert_close(after_rollback, fresh, rtol=1e-4, atol=1e-4)
    # The drafter's cache never holds a rejected token.
    assert drafter._cached == state.tokens[: len(drafter._cached)]
    assert drafter._cache.get_seq_length() == len(drafter._cached)


def test_a_layer_written_in_another_dtype_keeps_what_it_holds():
    from specchat.engine.model.kv_cache import PreallocatedLayer

    layer = PreallocatedLayer()
    keys = torch.randn(1, 2, 5, 4)
    layer.update(keys, keys + 1)
    held, _ = layer.update(keys[..., :1, :].bfloat16(), keys[..., :1, :].bfloat16())  # another format now
    assert held.dtype == torch.bfloat16 and held.shape[-2] == 6
    assert torch.equal(held[..., :5, :], keys.bfloat16())


def test_events_round_trip_through_json(embedded):
    session = ChatSession(embedded, NgramDrafter(), settings=GenerationSettings(max_new_tokens=20, k=3))
    events = list(session.send("Say ‘héllo wörld’ twice."))
    assert [type(e).__name__ for e in events][0] == "TurnStart"
    for event in events:
        line = to_json(event)
        assert "\n" not in line
        assert event_from_json(line) == event


def test_incremental_detokenization_of_multibyte_text(embedded):
    text = "Café 北京 naïve 🙂👍🏽 — done. Ünïcödé ok"
    ids = embedded.tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(embedded.tokenizer)
    pieces = [decoder.push(t) for t in ids]
    assert "".join(pieces) == embedded.tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(ids) > len([p for p in pieces if p]), "some emoji must span several tokens"
    # peek shows what tokens would print without consuming them
    decoder2 = IncrementalDecoder(embedded.tokenizer)
    assert decoder2.peek(ids[:5]) == pieces[:5]
    assert [decoder2.push(t) for t in ids[:5]] == pieces[:5]
