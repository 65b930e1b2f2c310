// The namespace the kernels' operators register under: torch.ops.specchat_cpu
// (kernel_build.LIBRARY), named here alone. A test builds a kernel a second time for
// another vector unit (-march=haswell on an AVX-512 machine) under a name of its own
// (-DSPECCHAT_LIBRARY=...).
#pragma once

#include <torch/library.h>

#ifndef SPECCHAT_LIBRARY
#define SPECCHAT_LIBRARY specchat_cpu
#endif
#define SPECCHAT_FRAGMENT(library, m) TORCH_LIBRARY_FRAGMENT(library, m)  // expands the name first
#define SPECCHAT_IMPL(library, key, m) TORCH_LIBRARY_IMPL(library, key, m)
#define SPECCHAT_STRING_OF(name) #name
#define SPECCHAT_STRING(name) SPECCHAT_STRING_OF(name)  // expands the name first
// "specchat_cpu::op": an operator of this library, as the dispatcher finds it
#define SPECCHAT_OPERATOR(op) SPECCHAT_STRING(SPECCHAT_LIBRARY) "::" op
