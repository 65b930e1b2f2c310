"""Chat sessions: KV reuse across turns, cancel, stop strings, context overflow."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.events import Notice, Round, TurnEnd, TurnStart
from specchat.engine.loop.session import ChatSession, GenerationSettings, Message

from .helpers import as_target


def _settings(**kw) -> GenerationSettings:
    return GenerationSettings(**{"max_new_tokens": 24, **kw})


def test_second_turn_reuses_the_first_turns_cache(embedded):
    session = ChatSession(embedded, NgramDrafter(), settings=_settings())
    first = list(session.send("Name a fruit."))
    second = list(session.send("Name another one."))
    start1, start2 = first[0], second[0]
    assert isinstance(start2, TurnStart)
    assert start1.reused_tokens == 0
    # Everything up to the first answer was already in the cache; only the new part is read.
    assert start2.reused_tokens >= start1.prompt_tokens
    # ... and reusing it changes nothing: a fresh session given the same history agrees.
    fresh = ChatSession(embedded, NoDrafter(), settings=_settings())
    fresh.load_history(session.history[:2])
    assert list(fresh.send("Name another one."))[-1].text == second[-1].text


def test_cancel_mid_turn_keeps_partial_answer_and_history_usable(embedded):
    session = ChatSession(embedded, NgramDrafter(), settings=_settings(max_new_tokens=60))
    events = []
    for event in session.send("Count from one to twenty in words."):
        events.append(event)
        if isinstance(event, Round) and event.index == 2:
            # from another thread, as the TUI does
            t = threading.Thread(target=session.cancel)
            t.start()
            t.join()
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.finish_reason == "cancelled"
    assert sum(isinstance(e, Round) for e in events) == 3
    assert end.text and session.history[-1] == Message("assistant", end.text, "cancelled")
    # The conversation goes on, and the cache kept from the cancelled turn is consistent:
    # the next answer equals what a fresh session with the same history says.
    nxt = list(session.send("Thanks."))[-1]
    fresh = ChatSession(embedded, NoDrafter(), settings=_settings(max_new_tokens=60))
    fresh.load_history(session.history[:2])
    assert list(fresh.send("Thanks."))[-1].text == nxt.text


def test_closing_the_stream_early_counts_as_cancelled(embedded):
    session = ChatSession(embedded, NoDrafter(), settings=_settings())
    stream = session.send("Say hello.")
    for event in stream:
        if isinstance(event, Round):
            break
    stream.close()
    assert session.history[-1].role == "assistant" and session.history[-1].status == "cancelled"
    assert session.history[-1].content  # the token shown before the close is kept


def test_stop_string_ends_the_turn_without_it(embedded):
    session = ChatSession(embedded, NgramDrafter(), settings=_settings(stop=("Paris",)))
    events = list(session.send("What is the capital of France?"))
    end = events[-1]
    assert end.finish_reason == "stop"
    assert end.text == "The capital of France is "
    assert "".join(e.text for e in events if isinstance(e, Round)) == end.text
    assert session.history[-1].content == end.text


def test_max_new_tokens_is_exact(embedded):
    session = ChatSession(embedded, ModelDrafter(embedded.model, "self", 49152), settings=_settings(k=4, max_new_tokens=7))
    end = list(session.send("Write a long story about a dragon."))[-1]
    assert end.finish_reason == "length" and end.totals.tokens == 7


@pytest.fixture
def short_context(embedded):
    """A tiny random target with the embedded tokenizer and a 160-token context."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=160,
                      tie_word_embeddings=True)
    return as_target(LlamaForCausalLM(cfg).eval(), embedded.tokenizer)


def test_oldest_turns_are_dropped_to_fit_the_context(short_context):
    tiny = short_context
    session = ChatSession(tiny, NoDrafter(), system_prompt="Be brief.", settings=_settings(max_new_tokens=8))
    notices = []
    for i in range(8):
        events = list(session.send(f"Message number {i}: tell me something about the number {i}."))
        notices += [e for e in events if isinstance(e, Notice)]
        start = events[0]
        assert start.prompt_tokens + 8 <= 160 + 8 and events[-1].finish_reason in ("length", "eos")
    assert notices and "context of 160 tokens" in notices[0].message
    assert session.history[-2].content.startswith("Message number 7")
    assert len(session.history) < 16


def test_model_failure_ends_turn_with_error_and_keeps_history(embedded, monkeypatch):
    session = ChatSession(embedded, NoDrafter(), settings=_settings())
    list(session.send("Hi."))

    def explode(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore details")

    monkeypatch.setattr("specchat.engine.loop.speculative.forward_logits", explode)
    end = list(session.send("Hi again."))[-1]
    assert end.finish_reason == "error" and end.error == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert [m.status for m in session.history] == ["complete", "complete", "complete", "error"]
    monkeypatch.undo()
    # the caches were dropped, so the next turn re-reads the history and works
    again = list(session.send("Hi again."))
    assert again[0].reused_tokens == 0 and again[-1].finish_reason == "eos"


def test_a_message_longer_than_the_context_is_refused_and_the_conversation_goes_on(short_context):
    tiny = short_context
    session = ChatSession(tiny, NoDrafter(), settings=_settings(max_new_tokens=8))
    list(session.send("Hello there."))
    events = list(session.send("word " * 400))
    assert [type(e) for e in events] == [TurnEnd]  # refused before any prefill
    end = events[-1]
    assert end.finish_reason == "error" and end.totals.tokens == 0
    assert end.error.startswith("the message is too long: the prompt is ") and "context holds 160" in end.error
    # The conversation is intact, the refused message included ...
    assert [(m.role, m.status) for m in session.history] == [
        ("user", "complete"), ("assistant", "complete"), ("user", "complete"), ("assistant", "error")]
    after = list(session.send("And now?"))
    assert isinstance(after[0], TurnStart) and after[-1].finish_reason in ("length", "eos")
    # ... and the next prompt is the one it would be had the message never been sent.
    without = ChatSession(tiny, NoDrafter(), settings=_settings(max_new_tokens=8))
    list(without.send("Hello there."))
    assert after[0].prompt_tokens == list(without.send("And now?"))[0].prompt_tokens


def test_the_cache_is_sized_for_the_answer_before_it_starts(embedded):
    session = ChatSession(embedded, NgramDrafter(), settings=_settings(max_new_tokens=600))
    events = session.send("Count from one to fifty in words.")
    start = next(events)  # the prefill is done
    # past one chunk of 512 positions: the answer's room was reserved with the prompt's
    assert session._cache.layers[0].capacity >= start.prompt_tokens + 600 > 512
    events.close()
