"""The CPU fast path: the decoder over specchat's kernels, its fused layers, exact attention,
the int8 KV cache, huge pages, the machine, the format choice and the kernels' build."""
