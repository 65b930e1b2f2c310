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
loaded model once; the linear layers are made by a `LinearFormat` (formats.py).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from specchat.engine.cpu import int8_kv, kernel_build
from specchat.engine.cpu.exact_attention import attend_rows, exact_rows, plan_rows, visible
from specchat.engine.cpu.fused_layers import FusedLayers
from specchat.engine.cpu.quant.block_formats import Q4_1Linear, Q8_0Linear, TILE_OUTS
from specchat.engine.model.kv_cache import KVCache
from specchat.engine.model.rotation_table import RotationTable
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


def _norm(x: torch.Tensor, norm: tuple[torch.Tensor, float], glue: bool, into=None) -> torch.Tensor:
    """RMSNorm of rows x [t, hidden] fp32: specchat's kernel on the kernel path (in bf16
    when the product `into` takes bf16: the same values its own cast would make), else torch's."""
    weight, eps = norm
    if glue:
        return torch.ops.specchat_cpu.rms_norm(x, weight, eps, _takes_bf16(into))
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _direct_products(*linears) -> tuple | None:
    """(operator, its weights) for each linear when every one is a block format's
    (Q4_1, Q8_0) with no bias and no padded outputs, whose forward is exactly
    operator(x, weights) on a pass's 2-D rows: CpuLayer then calls them directly."""
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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


# Passes of up to this many rows attend by specchat's kernel where it builds, whatever
# rows they read: a drafter's catch-up pass then computes its last row as a single
# step would (a drafter drafting for itself has every draft accepted); longer passes
# (a prompt's prefill) take sdpa, which is faster over many rows.
KERNEL_ROWS = 16


def causal_mask(start: int, count: int) -> torch.Tensor | None:
    """bool [count, start + count]: a pass of `count` tokens after `start` held, each
    seeing what is held and the pass up to itself; None for one token (it sees all)."""
    return torch.ones(count, start + count, dtype=torch.bool).tril(start) if count > 1 else None


def kernel_rows(mask: torch.Tensor | None, start: int, count: int) -> torch.Tensor:
    """What each row of a pass sees, as specchat's attention kernel takes it (`visible`)."""
    return visible(mask) if count > 1 else torch.ones(1, start + 1, dtype=torch.bool)


