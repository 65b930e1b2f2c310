"""A trained drafter (`specchat distill`) as a transformers model, so that transformers'
assisted generation can run the same drafter in `bench --peers hf`.

The draft model is a Llama layer stack over the target's embedding table with a
reduced output vocabulary. A LlamaForCausalLM built around the very same modules
(its layers, norms and head, shared, not copied, so quantized or fp16-packed ones
stay as they are) proposes what the drafter's model proposes: its output layer is
the draft head, scattered into the full vocabulary with every other token far below.
What the peer lacks is specchat's copy-from-context lookup, which assisted
generation has no place for. A drafter that reads the target's hidden states
(EAGLE-style) has no transformers counterpart.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from specchat.engine.drafters.draft_model import DraftModel

_OUTSIDE = -1e4  # the score of tokens outside the draft vocabulary: never chosen


class ScatteredHead(nn.Module):
    """Draft-vocabulary logits placed at their target token ids."""

    def __init__(self, head: nn.Module, vocab_ids: torch.Tensor, vocab_size: int) -> None:
        super().__init__()
        self.head, self.out_features = head, vocab_size
        self.register_buffer("vocab_ids", vocab_ids, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.head(x)
        full = small.new_full((*small.shape[:-1], self.out_features), _OUTSIDE)
        return full.index_copy_(-1, self.vocab_ids, small)


def as_transformers_model(draft: DraftModel, target_model) -> LlamaForCausalLM:
    """A LlamaForCausalLM that computes what `draft` does, over the target's vocabulary."""
    cfg = draft.cfg
    if cfg.reads_target_states:
        raise ValueError("a drafter that reads the target's states has no transformers counterpart")
    target_config = target_model.config
    config = LlamaConfig(
        vocab_size=cfg.target_vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        max_position_embeddings=target_config.max_position_embeddings, tie_word_embeddings=False,
        bos_token_id=target_config.bos_token_id, eos_token_id=target_config.eos_token_id,
        pad_token_id=target_config.pad_token_id)
    with torch.device("meta"):  # every weight is replaced below: allocate none
        model = LlamaForCausalLM(config)
    # The drafter casts rows after lookup; here the table itself must be in its dtype.
    table = draft.embed if draft.embed.dtype == draft.compute_dtype else draft.embed.to(draft.compute_dtype)
    model.model.embed_tokens = nn.Embedding.from_pretrained(table, freeze=True)
    for ours, theirs in zip(draft.layers, model.model.layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(theirs.self_attn, name, getattr(ours, name))
        for name in ("gate_proj", "up_proj", "down_proj"):
            setattr(theirs.mlp, name, getattr(ours, name))
        theirs.input_layernorm.weight = ours.input_layernorm.weight
        theirs.post_attention_layernorm.weight = ours.post_attention_layernorm.weight
    model.model.norm.weight = draft.norm.weight
    model.lm_head = ScatteredHead(draft.head, draft.vocab_ids, cfg.target_vocab)
    # The rotary table was built on the meta device: build it again where the layers are.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config).to(draft.device)
    return model.eval()
