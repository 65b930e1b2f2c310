"""A trained drafter's passes by the CPU decoder's layers (cpu/decoder.py's CpuLayer):
fused products and specchat's CPU kernels between them.

Why: smoldraft's step is one layer and a 4,096-row head, 0.29 ms on a 2-core Zen 5
EPYC, of which the fp16 products were 0.11 ms; the rest was ~40 small torch
operators (norms, the rotation's slices and concatenations, sdpa, casts), and a
round drafts two or three times. The CPU layer does the same arithmetic in a
handful of calls. The drafter's output only decides what the target verifies, so
its numbers need not match the module's bit for bit (fp16 weights, fp32
activations, as before).

Used for a drafter packed for the CPU (fp16) that reads only tokens; one that reads
the target's states (drafters/states_reading.py) keeps the module's forward. The products are
fbgemm's fp16 or the Q8_0 block kernel, whichever steps faster here (Zen 5: Q8_0, the
whole step 0.13 ms against 0.22 with fp16 products). Q8_0 with activations as two
int8 codes moved smoldraft's logits by up to 0.1 (KL 1.2e-4 from the module's on the
warm-up text, the same top token at every position), which can only change what it
proposes, never what the target accepts.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch
from torch import nn

from specchat.engine.cpu import decoder as cpu_decoder, kernel_build
from specchat.engine.cpu.decoder import PassPlan, norm_rows, run_layers
from specchat.engine.cpu.fused_layers import FusedLayers
from specchat.engine.cpu.quant import weight_formats
from specchat.engine.model.kv_cache import KVCache


def _as_llama_layer(layer, head_dim: int) -> SimpleNamespace:
    """A DraftLayer seen with the names CpuLayer reads from a transformers Llama layer."""
    def norm(module) -> SimpleNamespace:
        return SimpleNamespace(weight=module.weight, variance_epsilon=module.eps)

    return SimpleNamespace(
        self_attn=SimpleNamespace(q_proj=layer.q_proj, k_proj=layer.k_proj, v_proj=layer.v_proj,
                                  o_proj=layer.o_proj, scaling=head_dim ** -0.5),
        mlp=SimpleNamespace(gate_proj=layer.gate_proj, up_proj=layer.up_proj, down_proj=layer.down_proj),
        input_layernorm=norm(layer.input_layernorm), post_attention_layernorm=norm(layer.post_attention_layernorm))


class DrafterCpuPasses(nn.Module):
    """DraftModel's forward over its cache: draft-vocabulary logits of the last `keep` positions."""

    def __init__(self, model, products: str) -> None:
        super().__init__()
        cfg = model.cfg
        config = SimpleNamespace(num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                                 head_dim=cfg.head_dim, hidden_size=cfg.hidden_size)
        self.products = products
        make_linear = weight_formats.maker(products)
        self.layers = nn.ModuleList(cpu_decoder.CpuLayer(_as_llama_layer(layer, cfg.head_dim), config, make_linear)
                                    for layer in model.layers)
        self.norm = (model.norm.weight.detach().float(), model.norm.eps)
        self.head = make_linear(model.head.weight.detach().float(), None)
        self.rope = model.rope
        self.embed = model.embed
        self.at_once = FusedLayers.of(self.layers)  # Q8_0 products: one operator a step

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: KVCache, keep: int) -> torch.Tensor:
        start, count = cache.length, input_ids.shape[1]
        mask = cpu_decoder.causal_mask(start, count)
        # a long piece (a prompt) attends in one sdpa call
        plan = PassPlan.on_kernels(mask, start, count) if count <= cpu_decoder.KERNEL_ROWS else PassPlan(mask=mask)
        cache.reserve(start + count)
        x = torch.nn.functional.embedding(input_ids[0], self.embed).float()
        cos, sin = self.rope(start, count, torch.float32)
        x = run_layers(self.layers, self.at_once, x, cos, sin, cache, plan)
        x = norm_rows(x[-keep:], self.norm, kernels=plan.kernels)
        return self.head(x)[None]


def _step_seconds(passes: DrafterCpuPasses, layers: int) -> float:
    """The median time of a one-token pass after 64 positions."""
    cache = KVCache(layers)
    passes(torch.arange(64)[None], cache, 1)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        passes(torch.tensor([[7]]), cache, 1)
        times.append(time.perf_counter() - start)
        cache.truncate(64)
    return sorted(times)[len(times) // 2]


def attach(model) -> str | None:
    """Give a DraftModel (float weights, on the CPU) CPU passes where they apply
    (specchat's kernels built, a drafter of tokens alone), in the faster of fp16
    products (fbgemm) and Q8_0 blocks (cpu/quant/block_formats.py) on this machine, measured
    here (a few ms); their name, or None."""
    if model.cfg.reads_target_states or model.device.type != "cpu" or not kernel_build.available():
        return None
    candidates = [DrafterCpuPasses(model, name) for name in ("fp16", "q8_0") if weight_formats.available(name)]
    if not candidates:
        return None
    fastest = min(candidates, key=lambda passes: _step_seconds(passes, model.cfg.num_layers))
    model.__dict__["lean"] = fastest  # held, not a submodule: never trained or saved
    return fastest.products
