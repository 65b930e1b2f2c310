"""Exact attention rows by sdpa, where specchat's attention kernel does not build:
each query of a step or a verify pass over exactly the keys it sees, padded so that
its result does not depend on the other queries of the call (cpu/decoder.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# Exact rows attend over the cache rounded up to a multiple of PAD positions, the
# rest masked: sdpa's result for a query then depends only on the keys it sees and
# that padded length, not on how many other queries share the call (checked bit for
# bit in the tests), so the rows of a verify pass that share a padded length (most
# often all of them) take one call, and a single step is the same call with one row.
# Row by row, a verify pass cost ~1 ms more per row than one call. The cache's
# capacity is a multiple of its CHUNK, and CHUNK of PAD, so the padded view fits.
PAD = 64


def padded_length(count: int) -> int:
    return -(-count // PAD) * PAD


@dataclass
class RowGroup:
    """Query rows of a pass that attend in one call: `rows` of the pass, over the
    first `length` positions of the cache (or the positions `index`), `mask`
    additive (0 where a row may look, -inf on the padding)."""

    rows: slice
    length: int
    mask: torch.Tensor
    index: torch.Tensor | None = None


def plan_rows(rows: list[int | torch.Tensor], dtype: torch.dtype) -> list[RowGroup]:
    """The calls attend_rows makes for a pass, once per pass rather than per layer."""
    def mask(counts: list[int], length: int) -> torch.Tensor:
        visible = torch.arange(length)[None] < torch.tensor(counts)[:, None]
        return torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))[:, None, None]

    groups: list[RowGroup] = []
    for row, seen in enumerate(rows):
        if isinstance(seen, int):
            length, last = padded_length(seen), groups[-1] if groups else None
            if last is not None and last.index is None and last.length == length and last.rows.stop == row:
                last.rows = slice(last.rows.start, row + 1)  # consecutive rows of one length: one call
            else:
                groups.append(RowGroup(slice(row, row + 1), length, None))
        else:  # a drafted alternative: its keys gathered (the prefix and its own), padded the same way
            length = padded_length(len(seen))
            index = torch.cat([seen, seen.new_zeros(length - len(seen))])
            groups.append(RowGroup(slice(row, row + 1), length, mask([len(seen)], length), index))
    for group in groups:
        if group.index is None:
            group.mask = mask(rows[group.rows], group.length)
    return groups


def attend_rows(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, groups: list[RowGroup],
                scale: float, gqa: bool) -> torch.Tensor:
    """queries [1, heads, t, d]; keys, values: a layer's whole buffers [1, kv heads,
    capacity, d]. Returns [1, heads, t, d]."""
    out = queries.new_empty(queries.shape) if len(groups) > 1 else None  # one group: its result is all
    for group in groups:
        batch = queries[0, :, group.rows].transpose(0, 1)[:, :, None]  # [rows, heads, 1, d]
        size = (batch.shape[0], -1, -1, -1)
        if group.index is None:
            seen_keys, seen_values = keys[:, :, :group.length], values[:, :, :group.length]
        else:
            seen_keys, seen_values = keys[:, :, group.index], values[:, :, group.index]
        attended = F.scaled_dot_product_attention(batch, seen_keys.expand(size), seen_values.expand(size),
                                                  attn_mask=group.mask, scale=scale, enable_gqa=gqa)
        if out is None:
            return attended[:, :, 0].transpose(0, 1)[None]
        out[0, :, group.rows] = attended[:, :, 0].transpose(0, 1)
    return out


def visible(mask: torch.Tensor) -> torch.Tensor:
    """bool [queries, positions]: where each query of a pass may look (mask: True or 0 there)."""
    seen = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    return seen.reshape(seen.shape[-2], seen.shape[-1]).contiguous()


def exact_rows(mask: torch.Tensor) -> list[int | torch.Tensor]:
    """Per query of a pass, the positions it sees (mask: True or 0 where it may look):
    a count where that is a prefix of the cache (a causal verify pass), else the
    indices (a drafted alternative: the prefix before it and itself)."""
    seen = visible(mask)
    rows: list[int | torch.Tensor] = []
    for row in seen:
        count = int(row.sum())
        rows.append(count if bool(row[:count].all()) else row.nonzero()[:, 0])
    return rows
