"""Which attention each layer of a model does, and whether the engine can serve it.

The engine's cache (model/kv_cache.py) keeps every position of every layer and leaves
windows to the attention mask. That serves layers of full attention and of
sliding-window attention (Mistral, Phi-3, Qwen2 with `use_sliding_window`,
Gemma 2/3's alternating layers). Other kinds (chunked attention, linear attention,
layers sharing another's keys) need states this cache does not keep, so such a
model is refused at load, by name, rather than failing mid-answer.
"""

from __future__ import annotations

SERVED_LAYER_TYPES = ("full_attention", "sliding_attention")
# transformers' attention implementations that read the cache's keys and the mask as given.
SERVED_ATTENTION = ("sdpa", "eager")


class UnservableModel(ValueError):
    """The engine cannot run this model losslessly; the message names why."""


def layer_types(config) -> list[str]:
    """One entry per decoder layer: "full_attention", "sliding_attention", …"""
    config = config.get_text_config()
    types = getattr(config, "layer_types", None)
    if types is not None:
        return list(types)
    # Models without layer_types (Mistral, Phi-3, Starcoder2) slide every layer when a window is set.
    kind = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
    return [kind] * config.num_hidden_layers


def layer_windows(config) -> dict[str, int | None]:
    """The window of each layer type the model has (None: full attention)."""
    window = getattr(config.get_text_config(), "sliding_window", None)
    return {kind: (window if kind == "sliding_attention" else None) for kind in dict.fromkeys(layer_types(config))}


def check_servable(model) -> None:
    """Raise UnservableModel, naming the architecture, for a model the engine cannot serve."""
    config = model.config.get_text_config()
    name = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    unknown = sorted(set(layer_types(config)) - set(SERVED_LAYER_TYPES))
    if unknown:
        raise UnservableModel(f"{name} has {', '.join(unknown)} layers, which specchat's engine cannot serve "
                              f"(it serves full and sliding-window attention)")
    if getattr(config, "kv_sharing_modes", None) or getattr(config, "num_kv_shared_layers", 0):
        raise UnservableModel(f"{name} shares keys and values between layers, which specchat's engine cannot serve")
    attention = getattr(config, "_attn_implementation", None) or "sdpa"
    if attention not in SERVED_ATTENTION:
        raise UnservableModel(f"{name} runs {attention} attention; specchat's engine serves "
                              f"{' and '.join(SERVED_ATTENTION)}")
