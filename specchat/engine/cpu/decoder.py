"""The target's decoder computed without transformers' modules: the CPU fast path.

Why: a decode step of the embedded target through transformers' modules costs
~2,000 small operations (module calls, mask building, casts), about as much time
as reading the weights. This decoder does what a Llama-family layer needs and
nothing else: one fused QKV product, one fused gate/up product, rotary from the
model's own rotary module (every rope type transformers knows), attention over the
preallocated cache (model/kv_cache.py) by sdpa, with keys shared by groups of heads rather
than repeated.

It covers the families whose layers are the Llama layer with optional QKV biases
and optional per-head q/k norms (llama, mistral, qwen2, qwen3) when no layer has a
sliding window; `unsupported(model)` says why another model keeps transformers'
forward, which stays the loader and the fallback. The weights are read from the
loaded model once; the linear layers are made by a weight format's maker (quant/weight_formats.py).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from specchat.engine.cpu import int8_kv, kernel_build
from specchat.engine.cpu.exact_attention import RowGroup, attend_rows, exact_rows, plan_rows, visible
from specchat.engine.cpu.fused_layers import FusedLayers
from specchat.engine.cpu.quant.block_formats import Q4_1Linear, Q8_0Linear, TILE_OUTS
from specchat.engine.model.kv_cache import KVCache
from specchat.engine.model.rotation_table import RotationTable, rotate
from specchat.engine.model.windows import layer_windows

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported(model) -> str | None:
    """Why the CPU decoder cannot compute this model, or None when it can."""
    config = model.config
    kind = getattr(config, "model_type", "")
    if kind not in FAMILIES:
        return f"the CPU decoder covers {', '.join(FAMILIES)}, not {kind}"
    if any(window is not None for window in layer_windows(config).values()):
        return "sliding-window layers"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    if getattr(config, "mlp_bias", False):
        return "biases in the MLP"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "tensor-parallel slicing (pretraining_tp)"
    return None


def _fused(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = torch.cat([linear.weight.detach().float() for linear in linears])
    biases = [linear.bias for linear in linears]
    if all(bias is None for bias in biases):
        return weight, None
    return weight, torch.cat([(b.detach().float() if b is not None else weight.new_zeros(l.out_features))
                              for b, l in zip(biases, linears)])


def norm_rows(x: torch.Tensor, norm: tuple[torch.Tensor, float], kernels: bool, into=None) -> torch.Tensor:
    """RMSNorm of rows x [t, hidden] fp32: specchat's kernel on the kernel route (in bf16
    when the product `into` takes bf16: the same values its own cast would make), else torch's."""
    weight, eps = norm
    if kernels:
        return torch.ops.specchat_cpu.rms_norm(x, weight, eps, _takes_bf16(into))
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _direct_products(*linears) -> tuple | None:
    """(operator, its weights) for each linear when every one is a block format's
    (Q4_1, Q8_0) with no bias and no padded outputs, whose forward is exactly
    operator(x, weights) on a pass's 2-D rows: what the fused operator (FusedLayers) calls."""
    direct = []
    for linear in linears:
        if not isinstance(linear, (Q4_1Linear, Q8_0Linear)) or linear.bias is not None \
                or linear.out_features % TILE_OUTS:
            return None
        op = torch.ops.specchat_cpu.q4_1_mm if isinstance(linear, Q4_1Linear) else torch.ops.specchat_cpu.q8_0_mm
        direct.append((op, linear.tiles))
    return tuple(direct)


def _takes_bf16(linear) -> bool:
    return getattr(linear, "takes_bf16", False)


# Passes of up to this many rows attend by specchat's kernel where it builds, whatever
# rows they read: a drafter's catch-up pass then computes its last row as a single
# step would (a drafter drafting for itself has every draft accepted); longer passes
# (a prompt's prefill) take sdpa, which is faster over many rows.
KERNEL_ROWS = 16


def causal_mask(start: int, count: int) -> torch.Tensor | None:
    """bool [count, start + count]: a pass of `count` tokens after `start` held, each
    seeing what is held and the pass up to itself; None for one token (it sees all)."""
    return torch.ones(count, start + count, dtype=torch.bool).tril(start) if count > 1 else None


