"""`specchat distill --data DIR --grow-to N` with the real embedded target, tiny:
loaded as `specchat run` loads it (its CPU decoder), the shipped drafter drafting."""

from __future__ import annotations

import json
import random

import pytest

from specchat.distill import main
from specchat.distill.datagen import chat_ids
from specchat.distill.answerer import load_answerer
from specchat.distill.grow import GrowSettings, grow, make_shard
from specchat.distill.heldout import HeldOut, default_files
from specchat.distill.magpie import acceptable, user_turn_prefix
from specchat.distill.sources import FRAMES, WEIGHTS, Exchange, Pool, plan
from specchat.distill.store import MANIFEST, Store, read_shard

TINY = GrowSettings(batch_size=4, max_new_tokens=6, question_tokens=12, max_prompt_tokens=160, sampled_every=2,
                    seed=3)


@pytest.fixture(scope="module")
def answerer():
    return load_answerer("embedded", "smoldraft", None, lambda _message: None)


@pytest.fixture(scope="module")
def heldout():
    return HeldOut.from_files(default_files(), FRAMES)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for argv, says in ((["--grow-to", "0"], "--grow-to must be a positive"),
                       (["--grow-to", "5", "--batch-size", "0"], "--batch-size must be positive"),
                       (["--grow-to", "5", "--quant", "int3"], "--quant must be one of auto, q4_1"),
                       (["--grow-to", "5", "--heldout", str(tmp_path / "none.jsonl")], "no such file")):
        assert main(["--data", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("specchat distill: error: ") and says in err and err.count("\n") == 1
    assert main(["--data", str(tmp_path / "file"), "--grow-to", "5"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_magpie_filter_keeps_requests_and_drops_junk(embedded):
    prefix = user_turn_prefix(embedded.tokenizer, [])
    assert prefix.endswith("<|im_start|>user\n") and "<|im_start|>system" in prefix
    after = user_turn_prefix(embedded.tokenizer, [{"role": "user", "content": "Hi"},
                                                  {"role": "assistant", "content": "Hello!"}])
    assert after.endswith("Hello!<|im_end|>\n<|im_start|>user\n")
    assert acceptable("How do I delete cookies from my browser?")
    assert acceptable("I'm planning to launch a new business with my friends. What steps come first?")
    assert acceptable("Explain the water cycle to a child")
    for junk in ("Hello there", "The cat sat on the mat quietly today.", "what what what what what what what "
                 "what what what what what what?", "Tell me<|im_end|> assistant: sure",
                 "Frozen Elix entirely unborn Greece Baby.Dawg.Lego.contains.gold.Eldarica.plunder?"):
        assert not acceptable(junk), junk


def test_the_first_shard_waits_for_earlier_answers_before_building_on_them():
    kinds = set(plan(random.Random(0), 500, earlier=0))
    assert kinds == set(WEIGHTS) - {"followup", "document", "translation"}
    assert set(plan(random.Random(0), 500, earlier=100)) == set(WEIGHTS)


def pool_of_twenty() -> Pool:
    pool = Pool()
    for i in range(20):  # enough earlier exchanges for every kind
        pool.add(Exchange("magpie", [{"role": "user", "content": f"Why is the number {i} special?"}],
                          f"The number {i} is special because it comes after {i - 1}. " * 8))
    return pool


@pytest.mark.slow  # two shards of the real target
def test_a_shard_holds_the_prompts_as_templated_and_the_targets_answers(answerer, heldout):
    tokenizer = answerer.tokenizer
    pool = pool_of_twenty()
    shard = make_shard(answerer, 1, TINY, pool, heldout)
    assert len(shard.records) == 4 and shard.meta["sampled"] and shard.meta["seed"] == 3 * 1_000_003 + 1
    for record in shard.records:
        assert record.prompt == chat_ids(tokenizer, record.messages)
        assert 1 <= len(record.answer) <= 6 and len(record.labels) == len(record.answer)
        assert len(record.prompt) <= 160 and not heldout.near_chat(record.messages)
        # sampled: the labels are what greedy decoding says, its first token included
        assert record.labels[0] == answerer.answer(record.prompt, 1)[0]
    greedy = make_shard(answerer, 2, TINY, pool, heldout)
    assert not greedy.meta["sampled"]
    assert all(r.labels == r.answer for r in greedy.records)  # greedy: the argmax is the answer


@pytest.mark.slow
def test_a_stored_answer_is_the_targets_own_greedy_answer_token_for_token(answerer, heldout):
    from specchat.engine.drafters.protocol import NoDrafter
    from specchat.engine.loop.events import Round, TurnStart
    from specchat.engine.loop.session import ChatSession, GenerationSettings, Message

    settings = GrowSettings(batch_size=4, max_new_tokens=48, question_tokens=24, max_prompt_tokens=300,
                            sampled_every=0, seed=5)
    shard = make_shard(answerer, 0, settings, pool_of_twenty(), heldout)
    drafted = sum(len(r.answer) for r in shard.records)
    assert len(shard.records) == 4 and drafted > 40
    for record in shard.records:
        # The target alone (no drafter) in a chat session on the same loaded target.
        plain = ChatSession(answerer.target, NoDrafter(), settings=GenerationSettings(max_new_tokens=48))
        plain.load_history([Message(m["role"], m["content"]) for m in record.messages[:-1]])
        events = list(plain.send(record.messages[-1]["content"]))
        assert next(e for e in events if isinstance(e, TurnStart)).prompt_tokens == len(record.prompt)
        assert [e.emitted.token_id for e in events if isinstance(e, Round)] == record.answer


@pytest.mark.slow
def test_a_resumed_run_grows_the_same_data_as_one_run(tmp_path, answerer, heldout):
    settings = {"grow": "tiny"}
    whole = Store(tmp_path / "whole", settings, 49_152)
    grow(answerer, whole, TINY, 40, heldout)  # 4 answers of <= 6 tokens a shard
    assert whole.next_index >= 2
    parts = Store(tmp_path / "parts", settings, 49_152)
    seen = []
    grow(answerer, parts, TINY, 1, heldout, lambda summary, totals: seen.append(totals))
    assert parts.next_index == 1 and seen[-1]["shards"] == 1
    grow(answerer, Store(tmp_path / "parts", settings, 49_152), TINY, 40, heldout)
    made = lambda store: [(s.records, s.meta["seed"], s.meta["sampled"])  # noqa: E731 - all but the seconds
                          for s in map(read_shard, store.paths())]
    assert made(Store(tmp_path / "parts", settings, 49_152)) == made(whole)
    manifest = json.loads((tmp_path / "parts" / MANIFEST).read_text())
    assert manifest["totals"]["answer_tokens"] >= 40


def test_length_groups_give_results_back_in_order_with_short_prompts_apart_from_long():
    from specchat.distill.batching import in_length_groups

    prompts = [[0] * n for n in (700, 40, 38, 690, 45, 41)]
    groups = []
    out = in_length_groups(prompts, len, 200, lambda group: groups.append([len(p) for p in group]) or
                           [len(p) for p in group])
    assert out == [700, 40, 38, 690, 45, 41]
    assert groups == [[38, 40, 41, 45], [690], [700]]
