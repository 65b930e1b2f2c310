"""`specchat distill` reaches the distill pipeline's own parser; the HF peers run
assisted generation with the same drafter, specchat's trained one included."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from specchat.bench.hf_drafter import as_transformers_model
from specchat.bench.peers import hf_peers
from specchat.cli import app
from specchat.models import load_drafter


def test_distill_command_passes_its_arguments_through():
    result = CliRunner().invoke(app, ["distill", "--help"])
    assert result.exit_code == 0
    assert "--draft-vocab" in result.output and "--work-dir" in result.output


def test_hf_peers_for_each_drafter(embedded):
    keys = lambda drafter: [p.key for p in hf_peers(drafter, None, embedded.model)]  # noqa: E731
    assert keys(load_drafter("none", embedded)) == ["hf_generate"]
    assert keys(load_drafter("ngram", embedded)) == ["hf_generate", "hf_assisted"]
    assert keys(load_drafter("embedded", embedded)) == ["hf_generate", "hf_assisted"]
    assert keys(load_drafter("smoldraft", embedded)) == ["hf_generate", "hf_assisted"]
    fixed = hf_peers(load_drafter("smoldraft", embedded), 3, embedded.model)[1].kwargs["assistant_model"]
    assert fixed.generation_config.num_assistant_tokens == 3


def test_shipped_drafter_as_a_transformers_assistant_is_the_same_drafter(embedded):
    drafter = load_drafter("smoldraft", embedded, quant="none")
    twin = as_transformers_model(drafter.model, embedded.model)
    ids = torch.tensor([embedded.tokenizer("The capital of France is Paris. The capital of Spain is")["input_ids"]])
    with torch.inference_mode():
        ours, theirs = drafter.model(ids), twin(ids).logits
    vocab = drafter.model.vocab_ids
    torch.testing.assert_close(theirs[..., vocab], ours, rtol=1e-4, atol=1e-4)
    assert theirs.shape[-1] == 49152 and (theirs.argmax(-1) == vocab[ours.argmax(-1)]).all()
    # transformers' assisted generation with it still returns the target's greedy output
    with torch.inference_mode():
        plain = embedded.model.generate(ids, max_new_tokens=16, do_sample=False)
        assisted = embedded.model.generate(ids, max_new_tokens=16, do_sample=False, assistant_model=twin)
    assert assisted.tolist() == plain.tolist()
