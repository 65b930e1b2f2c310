"""Fixtures shared by every test package: real models, loaded once per process.

`embedded` is the offline default target in fp32 (its converted copy lives in the
user cache, so only the first run ever pays the ~30 s conversion). `tiny_llama`
builds small random Llama models from a config for tests that need many samples
or a drafter that disagrees with the target.
"""

from __future__ import annotations

import os

import pytest
import torch

# On a shared machine, torch's spinning worker threads slow tiny models down several
# fold; SPECCHAT_TEST_THREADS=1 keeps a test run to one core.
if os.environ.get("SPECCHAT_TEST_THREADS"):
    torch.set_num_threads(int(os.environ["SPECCHAT_TEST_THREADS"]))


@pytest.fixture(scope="session")
def embedded():
    from specchat.models import load_target

    return load_target("embedded", device="cpu", quant="none", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_llama():
    """Factory: a random Llama with the given vocabulary size and seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(vocab_size: int = 64, seed: int = 0, layers: int = 2, hidden: int = 64) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, bos_token_id=None, eos_token_id=None,
                             pad_token_id=None, tie_word_embeddings=False)
        return LlamaForCausalLM(config).eval()

    return build
