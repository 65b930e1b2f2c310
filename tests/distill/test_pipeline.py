"""`specchat distill` end to end on a tiny setting, with the real embedded target."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from specchat.distill import main
from specchat.distill.datagen import chat_ids
from specchat.distill.followups import as_document
from specchat.engine.cpu.quant import fp16_linear
from specchat.engine.drafters.loading import load_trained_drafter
from specchat.engine.loop.sampling import SamplingSettings
from specchat.models import ModelError, load_drafter

TINY = ["--prompts", "4", "--batch-size", "2", "--max-new-tokens", "6", "--sampled-every", "2",
        "--layers", "1", "--draft-vocab", "48", "--steps", "3", "--tokens-per-batch", "64",
        "--checkpoint-every", "2", "--holdout", "0.5", "--seed", "3",
        "--calibration-prompts", "2", "--calibration-tokens", "8"]


@pytest.mark.slow
def test_distill_runs_end_to_end_and_resumes(tmp_path, embedded):
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--work-dir", str(work), "--out", str(out), "--threads", "1", *TINY, "--target-quant", "auto",
            "--prompt-set", "wide", "--derived-share", "0.5"]
    assert main(argv) == 0

    shards = sorted((work / "data").glob("shard_*.pt"))
    assert len(shards) == 2  # 4 prompts in batches of 2
    records = [r for s in shards for r in torch.load(s)]
    # The second batch holds one prompt built on the first batch's answers (followups.py).
    assert [r["derived"] for r in records] == [False, False, False, True]
    derived = records[3]
    assert derived["prompt"] == chat_ids(embedded.tokenizer, derived["messages"])
    earlier = [as_document(embedded.tokenizer.decode(r["answer"], skip_special_tokens=True)) for r in records[:2]]
    assert any(text in m["content"] for text in earlier for m in derived["messages"])
    assert any(r["sampled"] for r in records) and any(not r["sampled"] for r in records)
    for r in records:
        assert 0 < len(r["answer"]) <= 6 and len(r["labels"]) == len(r["answer"])
        if not r["sampled"]:
            assert r["labels"] == r["answer"]  # greedy: the argmax is what was emitted

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == "specchat distill " + " ".join(argv)
    assert prov["seed"] == 3 and prov["train_settings"]["steps"] == 3
    # "auto" is recorded as what the target answered in (fbgemm fp16 where it runs).
    assert prov["data_settings"]["prompt_set"] == "wide" and prov["data_settings"]["derived_share"] == 0.5
    assert prov["data_settings"]["target_quant"] == ("fp16" if fp16_linear.available() else "none")
    assert json.loads((work / "data" / "settings.json").read_text())["target_quant"] == \
        prov["data_settings"]["target_quant"]
    assert prov["data"]["answers"] == 4 and prov["heldout_eval_after"]["answers"] >= 1
    assert len(json.loads((out / "vocab.json").read_text())) <= 48

    drafter = load_trained_drafter(embedded, out, name="tiny")
    # Its calibration, measured with the engine after training, loads with it.
    measured = json.loads((out / "calibration.json").read_text())
    assert measured["measured"]["prompts"] == 2 and sum(measured["tried"]) > 0
    assert drafter.calibration is not None and drafter.load_notes == ()
    # What distill wrote is a drafter the engine takes by its directory.
    assert type(load_drafter(str(out), embedded, quant="none")) is type(drafter)
    other = dataclasses.replace(embedded, spec="some/other-model")
    with pytest.raises(ModelError, match="trained for the 'embedded' target"):
        load_drafter(str(out), other)
    proposal = drafter.propose(records[0]["prompt"], 4, SamplingSettings(), None)
    assert len(proposal.ids) == 4
    assert all(0 <= t < embedded.model.config.vocab_size for t in proposal.ids)

    # Same command again: nothing is regenerated and training is already at its last step.
    stamps = [s.stat().st_mtime_ns for s in shards]
    checkpoint = next(work.glob("checkpoint-*.pt"))
    assert torch.load(checkpoint, weights_only=False)["step"] == 3
    assert main(argv) == 0
    assert [s.stat().st_mtime_ns for s in shards] == stamps
    assert json.loads((out / "provenance.json").read_text())["train_seconds_last_run"] < 1.0


@pytest.mark.slow
def test_distill_of_a_state_reading_drafter_end_to_end(tmp_path, embedded):
    from specchat.engine.drafters.protocol import NoDrafter
    from specchat.engine.drafters.states_reading import FeatureDrafter
    from specchat.engine.loop.session import ChatSession, GenerationSettings

    work, out = tmp_path / "work", tmp_path / "out"
    assert main(["--work-dir", str(work), "--out", str(out), "--threads", "1", *TINY,
                 "--reads-target-states", "--unroll", "2"]) == 0

    records = [r for s in sorted((work / "data").glob("shard_*.pt")) for r in torch.load(s)]
    states = [x for f in sorted((work / "data").glob("features_*.pt")) for x in torch.load(f)]
    hidden = embedded.model.config.hidden_size
    assert [tuple(x.shape) for x in states] == [(len(r["prompt"]) + len(r["answer"]), hidden) for r in records]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["train_settings"]["reads_target_states"] is True

    drafter = load_trained_drafter(embedded, out, name="tiny-states")
    assert isinstance(drafter, FeatureDrafter)
    # In a real session it is handed the target's states and drafts; fp32 verification
    # keeps the answer exactly the plain one.
    settings = GenerationSettings(max_new_tokens=10, k=2)
    spec = list(ChatSession(embedded, drafter, settings=settings).send("Say hello."))
    plain = list(ChatSession(embedded, NoDrafter(), settings=settings).send("Say hello."))
    assert spec[-1].text == plain[-1].text
    assert spec[-1].totals.drafted > 0


def test_distill_refuses_a_work_dir_made_with_other_settings_in_one_line(tmp_path, capsys):
    data = tmp_path / "work" / "data"
    data.mkdir(parents=True)
    (data / "settings.json").write_text('{"batch_size": 7}')
    argv = ["--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--threads", "1", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("specchat distill: error: ") and "other settings" in err[-1]
    assert not (tmp_path / "out").exists()


def test_distill_refuses_a_derived_share_outside_0_to_1_in_one_line(tmp_path, capsys):
    argv = ["--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--threads", "1", *TINY,
            "--derived-share", "1.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "specchat distill: error: --derived-share must be between 0 and 1, not 1.5"
