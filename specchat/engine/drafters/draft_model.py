"""A small drafter trained by specchat for one target (`specchat distill`).

The model is a shallow Llama that borrows the target's input embedding table (frozen,
not shipped: the target is loaded anyway) and predicts over a reduced draft vocabulary,
the few thousand tokens the target itself emits most. The 49k-row output layer is what
makes a small drafter expensive on a CPU; a reduced head costs a tenth of it, and the
target simply rejects a draft that needed a token outside the subset.

Shipped files (one directory): config.json (`DraftConfig`), model.safetensors (layers,
final norm, head), vocab.json (draft index → target token id), provenance.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specchat.engine.model.kv_cache import KVCache
from specchat.engine.model.rotation_table import RotationTable, rotate


@dataclass
class DraftConfig:
    hidden_size: int = 576
    num_layers: int = 2
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    intermediate_size: int = 1536
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    draft_vocab: int = 8192
    target_vocab: int = 49152
    # EAGLE-style: each position reads the target's hidden state beside its token
    # (see drafters/states_reading.py); False is a drafter of tokens alone.
    reads_target_states: bool = False

    @classmethod
    def from_target(cls, config, num_layers: int, draft_vocab: int,
                    reads_target_states: bool = False) -> DraftConfig:
        rope = getattr(config, "rope_parameters", None) or {}
        return cls(hidden_size=config.hidden_size, num_layers=num_layers,
                   num_heads=config.num_attention_heads, num_kv_heads=config.num_key_value_heads,
                   head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
                   intermediate_size=config.intermediate_size,
                   rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
                   rms_norm_eps=float(config.rms_norm_eps), draft_vocab=draft_vocab,
                   target_vocab=config.vocab_size, reads_target_states=reads_target_states)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class DraftLayer(nn.Module):
    def __init__(self, cfg: DraftConfig) -> None:
        super().__init__()
        h, hd = cfg.hidden_size, cfg.head_dim
        self.cfg = cfg
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(h, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * hd, h, bias=False)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.gate_proj = nn.Linear(h, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(h, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, h, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, index: int) -> torch.Tensor:
        q, k, v = self.project(x, cos, sin)
        t = x.shape[1]
        start = 0
        if cache is not None:
            start = cache.layers[index].length
            k, v = cache.update(k, v, index)  # the filled part, these positions included
        if t == 1:
            mask, causal = None, False  # one new query sees the whole cache
        elif start == 0:
            mask, causal = None, True
        else:
            mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
            causal = False
        return self.finish(x, q, k, v, mask, causal)

    def project(self, x, cos, sin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values [batch, heads, positions, head_dim], rotated."""
        cfg = self.cfg
        b, t, _ = x.shape
        y = self.input_layernorm(x)
        q = self.q_proj(y).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(y).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(y).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def finish(self, x, q, k, v, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        """Attention over the given keys (mask: True where a query may look), then the MLP."""
        b, t, _ = x.shape
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              enable_gqa=self.cfg.num_kv_heads != self.cfg.num_heads)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, t, -1))
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


_PROBE = "target_embedding_probe"  # a few target embedding rows, to recognise the target


class DraftModel(nn.Module):
    """Shallow Llama over the target's embeddings, reduced output vocabulary.

    `embed` is the target's input embedding table; it is held, not registered, so
    it is neither trained nor saved.
    """

    lean = None  # passes by the CPU decoder's layers, where cpu_passes.attach gave them

    def __init__(self, cfg: DraftConfig, embed: torch.Tensor, vocab_ids: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = embed
        self.layers = nn.ModuleList(DraftLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.draft_vocab, bias=False)
        if cfg.reads_target_states:
            # [token embedding; target hidden state] -> the layers' input width
            self.fuse = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.register_buffer("vocab_ids", vocab_ids.long(), persistent=False)
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    # The final norm is never quantized, so it tells the dtype and device activations use.
    @property
    def compute_dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    def rope(self, start: int, length: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary cos/sin for positions start..start+length-1, from a table of the
        positions so far (model/rotation_table.py; computing them cost ~13 us of a ~150 us
        drafting step, and a position's row is the same either way)."""
        table = self.__dict__.get("_rotation")  # held, not a submodule: never saved
        if table is None:
            table = self.__dict__["_rotation"] = RotationTable(self._rotary)
        cos, sin = table.span(start, start + length, self.inv_freq)
        return cos.to(dtype), sin.to(dtype)

    def _rotary(self, _x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [batch, positions, head size] of `positions` [batch, positions]."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def inputs(self, input_ids: torch.Tensor, target_states: torch.Tensor | None = None) -> torch.Tensor:
        """The first layer's input: token embeddings, fused with the states read beside them."""
        x = F.embedding(input_ids, self.embed).to(self.compute_dtype)
        if self.cfg.reads_target_states:
            x = self.fuse(torch.cat([x, target_states.to(x.dtype)], dim=-1))
        return x

    def features(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                 target_states: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [batch, positions, hidden] after the cache's contents.
        A drafter that reads target states takes one per position (the target's state
        before that token, or the drafter's own prediction of it) and returns its
        prediction of the target's state after it."""
        x = self.inputs(input_ids, target_states)
        start = cache.length if cache is not None else 0
        cos, sin = self.rope(start, input_ids.shape[1], x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        return self.norm(x)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                logits_to_keep: int = 0) -> torch.Tensor:
        """Draft-vocabulary logits [batch, positions, draft_vocab]: all positions when
        logits_to_keep is 0, else the last that many (the output layer is most of a
        step's cost, so a prefill asks for one)."""
        if self.lean is not None and cache is not None and logits_to_keep:  # drafters/cpu_passes.py
            return self.lean(input_ids, cache, logits_to_keep)
        x = self.features(input_ids, cache)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.head(x)

    # -- files ------------------------------------------------------------------------
    def save(self, directory: Path, provenance: dict) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in self.state_dict().items()}
        state[_PROBE] = self._probe().to(torch.bfloat16).contiguous()
        save_file(state, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
        (directory / "vocab.json").write_text(json.dumps(self.vocab_ids.tolist()) + "\n")
        (directory / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, embed: torch.Tensor, dtype: torch.dtype) -> DraftModel:
        from safetensors.torch import load_file

        cfg = DraftConfig(**json.loads((directory / "config.json").read_text()))
        vocab = torch.tensor(json.loads((directory / "vocab.json").read_text()))
        if embed.shape != (cfg.target_vocab, cfg.hidden_size):
            raise ValueError(f"drafter in {directory} was trained for a target with embeddings "
                             f"{cfg.target_vocab}x{cfg.hidden_size}, not {tuple(embed.shape)}")
        model = cls(cfg, embed, vocab)
        state = load_file(str(directory / "model.safetensors"))
        probe = state.pop(_PROBE)
        # Same shape is not same model: compare a few embedding rows with the ones
        # seen in training (loosely, as a quantized copy of the target differs a little).
        current = model._probe().float()  # the target's rows, on its device (CUDA there)
        similarity = F.cosine_similarity(probe.float().to(current.device), current, dim=-1).mean()
        if similarity < 0.95:
            raise ValueError(f"drafter in {directory} was trained for another target model "
                             f"(embedding similarity {similarity:.2f})")
        model.load_state_dict(state)
        return model.to(dtype).eval()

    def _probe(self) -> torch.Tensor:
        return self.embed[self.vocab_ids[:32].to(self.embed.device)].detach()
