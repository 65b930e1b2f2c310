"""`specchat distill` reaches the distill pipeline's own parser; the HF peers skip
assisted generation for a drafter transformers cannot use as an assistant."""

from __future__ import annotations

from typer.testing import CliRunner

from specchat.bench.peers import hf_peers
from specchat.cli import app
from specchat.models import load_drafter


def test_distill_command_passes_its_arguments_through():
    result = CliRunner().invoke(app, ["distill", "--help"])
    assert result.exit_code == 0
    assert "--draft-vocab" in result.output and "--work-dir" in result.output


def test_hf_peers_for_each_drafter(embedded):
    keys = lambda drafter: [p.key for p in hf_peers(drafter, k=None)]  # noqa: E731
    assert keys(load_drafter("none", embedded)) == ["hf_generate"]
    assert keys(load_drafter("ngram", embedded)) == ["hf_generate", "hf_assisted"]
    assert keys(load_drafter("embedded", embedded)) == ["hf_generate", "hf_assisted"]
    # the shipped drafter has a reduced vocabulary and its own cache: no transformers twin
    assert keys(load_drafter("smoldraft", embedded)) == ["hf_generate"]
