"""A trained drafter's passes by the CPU decoder's layers (drafters/cpu_passes.py)."""

from __future__ import annotations

import pytest
import torch

from specchat.engine.cpu import kernel_build
from specchat.engine.drafters import cpu_passes
from specchat.engine.drafters.draft_model import DraftConfig, DraftModel
from specchat.engine.drafters.trained import TrainedDrafter
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.model.kv_cache import KVCache

pytestmark = pytest.mark.skipif(not kernel_build.available(), reason="CPU passes run on specchat's kernels")

TARGET_VOCAB = 300


def _model(reads_target_states: bool = False) -> DraftModel:
    torch.manual_seed(0)
    cfg = DraftConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=96,
                      draft_vocab=40, target_vocab=TARGET_VOCAB, reads_target_states=reads_target_states)
    model = DraftModel(cfg, torch.randn(TARGET_VOCAB, 64), torch.randperm(TARGET_VOCAB)[:40])
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    return model.eval()


def _with_passes(model: DraftModel, products: str) -> DraftModel:
    model.__dict__["lean"] = cpu_passes.DrafterCpuPasses(model, products)  # as attach holds them
    return model


def test_attach_picks_the_faster_products_and_holds_them_outside_the_modules():
    model = _model()
    assert cpu_passes.attach(model) in ("fp16", "q8_0") and model.lean is not None
    assert "lean" not in dict(model.named_modules()) and not any("lean" in k for k in model.state_dict())


@pytest.mark.parametrize("products", ["fp16", "q8_0"])
def test_lean_passes_give_the_modules_logits_over_a_cache_with_rollbacks(products):
    model = _with_passes(_model(), products)
    ids = torch.randint(0, TARGET_VOCAB, (1, 40))
    with torch.inference_mode():
        full = model.head(model.features(ids))[0]  # the module's own arithmetic, no cache
        cache = KVCache(2)
        prefill = model(ids[:, :30], cache, logits_to_keep=1)  # one sdpa call (more rows than the kernel takes)
        steps = [model(ids[:, i:i + 1], cache, logits_to_keep=1) for i in range(30, 35)]
        cache.truncate(32)  # two drafts rejected: the next pass writes over them
        verify = model(ids[:, 32:40], cache, logits_to_keep=8)
    tolerance = dict(rtol=0.05, atol=0.05)  # fp16 or 8-bit products against fp32
    torch.testing.assert_close(prefill[0, -1], full[29], **tolerance)
    for i, step in enumerate(steps):
        torch.testing.assert_close(step[0, -1], full[30 + i], **tolerance)
    torch.testing.assert_close(verify[0], full[32:40], **tolerance)


def test_a_drafter_reading_the_targets_states_keeps_the_modules_forward():
    model = _model(reads_target_states=True)
    assert cpu_passes.attach(model) is None and model.lean is None


@pytest.mark.parametrize("products", ["fp16", "q8_0"])
def test_proposals_from_lean_passes_are_the_modules_proposals(products):
    plain, lean = _model(), _with_passes(_model(), products)
    tokens = torch.randint(0, TARGET_VOCAB, (25,)).tolist()
    ours = TrainedDrafter(lean, "t", use_lookup=False).propose(tokens, 5, SamplingSettings(), None)
    theirs = TrainedDrafter(plain, "t", use_lookup=False).propose(tokens, 5, SamplingSettings(), None)
    assert ours.ids == theirs.ids and ours.p == pytest.approx(theirs.p, abs=0.02)
