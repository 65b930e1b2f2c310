"""One KV cache for every model the engine runs: the target, a draft model, a
trained drafter.

Keys and values of each layer live in one preallocated buffer [batch, heads,
capacity, head_dim]. A pass writes its new positions at the layer's length and
attends over the filled part only (a view, nothing copied); a rollback after a
rejection moves the length back. The buffer grows in chunks of CHUNK positions,
copied once per chunk, never per token: transformers' DynamicCache concatenates
every layer on every step, which made a step at 4,000 tokens of context cost 2.3x
one at 100.

Sliding-window layers keep every position too, and report themselves as full
layers: transformers then builds their masks over absolute positions, so the
window is applied by the mask (`create_sliding_window_causal_mask`), and a rollback
past the window is always possible (transformers' sliding layers keep only the
last window-1 positions and cannot be cropped back).

It is a transformers `Cache`, so the models' own attention (sdpa or eager) reads
it; `DraftModel` (drafters/draft_model.py) calls the same `update`.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from specchat.engine.cpu import int8_kv

# Positions added per growth. A prefill or a session can `reserve` what it knows it needs.
CHUNK = 512


def _round_up(n: int) -> int:
    return -(-n // CHUNK) * CHUNK


class PreallocatedLayer(CacheLayerMixin):
    """One layer's keys and values; `length` positions of the buffer are filled."""

    is_sliding = False  # windows are the mask's job: every position is kept
    is_croppable = True
    is_compileable = False

    def __init__(self) -> None:
        super().__init__()
        self.length = 0
        self.allocations = 0  # how many buffers this layer has had (tests read it)
        self._reserved = 0  # asked for before the first write, when shapes were unknown
        # an int8 cache's per-position scales [batch, kv heads, capacity] (cpu/int8_kv.py)
        self.key_scales: torch.Tensor | None = None
        self.value_scales: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._allocate(key_states, value_states, _round_up(max(key_states.shape[-2], self._reserved, 1)))
        self.is_initialized = True

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """New buffers of `capacity` positions shaped like keys/values, holding the old filled part."""
        coded = keys.dtype == int8_kv.KEYS
        if self.keys is not None and self.length and coded != self.coded:  # codes and floats do not convert
            raise ValueError("this cache holds another KV format's positions; start a new cache")
        old_keys, old_values, old_scales = self.keys, self.values, (self.key_scales, self.value_scales)
        self.keys = keys.new_zeros((*keys.shape[:-2], capacity, keys.shape[-1]))
        self.values = values.new_zeros((*values.shape[:-2], capacity, values.shape[-1]))
        self.key_scales = keys.new_zeros(self.keys.shape[:-1], dtype=torch.float32) if coded else None
        self.value_scales = keys.new_zeros(self.keys.shape[:-1], dtype=torch.float32) if coded else None
        if old_keys is not None and self.length:
            held = int8_kv.whole_tiles(self.length) if coded else self.length  # coded keys: whole tiles
            self.keys[..., :held, :] = old_keys[..., :held, :]
            self.values[..., : self.length, :] = old_values[..., : self.length, :]
            if coded:
                self.key_scales[..., : self.length] = old_scales[0][..., : self.length]
                self.value_scales[..., : self.length] = old_scales[1][..., : self.length]
        self.allocations += 1

    @property
    def coded(self) -> bool:
        """Whether this is an int8 cache (cpu/int8_kv.py): uint8 key tiles, int8 values, scales."""
        return self.keys is not None and self.keys.dtype == int8_kv.KEYS

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, room: int = 0) -> PreallocatedLayer:
        """A layer filled with `keys`/`values` [batch, heads, positions, head_dim] and
        room for `room` more positions (a batch stacked from rows' caches)."""
        layer = cls()
        layer.device = keys.device
        layer._allocate(keys, values, _round_up(keys.shape[-2] + room))
        layer.keys[..., : keys.shape[-2], :] = keys
        layer.values[..., : values.shape[-2], :] = values
        layer.length, layer.is_initialized = keys.shape[-2], True
        return layer

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only these rows of a batch (rows that ended leave it)."""
        self.keys, self.values = self.keys[indices], self.values[indices]

    @property
    def capacity(self) -> int:
        return self.keys.shape[-2] if self.is_initialized else 0

    def reserve(self, positions: int) -> None:
        """Room for `positions` in all; before the first update (shapes unknown) it
        sizes the first buffer."""
        if not self.is_initialized:
            self._reserved = max(self._reserved, positions)
        elif positions > self.capacity:
            self._allocate(self.keys, self.values, _round_up(positions))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.dtype != self.keys.dtype:  # another format computes the model now
            self._allocate(key_states, value_states, self.capacity)
        start, end = self.length, self.length + key_states.shape[-2]
        self.reserve(end)
        self.keys[..., start:end, :] = key_states
        self.values[..., start:end, :] = value_states
        self.length = end
        return self.filled()

    def update_codes(self, keys: torch.Tensor, key_scales: torch.Tensor, values: torch.Tensor,
                     value_scales: torch.Tensor) -> None:
        """Append an int8 cache's rows: codes [batch, kv heads, t, d] int8 and their
        scales [batch, kv heads, t] (int8_kv.to_codes); the buffers are made coded first."""
        if not self.is_initialized or not self.coded:
            capacity = self.capacity or _round_up(max(keys.shape[-2], self._reserved, 1))
            self.device, self.is_initialized = keys.device, True
            self._allocate(keys.to(int8_kv.KEYS), values, capacity)
        start, end = self.length, self.length + keys.shape[-2]
        self.reserve(end)
        int8_kv.write_keys(self.keys, start, keys)
        self.values[..., start:end, :] = values
        self.key_scales[..., start:end] = key_scales
        self.value_scales[..., start:end] = value_scales
        self.length = end

    def claim(self, positions: int, dtype: torch.dtype) -> int | None:
        """For a kernel that writes keys and values into the buffers itself: the
        position where `positions` more go, the length moved past them. None when the
        buffers must first be made, grown or remade in another dtype (update does that)."""
        if not self.is_initialized or self.keys.dtype != dtype or self.keys.shape[0] != 1 \
                or self.length + positions > self.capacity:
            return None
        start, self.length = self.length, self.length + positions
        return start

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of the positions held (views)."""
        return self.keys[..., : self.length, :], self.values[..., : self.length, :]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        # The positions attended are [0, length + query_length): the mask is built over all
        # of them from absolute positions, and a window becomes part of it.
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1  # grows on demand

    def crop(self, tokens_to_remove: int) -> None:
        """transformers' convention: a negative count removes that many from the end."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count of positions to remove")
        self.length = max(0, self.length + tokens_to_remove)

    def reset(self) -> None:
        self.length = 0  # the buffers stay: a new conversation reuses them

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy positions `source` to positions `target` (index tensors)."""
        source, target = source.to(self.keys.device), target.to(self.keys.device)
        if self.coded:
            int8_kv.move_keys(self.keys, source, target)
            for tensor in (self.key_scales, self.value_scales):
                tensor[..., target] = tensor[..., source]
        else:
            self.keys[..., target, :] = self.keys[..., source, :]
        self.values[..., target, :] = self.values[..., source, :]


