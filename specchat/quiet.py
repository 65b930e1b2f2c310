"""Library warnings stay off the user's terminal unless --debug.

bitsandbytes logs a warning at import on CPUs with AVX-512 bf16 ("Failed to load
CPU gemm_4bit_forward from kernels-community …"), torch and transformers issue
Python warnings about settings specchat chose on purpose. None of them is for the
user; specchat's own messages say what they need to know.
"""

from __future__ import annotations

import logging
import warnings

_LIBRARIES = ("bitsandbytes", "accelerate", "huggingface_hub", "torch", "transformers", "gguf")


def quiet_libraries(debug: bool) -> None:
    if debug:
        return
    warnings.simplefilter("ignore")
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
