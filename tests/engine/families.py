"""Tiny random models of the architectures specchat serves, sliding windows included.

Each builder takes a vocabulary size, a seed, a layer count and a window and gives
an fp32 model in eval mode. Windows are small (8 positions) so a prompt of a few
dozen tokens runs well past them; the hybrid families (Qwen2, Qwen3, Gemma 2,
Gemma 3) mix full and sliding layers.
"""

from __future__ import annotations

import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

WINDOW = 8
_COMMON = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)


def _hybrid(layers: int) -> list[str]:
    """Full attention every second layer, starting with a sliding one (as Gemma 2)."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]


# family -> (config class, model class, extra config fields given layers and window)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, lambda layers, window: {}),
    "mistral": (MistralConfig, MistralForCausalLM, lambda layers, window: dict(sliding_window=window)),
    "phi3": (Phi3Config, Phi3ForCausalLM, lambda layers, window: dict(sliding_window=window)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM,
              lambda layers, window: dict(use_sliding_window=window is not None, sliding_window=window,
                                          max_window_layers=1)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM,
              lambda layers, window: dict(use_sliding_window=window is not None, sliding_window=window,
                                          max_window_layers=1, head_dim=16)),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM,
               lambda layers, window: dict(sliding_window=window, layer_types=_hybrid(layers), head_dim=16,
                                           query_pre_attn_scalar=16)),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM,
               lambda layers, window: dict(sliding_window=window, layer_types=_hybrid(layers), head_dim=16,
                                           query_pre_attn_scalar=16)),
}
SLIDING = [name for name in FAMILIES if name != "llama"]
# The families the lean decoder computes when built without a window (window=None).
CPU_FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]


def build(family: str, vocab_size: int = 64, seed: int = 0, layers: int = 2, hidden: int = 64,
          window: int = WINDOW, attention: str | None = None, head_dim: int | None = None):
    """attention: "sdpa" or "eager"; None lets transformers choose (sdpa where the family has it).
    window=None: full attention in every layer (mistral, qwen2, qwen3). head_dim: the
    family's own (16 where it names one, else hidden / 4) unless given."""
    config_class, model_class, extra = FAMILIES[family]
    torch.manual_seed(seed)
    fields = {**_COMMON, **extra(layers, window), **({"head_dim": head_dim} if head_dim else {})}
    config = config_class(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=layers, **fields)
    if attention is not None:
        config._attn_implementation = attention
    model = model_class(config).eval()
    # Random init is near-uniform; a sharper head gives clear greedy choices and p != q.
    model.get_output_embeddings().weight.data.mul_(4.0)
    return model
