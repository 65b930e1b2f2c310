"""A Hugging Face cache on disk, filled with tiny real models and tokenizers.

The layout is huggingface_hub's (models--Org--Name/snapshots/<hash>, refs/main), so
scan_cache_dir lists it and transformers loads from it offline, as from a real one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SNAPSHOT = "0" * 40


def word_tokenizer(words: list[str], extra: list[str] = ()) -> PreTrainedTokenizerFast:
    """A tokenizer whose token i is words[i]; `extra` are added tokens after them."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    if extra:
        fast.add_tokens(list(extra))
    return fast


def words(n: int, stem: str = "t") -> list[str]:
    return [f"{stem}{i}" for i in range(n)]


def snapshot_dir(hub: Path, repo_id: str) -> Path:
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def cache_model(hub: Path, repo_id: str, tokenizer: PreTrainedTokenizerFast, **shape) -> Path:
    """A random model saved into the cache as `repo_id` (shape: as save_model)."""
    return save_model(snapshot_dir(hub, repo_id), tokenizer, **shape)


def save_model(directory: Path, tokenizer: PreTrainedTokenizerFast, *, hidden: int = 32, layers: int = 1,
               vocab_size: int | None = None, family: str = "llama", seed: int = 0) -> Path:
    """A random model saved with save_pretrained; `vocab_size` (its output rows)
    defaults to the tokenizer's length, larger = a padded head."""
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[family]
    config = config_class(vocab_size=vocab_size or len(tokenizer), hidden_size=hidden,
                          intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None,
                          eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model_class(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def cache_stand_in(hub: Path, repo_id: str, config: dict, tokenizer_from: Path, parameters: int) -> Path:
    """A model the picker can weigh but nothing could load: its config, another model's
    tokenizer files and a safetensors header of `parameters` (the picker reads no further;
    the data after it is a hole in a sparse file)."""
    snapshot = snapshot_dir(hub, repo_id)
    (snapshot / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_from / name).is_file():
            (snapshot / name).write_bytes((tokenizer_from / name).read_bytes())
    header = json.dumps({"weight": {"dtype": "F16", "shape": [parameters], "data_offsets": [0, 2 * parameters]}})
    with (snapshot / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header.encode())
        f.truncate(8 + len(header) + 2 * parameters)
    return snapshot


def spoil_weights(snapshot: Path) -> None:
    """Make the weights unloadable while their header still reads: an unknown dtype."""
    path = snapshot / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"dtype":"F32"', b'"dtype":"Z32"'))