@dataclass(frozen=True)
class PassPlan:
    """How one pass runs through the layers, decided once a pass. Two routes:

    - specchat's kernels (`visible` set, bool [queries, positions]: what each row
      sees): attention, norms, rotation and SiLU by specchat's operators, each row
      over exactly what it sees; all layers in one call where the fused operator
      applies (FusedLayers);
    - torch: one sdpa call under `mask` (a prefill, a pass of an inexact format), or,
      with `groups`, each row by sdpa over exactly the keys it sees (exact_attention.py).
    """

    mask: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    groups: list[RowGroup] | None = None

    @property
    def kernels(self) -> bool:
        return self.visible is not None

    @classmethod
    def on_kernels(cls, mask: torch.Tensor | None, start: int, count: int) -> PassPlan:
        """The kernel route for a pass of `count` rows after `start` held, under `mask`."""
        return cls(visible=visible(mask) if count > 1 else torch.ones(1, start + 1, dtype=torch.bool))


class CpuLayer(nn.Module):
    def __init__(self, layer, config, make_linear, kv_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.kv_dtype = kv_dtype
        attention, mlp = layer.self_attn, layer.mlp
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = int8_kv.head_size(config)
        self.scale = attention.scaling
        # an int8 cache (int8_kv.py): keys stored divided by these, queries multiplied
        self.coded = kv_dtype == torch.int8
        self.channels = torch.ones(self.kv_heads, self.head_dim)
        self.qkv = make_linear(*_fused(attention.q_proj, attention.k_proj, attention.v_proj))
        self.out = make_linear(*_fused(attention.o_proj))
        self.gate_up = make_linear(*_fused(mlp.gate_proj, mlp.up_proj))
        self.down = make_linear(*_fused(mlp.down_proj))
        self.intermediate = mlp.gate_proj.out_features
        self.norms = [(norm.weight.detach().float(), norm.variance_epsilon)
                      for norm in (layer.input_layernorm, layer.post_attention_layernorm)]
        # qwen3: an RMSNorm over each head's queries and keys before the rotation
        self.qk_norms = [(norm.weight.detach().float(), norm.variance_epsilon)
                         for norm in (getattr(attention, "q_norm", None), getattr(attention, "k_norm", None))
                         if norm is not None]
        self.direct = _direct_products(self.qkv, self.out, self.gate_up, self.down)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_layer,
                plan: PassPlan) -> torch.Tensor:
        qkv = self.qkv(norm_rows(x, self.norms[0], plan.kernels, into=self.qkv))
        if plan.kernels:
            return self._attend_and_mlp(x, self._queries_by_kernels(qkv, cos, sin, cache_layer), cache_layer,
                                        plan.visible)
        qk, v = self._rotated_into_cache(qkv, cos, sin, cache_layer)
        heads = self.heads
        if self.coded:
            keys, values = int8_kv.dequantized(cache_layer, self.channels)  # fp32, for sdpa
        else:
            if self.kv_dtype != qk.dtype:  # queries too: sdpa takes one dtype
                qk, v = qk.to(self.kv_dtype), v.to(self.kv_dtype)
            keys, values = cache_layer.update(qk[None, heads:], v[None])
        gqa = self.kv_heads != heads
        if plan.groups is None:
            attended = F.scaled_dot_product_attention(qk[None, :heads], keys, values, attn_mask=plan.mask,
                                                      scale=self.scale, enable_gqa=gqa)
        else:  # each query over exactly the keys it sees, as a single step runs it
            attended = attend_rows(qk[None, :heads], cache_layer.keys, cache_layer.values, plan.groups,
                                   self.scale, gqa)
        x = x + self.out(attended[0].transpose(0, 1).reshape(x.shape[0], -1))  # a bf16 output promotes exactly
        return self._mlp(x)

    def _queries_by_kernels(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                            cache_layer) -> torch.Tensor:
        """The rotated queries [heads, t, d] fp32 (times an int8 cache's key factors),
        these rows' rotated keys and values in the cache: written by rotate_into_cache
        where the layer's positions can be claimed (its buffers made and large enough,
        no per-head norms), else rotated in torch and written by the cache."""
        t, heads = qkv.shape[0], self.heads
        start = None if self.qk_norms else cache_layer.claim(t, int8_kv.KEYS if self.coded else self.kv_dtype)
        if start is not None:
            codes = self._scales(cache_layer)
            return torch.ops.specchat_cpu.rotate_into_cache(qkv, cos, sin, cache_layer.keys[0], cache_layer.values[0],
                                                            start, heads, *codes, *self._factors(codes))
        qk, v = self._rotated_into_cache(qkv, cos, sin, cache_layer)
        if self.coded:
            queries = qk[:heads] * self.channels.repeat_interleave(heads // self.kv_heads, 0)[:, None]
        else:
            cache_layer.update(qk[None, heads:].to(self.kv_dtype), v[None].to(self.kv_dtype))
            queries = qk[:heads]
        return queries.contiguous()

    def _rotated_into_cache(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                            cache_layer) -> tuple[torch.Tensor, torch.Tensor]:
        """(the rotated queries and keys [heads + kv heads, t, d], the values [kv heads,
        t, d]) fp32, in torch. An int8 cache gets the keys and values here (quantized in
        torch); a float cache is written by the caller, in its dtype."""
        t, d, heads = qkv.shape[0], self.head_dim, self.heads
        qkv = qkv.float().view(t, -1, d)
        qk, v = qkv[:, : heads + self.kv_heads], qkv[:, heads + self.kv_heads:]
        if self.qk_norms:
            (qw, qe), (kw, ke) = self.qk_norms
            qk = torch.cat([F.rms_norm(qk[:, :heads], (d,), qw, qe), F.rms_norm(qk[:, heads:], (d,), kw, ke)], 1)
        qk = rotate(qk, cos[:, None], sin[:, None]).transpose(0, 1)  # queries and keys in one rotation
        v = v.transpose(0, 1)
        if self.coded:  # an int8 cache (a prefill, a buffer to grow): written here, in torch
            keys, key_scales = int8_kv.to_codes(qk[heads:] / self.channels[:, None])
            values, value_scales = int8_kv.to_codes(v)
            cache_layer.update_codes(keys[None], key_scales[None], values[None], value_scales[None])
        return qk, v

    def _scales(self, cache_layer) -> tuple:
        """What the kernels take beside an int8 cache's buffers: its per-position key and
        value scales; nothing for another cache."""
        return (cache_layer.key_scales[0], cache_layer.value_scales[0]) if self.coded else ()

    def _factors(self, scales: tuple) -> tuple:
        """What rotate_into_cache takes after an int8 cache's scales: the key channel factors."""
        return (self.channels,) if scales else ()

    def _attend_and_mlp(self, x: torch.Tensor, queries: torch.Tensor, cache_layer, rows: torch.Tensor) -> torch.Tensor:
        """The rest of a layer on specchat's kernels: queries [heads, t, d] fp32 over the
        cache (these rows' keys and values in it), each row over what it sees."""
        attended = torch.ops.specchat_cpu.attend_rows(queries, cache_layer.keys[0], cache_layer.values[0],
                                                      rows, self.scale, *self._scales(cache_layer))
        x = x + self.out(attended)
        gate_up = self.gate_up(norm_rows(x, self.norms[1], kernels=True, into=self.gate_up))
        return x + self.down(torch.ops.specchat_cpu.silu_mul(gate_up, _takes_bf16(self.down)))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(norm_rows(x, self.norms[1], kernels=False)).float().split(self.intermediate, dim=-1)
        return x + self.down(F.silu(gate) * up)


def run_layers(layers, fused: FusedLayers | None, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               cache: KVCache, plan: PassPlan) -> torch.Tensor:
    """x [rows, hidden] through every layer: in one operator call on the kernel route
    where the fused operator applies and every layer's positions can be claimed,
    else layer by layer (which makes or grows the buffers)."""
    if plan.kernels and fused is not None:
        passed = fused(x, cos, sin, plan.visible, cache)
        if passed is not None:
            return passed
    for layer, cache_layer in zip(layers, cache.layers):
        x = layer(x, cos, sin, cache_layer, plan)
    return x


class CpuBody(nn.Module):
    """Embedding → layers → final norm: the last hidden states [1, positions, hidden]
    (what transformers' decoder returns as last_hidden_state; StateTap hooks this)."""

    def __init__(self, model, make_linear, kv_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        decoder = model.get_decoder()
        self.embed = decoder.embed_tokens.weight.detach()
        self.layers = nn.ModuleList(CpuLayer(layer, model.config, make_linear, kv_dtype)
                                    for layer in decoder.layers)
        self.norm = (decoder.norm.weight.detach().float(), decoder.norm.variance_epsilon)
        self.rotary = decoder.rotary_emb
        self.rotation = RotationTable.of(self.rotary)  # None: the module on every pass
        self.at_once = FusedLayers.of(self.layers)

    def forward(self, input_ids: torch.Tensor, cache: KVCache, positions: torch.Tensor,
                plan: PassPlan) -> torch.Tensor:
        x = F.embedding(input_ids, self.embed).float()
        if self.rotation is not None:
            cos, sin = self.rotation(x, positions)
        else:
            cos, sin = self.rotary(x[None], positions[None])
            cos, sin = cos[0].float(), sin[0].float()
        x = run_layers(self.layers, self.at_once, x, cos, sin, cache, plan)
        return norm_rows(x, self.norm, kernels=plan.kernels)[None]


class CpuDecoder(nn.Module):
    """logits(token ids, cache, keep, positions, mask) for one sequence, as
    forward.forward_logits asks of transformers' model."""

    def __init__(self, model, make_linear, make_head=None, exact: bool = False,
                 kv_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        # exact: a pass whose every row is read (a single step, a verify pass) attends
        # by attend_rows, so each row's logits are bit for bit a single step's. Formats with bf16
        # activations need it: sdpa over k + 1 queries sums in another order than over
        # one (~1e-7 apart), bf16 rounding makes that ~1e-3, and greedy answers then
        # left plain decoding about once in a few hundred tokens.
        # kv_dtype: the cache's keys and values (and the attention's arithmetic). bf16
        # for formats whose products take bf16 inputs anyway: the attention's output
        # is rounded to bf16 by the next product, values come out of one in bf16, and
        # after a long document the cache is read at every step (30 layers x 3,500
        # positions: 160 MB in fp32, as much as the weights several times over).
        self.exact, self.kv_dtype = exact, kv_dtype
        # specchat's attention kernel for the rows of steps and verify passes, where it
        # builds: each row over exactly what it sees, so exact whatever the format, and
        # on a 2-core EPYC ~10x faster than sdpa in bf16, 2x in fp32 (cpu/kernel_build.py)
        self.row_kernel = kernel_build.available()
        if kv_dtype == torch.int8 and (not self.row_kernel or int8_kv.head_size(model.config) % int8_kv.BLOCK):
            raise ValueError(f"an int8 KV cache needs specchat's CPU kernels and heads of a multiple of "
                             f"{int8_kv.BLOCK} elements")
        self.body = CpuBody(model, make_linear, kv_dtype)
        self.head = (make_head or make_linear)(*_fused(model.get_output_embeddings()))

    @torch.inference_mode()
    def calibrate_key_channels(self, token_ids: list[int]) -> None:
        """An int8 cache's per-channel key factors (cpu/int8_kv.py), from the keys of a
        text (the warm-up text) as this decoder computes them."""
        cache = KVCache(len(self.body.layers))
        self.logits(token_ids, cache, keep=0)
        for layer, cache_layer in zip(self.body.layers, cache.layers):
            keys, _ = int8_kv.dequantized(cache_layer, layer.channels)
            layer.channels = int8_kv.channel_factors(keys[0])

    def plan(self, mask: torch.Tensor | None, start: int, count: int, keep: int) -> PassPlan:
        """Steps, verify and catch-up passes on specchat's kernels where they build; a
        pass whose every row is read by exact rows for an exact format without them;
        else one sdpa call (a prefill, every pass of an inexact format)."""
        if self.row_kernel and (keep == count or count <= KERNEL_ROWS):
            return PassPlan.on_kernels(mask, start, count)
        if self.exact and keep == count:
            return PassPlan(groups=plan_rows(exact_rows(mask) if count > 1 else [start + 1], self.kv_dtype))
        return PassPlan(mask=mask)

    @torch.inference_mode()
    def logits(self, token_ids: list[int], cache: KVCache, keep: int,
               position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        start, count = cache.length, len(token_ids)
        positions = position_ids if position_ids is not None else torch.arange(start, start + count)
        mask = attention_mask if attention_mask is not None else causal_mask(start, count)
        cache.reserve(start + count)
        hidden = self.body(torch.tensor(token_ids), cache, positions, self.plan(mask, start, count, keep))[0]
        return self.head(hidden[-keep:]) if keep else hidden[:0, :0]


# The CPU decoder computing each transformers model, where one does: model/forward.py asks
# here before calling the model itself.
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach(model, decoder: CpuDecoder | None) -> None:
    if decoder is None:
        _ATTACHED.pop(model, None)
    else:
        _ATTACHED[model] = decoder


def attached(model) -> CpuDecoder | None:
    return _ATTACHED.get(model)


@contextmanager
def attached_as(model, decoder: CpuDecoder | None):
    """`decoder` computes `model` inside the block (a format being measured)."""
    before = attached(model)
    attach(model, decoder)
    try:
        yield
    finally:
        attach(model, before)