class KVCache(Cache):
    """The cache of one model: `layers` attention layers, all filled to `length`."""

    def __init__(self, layers: int) -> None:
        super().__init__(layers=[PreallocatedLayer() for _ in range(layers)])

    @classmethod
    def for_model(cls, model) -> KVCache:
        """A cache for a transformers causal LM (one layer per decoder layer)."""
        return cls(model.config.get_text_config().num_hidden_layers)

    @property
    def length(self) -> int:
        return self.layers[0].length

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions (a rollback: only the lengths move)."""
        for layer in self.layers:
            layer.length = min(layer.length, length)

    def reserve(self, positions: int) -> None:
        for layer in self.layers:
            layer.reserve(positions)

    @property
    def allocations(self) -> int:
        return sum(layer.allocations for layer in self.layers)

    @torch.inference_mode()  # the buffers were made in inference mode
    def keep_rows(self, start: int, rows: list[int]) -> None:
        """Hold the first `start` positions followed by the last pass's `rows` (pass row
        i sits at start + i), in order; everything after goes. Only rows that change
        place are copied (an accepted alternative moving up to the accepted run)."""
        moved = [i for i, row in enumerate(rows) if row != i]
        if moved:
            source = torch.tensor([start + rows[i] for i in moved])
            target = torch.tensor([start + i for i in moved])
            for layer in self.layers:
                layer.move(source, target)
        self.truncate(start + len(rows))
