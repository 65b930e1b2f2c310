"""Every model problem a user can cause is one clear ModelError message."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specchat import models
from specchat.models import ModelError, load_drafter, load_target, resolve_device

from .helpers import word_tokenizer


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path):
    assert _message(load_target, str(tmp_path / "nope")) == f"no such file or directory: {tmp_path / 'nope'}"
    assert _message(load_target, str(tmp_path / "nope.gguf")) == f"no such file: {tmp_path / 'nope.gguf'}"


def test_neither_model_nor_gguf(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "neither a model directory (no config.json) nor a .gguf file" in _message(load_target, str(tmp_path))
    assert "neither a model directory" in _message(load_target, str(tmp_path / "notes.txt"))


def test_drafter_with_another_vocabulary(embedded, tmp_path):
    cfg = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    word_tokenizer(16).save_pretrained(tmp_path)
    message = _message(load_drafter, str(tmp_path), embedded, dtype=torch.float32)
    assert message == (f"drafter {str(tmp_path)!r} has a different tokenizer from target 'embedded': "
                       "id 0 is 't0' in the drafter and '<|endoftext|>' in the target")


def test_gguf_with_an_architecture_transformers_cannot_read(tmp_path, monkeypatch):
    import gguf

    monkeypatch.setenv("SPECCHAT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv-unknown")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = _message(load_target, str(path))
    assert message.startswith("cannot read odd.gguf: ")
    assert not any((tmp_path / "cache").rglob("*.safetensors")), "nothing half-converted is left to load"


def test_hub_id_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    message = _message(load_target, "specchat-tests/no-such-model")
    assert message == ("cannot load 'specchat-tests/no-such-model': not found locally and the "
                       "Hugging Face hub is not reachable (offline?)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_but_absent():
    assert _message(resolve_device, "cuda").startswith("--device cuda was asked for, but no CUDA device is available")


def test_unknown_quantization_and_device():
    assert _message(resolve_device, "tpu") == "unknown device 'tpu': use auto, cuda or cpu"
    assert _message(models._quantization, "3bit", torch.device("cpu")) == "unknown quantization '3bit': use 4bit, 8bit, fp16 or none"


def test_half_written_conversion_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    """A conversion interrupted before its completion marker is redone; a complete one is reused."""
    monkeypatch.setenv("SPECCHAT_CACHE_DIR", str(tmp_path))
    gguf_path = models.embedded_gguf_path()
    target = models.converted_dir(gguf_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{ truncated")
    assert not models.embedded_cache_ready()
    messages = []
    assert models.convert_gguf(gguf_path, progress=messages.append) == target
    assert models.embedded_cache_ready() and messages and "once" in messages[0]
    assert (target / "model.safetensors").is_file()
    assert not list(tmp_path.rglob(".converting-*")), "no temporary directory is left behind"
    # Ready now: a second call must not convert again.
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("converted twice"))
    assert models.convert_gguf(gguf_path, progress=pytest.fail) == target


def test_shipped_drafter_only_serves_its_own_target(tmp_path):
    from types import SimpleNamespace

    other = SimpleNamespace(spec=str(tmp_path))
    assert _message(load_drafter, "smoldraft", other) == (
        f"drafter 'smoldraft' was trained for the 'embedded' target, not {str(tmp_path)!r}")


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """A hub whose host never resolves (.invalid is reserved for that), and an empty cache."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hub-cache"


def test_an_unreachable_hub_fails_at_once_without_retry_noise(unreachable_hub, capfd):
    # huggingface_hub retries an unreachable host with backoff: about a minute of
    # "Retrying in 8s" lines before the error, had the hub been asked.
    started = time.monotonic()
    message = _message(load_target, "specchat-tests/no-such-model")
    assert time.monotonic() - started < 15
    assert message == ("cannot load 'specchat-tests/no-such-model': not found locally and the "
                       "Hugging Face hub is not reachable (offline?)")
    assert "Retry" not in capfd.readouterr().err


def test_a_mistyped_drafter_name_lists_the_drafter_names(unreachable_hub, embedded):
    message = _message(load_drafter, "smoldraf", embedded)
    assert message.endswith("not reachable (offline?); drafter names are smoldraft, ngram, none")


def test_a_hub_model_in_the_local_cache_loads_without_the_hub(unreachable_hub):
    cfg = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    # The layout huggingface_hub gives a downloaded repo: refs/main names a snapshot.
    repo = unreachable_hub / "models--specchat-tests--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    LlamaForCausalLM(cfg).save_pretrained(snapshot)
    word_tokenizer(16).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = load_target("specchat-tests/tiny", device="cpu", quant="none")
    assert loaded.name == "tiny" and loaded.model.config.vocab_size == 16