class CpuLayer(nn.Module):
    def __init__(self, layer, config, make_linear, kv_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.kv_dtype = kv_dtype
        attention, mlp = layer.self_attn, layer.mlp
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = int8_kv.head_size(config)
        self.scale = attention.scaling
        # an int8 cache (cpu/int8_kv.py): keys stored divided by these, queries multiplied
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
                mask: torch.Tensor | None, rows: list | None = None) -> torch.Tensor:
        """rows: None for one attention call over the pass; a bool tensor [queries,
        positions] (`visible`) for specchat's attention kernel; else what each query
        sees (plan_rows)."""
        t, d, heads = x.shape[0], self.head_dim, self.heads
        glue = isinstance(rows, torch.Tensor)  # specchat's kernels: the attention's, and the steps between products
        if glue and not self.qk_norms:
            start = cache_layer.claim(t, int8_kv.KEYS if self.coded else self.kv_dtype)
            if start is not None:  # rotated queries; rotated keys and the values written to the cache
                if self.direct is not None:
                    return self._step_directly(x, cos, sin, cache_layer, start, rows)
                qkv = self.qkv(_norm(x, self.norms[0], glue, into=self.qkv))
                codes = self._scales(cache_layer)
                queries = torch.ops.specchat_cpu.rotate_into_cache(qkv, cos, sin, cache_layer.keys[0],
                                                                   cache_layer.values[0], start, heads, *codes,
                                                                   *self._factors(codes))
                return self._attend_and_mlp(x, queries, cache_layer, rows)
        qkv = self.qkv(_norm(x, self.norms[0], glue, into=self.qkv))
        qkv = qkv.float().view(t, -1, d)
        qk, v = qkv[:, : heads + self.kv_heads], qkv[:, heads + self.kv_heads:]
        if self.qk_norms:
            (qw, qe), (kw, ke) = self.qk_norms
            qk = torch.cat([F.rms_norm(qk[:, :heads], (d,), qw, qe), F.rms_norm(qk[:, heads:], (d,), kw, ke)], 1)
        qk = _rotate(qk, cos[:, None], sin[:, None]).transpose(0, 1)  # queries and keys in one rotation
        if self.coded:  # an int8 cache (a prefill, a buffer to grow): written here, in torch
            keys, key_scales = int8_kv.to_codes(qk[heads:] / self.channels[:, None])
            values, value_scales = int8_kv.to_codes(v.transpose(0, 1))
            cache_layer.update_codes(keys[None], key_scales[None], values[None], value_scales[None])
        if glue:  # the kernel: fp32 queries (times an int8 cache's key factors), each row over what it sees
            if self.coded:
                queries = qk[:heads] * self.channels.repeat_interleave(heads // self.kv_heads, 0)[:, None]
            else:
                cache_layer.update(qk[None, heads:].to(self.kv_dtype), v.transpose(0, 1)[None].to(self.kv_dtype))
                queries = qk[:heads]
            return self._attend_and_mlp(x, queries.contiguous(), cache_layer, rows)
        if self.coded:
            keys, values = int8_kv.dequantized(cache_layer, self.channels)  # fp32, for sdpa
        else:
            if self.kv_dtype != qk.dtype:  # queries too: sdpa takes one dtype
                qk, v = qk.to(self.kv_dtype), v.to(self.kv_dtype)
            keys, values = cache_layer.update(qk[None, heads:], v.transpose(0, 1)[None])
        gqa = self.kv_heads != heads
        if rows is None:
            attended = F.scaled_dot_product_attention(qk[None, :heads], keys, values, attn_mask=mask,
                                                      scale=self.scale, enable_gqa=gqa)
        else:  # each query over exactly the keys it sees, as a single step runs it
            attended = attend_rows(qk[None, :heads], cache_layer.keys, cache_layer.values, rows, self.scale, gqa)
        x = x + self.out(attended[0].transpose(0, 1).reshape(t, -1))  # a bf16 output promotes exactly
        return self._mlp(x)

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
        gate_up = self.gate_up(_norm(x, self.norms[1], glue=True, into=self.gate_up))
        return x + self.down(torch.ops.specchat_cpu.silu_mul(gate_up, _takes_bf16(self.down)))

    def _step_directly(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_layer, start: int,
                       rows: torch.Tensor) -> torch.Tensor:
        """forward's kernel path, operator by operator with nothing between them: the
        same calls in the same order (so the same bits), without the modules' dispatch,
        reshapes and slices: a plain step of the embedded target went from 3.97 to
        3.16-3.36 ms on a Zen 5 EPYC (~25 us a layer)."""
        ops = torch.ops.specchat_cpu
        (qkv, qkv_w), (out, out_w), (gate_up, gate_up_w), (down, down_w) = self.direct
        (norm0, eps0), (norm1, eps1) = self.norms
        keys, values, codes = cache_layer.keys[0], cache_layer.values[0], self._scales(cache_layer)
        queries = ops.rotate_into_cache(qkv(ops.rms_norm(x, norm0, eps0, False), qkv_w), cos, sin, keys, values,
                                        start, self.heads, *codes, *self._factors(codes))
        attended = ops.attend_rows(queries, keys, values, rows, self.scale, *codes)
        x = x + out(attended, out_w)
        x = x + down(ops.silu_mul(gate_up(ops.rms_norm(x, norm1, eps1, False), gate_up_w), False), down_w)
        return x

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(_norm(x, self.norms[1], glue=False)).float().split(self.intermediate, dim=-1)
        return x + self.down(F.silu(gate) * up)


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
                mask: torch.Tensor | None, rows: list | None = None) -> torch.Tensor:
        x = F.embedding(input_ids, self.embed).float()
        if self.rotation is not None:
            cos, sin = self.rotation(x, positions)
        else:
            cos, sin = self.rotary(x[None], positions[None])
            cos, sin = cos[0].float(), sin[0].float()
        if isinstance(rows, torch.Tensor) and self.at_once is not None:
            passed = self.at_once(x, cos, sin, rows, cache)
            if passed is not None:
                return _norm(passed, self.norm, glue=True)[None]
        for layer, cache_layer in zip(self.layers, cache.layers):
            x = layer(x, cos, sin, cache_layer, mask, rows)
        return _norm(x, self.norm, glue=isinstance(rows, torch.Tensor))[None]


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

    @torch.inference_mode()
    def logits(self, token_ids: list[int], cache: KVCache, keep: int,
               position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        start, count = cache.length, len(token_ids)
        positions = position_ids if position_ids is not None else torch.arange(start, start + count)
        mask = attention_mask if attention_mask is not None else causal_mask(start, count)
        rows = None  # one attention call: prefill, and every pass of an inexact format
        if self.row_kernel and (keep == count or count <= KERNEL_ROWS):  # steps, verify and catch-up passes
            rows = kernel_rows(mask, start, count)
        elif self.exact and keep == count:
            rows = plan_rows(exact_rows(mask) if count > 1 else [start + 1], self.kv_dtype)
        cache.reserve(start + count)
        hidden = self.body(torch.tensor(token_ids), cache, positions, mask, rows)[0]
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
