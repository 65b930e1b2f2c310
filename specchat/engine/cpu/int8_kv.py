"""An int8 KV cache: each key and value row of a head as int8 codes and one fp32 scale.

Why: after a long document every step reads the whole cache (the embedded target at
3,600 positions: 83 MB in bf16, about half a step on a 2-core EPYC, bound by
memory bandwidth). One byte an element halves that.

Fidelity: a row's codes are round(x / s), s = max |x| / 127. Keys have a few
channels far larger than the rest, which would leave the others a handful of
levels; so each layer's keys are stored divided by per-channel factors (the square
root of the channel's largest magnitude on the warm-up text, the same for the two
channels a rotation pairs) and the queries are multiplied by them, which leaves
every score q . k as it was. KL from the float weights on the warm-up text (the
embedded target, q4_1): keys alone in codes 5.5e-4 without the factors and 1.6e-4
with them (a simulation); the whole cache as built here 4.3e-4, against 2.3e-5 for
bf16. The format choice (MAX_KL) keeps it only where it stays within bounds.

Layout (what kernels/attention/int8_keys.h reads): values [batch, kv heads, capacity, d]
int8, by position. Keys are uint8, code + 128, in tiles of TILE positions: the
buffer has the shape [batch, kv heads, capacity, d] but tile t holds positions
16t..16t+15 as [d / 4][16][4], so one 64-byte row of it is 4 elements of 16
positions. Rows 16t..16t+15 of the buffer are exactly tile t, so copying whole
tiles (growing the buffer) is copying those rows.
"""

from __future__ import annotations

import torch

TILE = 16
KEYS, VALUES = torch.uint8, torch.int8  # the buffers' dtypes
BLOCK = 32  # a query's elements per pair of codes in the kernel: head sizes are multiples of it


def head_size(config) -> int:
    heads = config.num_attention_heads
    return getattr(config, "head_dim", None) or config.hidden_size // heads


def to_codes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., d] -> int8 codes [..., d] and fp32 scales [...], as the kernel's
    rotate_into_cache computes them (round to nearest, ties to even)."""
    x = x.float()
    scales = x.abs().amax(-1) / 127
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    return (x / safe[..., None]).round_().clamp_(-127, 127).to(torch.int8), scales


def _tiles(keys: torch.Tensor) -> torch.Tensor:
    """The key buffer as [batch, kv heads, tiles, 16 positions, d / 4, 4] (a view)."""
    batch, heads, capacity, d = keys.shape
    return keys.view(batch, heads, capacity // TILE, d // 4, TILE, 4).permute(0, 1, 2, 4, 3, 5)


def write_keys(keys: torch.Tensor, start: int, codes: torch.Tensor) -> None:
    """Key codes [batch, kv heads, t, d] int8 into the buffer at positions start.."""
    t, d = codes.shape[-2], codes.shape[-1]
    positions = torch.arange(start, start + t)
    stored = (codes.to(torch.int16) + 128).to(torch.uint8).view(*codes.shape[:2], t, d // 4, 4)
    _tiles(keys)[:, :, positions // TILE, positions % TILE] = stored


def read_keys(keys: torch.Tensor, length: int) -> torch.Tensor:
    """The key codes of positions 0..length, [batch, kv heads, length, d] int8."""
    batch, heads, _, d = keys.shape
    tiles = -(-length // TILE)
    stored = _tiles(keys)[:, :, :tiles].reshape(batch, heads, tiles * TILE, d)[:, :, :length]
    return (stored.to(torch.int16) - 128).to(torch.int8)


def move_keys(keys: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> None:
    """Copy key positions `source` to positions `target` (index tensors)."""
    tiles = _tiles(keys)
    tiles[:, :, target // TILE, target % TILE] = tiles[:, :, source // TILE, source % TILE]


def whole_tiles(length: int) -> int:
    """Buffer rows that hold the first `length` positions' keys: whole tiles."""
    return -(-length // TILE) * TILE


def dequantized(layer, channels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A coded layer's filled part as fp32 keys and values [batch, kv heads, length,
    d] (keys times the channel factors [kv heads, d] again), for sdpa."""
    length = layer.length
    keys = read_keys(layer.keys, length).float() * layer.key_scales[..., :length, None] * channels[:, None]
    values = layer.values[..., :length, :].float() * layer.value_scales[..., :length, None]
    return keys, values


def channel_factors(keys: torch.Tensor) -> torch.Tensor:
    """Per-channel factors [kv heads, d] from rotated keys [kv heads, positions, d]:
    the square root of each channel's largest magnitude, the two halves a rotation
    pairs (e and e + d/2) given the larger of theirs, so a rotation by any angle
    leaves the factor right."""
    largest = keys.float().abs().amax(1)
    half = largest.shape[-1] // 2
    paired = torch.maximum(largest[:, :half], largest[:, half:])
    return torch.cat([paired, paired], -1).clamp_min(1e-3).sqrt().contiguous()
