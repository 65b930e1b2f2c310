// Scalar pieces the kernels share: bf16 widened to fp32 exactly, and a dot product
// whose sum order is fixed (kLanes partial sums reduced pairwise), so every kernel
// computing one gets the same bits, and the compiler vectorizes it without
// reassociating (-ffp-contract=off keeps products and sums apart).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

namespace specchat_kernels {

constexpr int kLanes = 16;

inline float widen(float v) { return v; }
inline float widen(int8_t v) { return static_cast<float>(v); }  // an int8 cache's codes
inline float widen(c10::BFloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// q . k over d (a serial sum of the partials bounds the attention kernel)
template <typename T>
float dot(const float* q, const T* k, int64_t d) {
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += q[i + l] * widen(k[i + l]);
  }
  for (; i < d; ++i) partial[i % kLanes] += q[i] * widen(k[i]);
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) partial[l] += partial[l + width];
  }
  return partial[0];
}

}  // namespace specchat_kernels
