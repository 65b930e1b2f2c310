"""`specchat models`: the offline default, the device, quantization, cached models."""

from __future__ import annotations

import json

import torch

from specchat.local_models import cache_root

from .conftest import specchat


def _cached_repo(hub, repo_id: str, config: dict) -> None:
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


def _default_vocab() -> int:
    from specchat.models import convert_gguf, embedded_gguf_path

    directory = convert_gguf(embedded_gguf_path())  # a no-op once converted
    return json.loads((directory / "config.json").read_text())["vocab_size"]


def test_models_lists_default_device_and_cached_causal_lms(tmp_path):
    default_vocab = _default_vocab()
    hub = tmp_path / "hub"
    _cached_repo(hub, "acme/same-vocab-lm", {"architectures": ["LlamaForCausalLM"], "vocab_size": default_vocab})
    _cached_repo(hub, "acme/other-vocab-lm", {"architectures": ["Qwen2ForCausalLM"], "vocab_size": default_vocab + 7})
    _cached_repo(hub, "acme/encoder", {"architectures": ["BertModel"], "vocab_size": 30522})

    proc = specchat("models", "--json", env={"HF_HUB_CACHE": str(hub)})
    assert proc.returncode == 0, proc.stderr.decode()
    inv = json.loads(proc.stdout)
    assert inv["default_target"] == "embedded" and inv["default_available"] is True
    assert inv["default_cache_ready"] is True
    assert inv["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(inv["quantization_ok"], bool) and inv["quantization"].startswith("yes" if inv["quantization_ok"] else "no")
    listed = {m["spec"]: m for m in inv["models"] if m["source"] == "hf-cache"}
    assert set(listed) == {"acme/same-vocab-lm", "acme/other-vocab-lm"}  # the encoder cannot generate
    assert listed["acme/same-vocab-lm"]["drafter_for_default"] is True
    assert listed["acme/other-vocab-lm"]["drafter_for_default"] is False


def test_models_names_how_each_target_is_held_on_this_machine(tmp_path):
    from specchat.engine.cpu import format_choice

    _default_vocab()
    hub, cache = tmp_path / "hub", tmp_path / "cache"
    _cached_repo(hub, "acme/held-lm", {"architectures": ["LlamaForCausalLM"], "vocab_size": 100})
    cache.mkdir()
    (cache / "converted").symlink_to(cache_root() / "converted")
    env = {"HF_HUB_CACHE": str(hub), "SPECCHAT_CACHE_DIR": str(cache)}
    inv = json.loads(specchat("models", "--json", env=env).stdout)
    assert inv["default_held_as"] == "" and inv["models"][0]["held_as"] == ""  # nothing loaded here yet
    key = format_choice.machine_key()
    format_choice.remember(format_choice.store_path(cache, "SmolLM2-135M-Instruct"), key,
                           format_choice.FormatChoice("q4_1", "x", kv="int8"))
    format_choice.remember(format_choice.store_path(cache, "held-lm"), key, format_choice.FormatChoice("fp16", "x"))
    inv = json.loads(specchat("models", "--json", env=env).stdout)
    assert inv["default_held_as"] == "q4_1, KV int8" and inv["models"][0]["held_as"] == "fp16, KV fp32"
    table = specchat("models", env={**env, "COLUMNS": "250"}).stdout.decode()
    assert "held here as q4_1, KV int8" in table and "fp16, KV fp32" in table


def test_models_table(cli):
    result = cli("models")
    assert result.exit_code == 0
    for label in ("default target", "device", "quantization"):
        assert label in result.stdout
