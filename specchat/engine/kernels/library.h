// The namespace the kernels' operators register under: torch.ops.specchat_cpu. A
// test builds a kernel a second time for another vector unit (-march=haswell on an
// AVX-512 machine) under a name of its own (-DSPECCHAT_LIBRARY=...).
#pragma once

#include <torch/library.h>

#ifndef SPECCHAT_LIBRARY
#define SPECCHAT_LIBRARY specchat_cpu
#endif
#define SPECCHAT_FRAGMENT(library, m) TORCH_LIBRARY_FRAGMENT(library, m)  // expands the name first
#define SPECCHAT_IMPL(library, key, m) TORCH_LIBRARY_IMPL(library, key, m)
