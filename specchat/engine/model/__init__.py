"""A model's passes: forward over the KV cache, the cache itself, architectures and their
windows, the rotary table."""
