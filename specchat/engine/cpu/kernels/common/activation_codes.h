// Activations as the block kernels (q8_0.cpp, q4_1.cpp) take them: per block of
// 32 inputs, two int8 codes each, x ~ s (256 c + r): c as llama.cpp computes it
// (x / (max |x| / 127), rounded) and r the rounding error left, in 1/256ths of
// that step. With c alone the next-token distribution of the embedded model was KL
// 1.5-1.7e-3 from the float weights (Q8_0 head) and 2.3e-3 (Q4_1 layers), over
// specchat's 1e-3; the second code costs one more integer product a block and keeps
// the error to ~1/65,000 of a block's largest input.
//
// Each row is quantized from its own values alone, in a fixed order.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace specchat_kernels {

constexpr int64_t kBlock = 32;  // inputs per block, as in GGUF's Q4_1 and Q8_0

struct Int8Rows {
  std::vector<int8_t> codes, remainders;  // [rows, k]
  std::vector<float> scales;              // [rows, k / 32]: s, of the sum 256 c + r
  std::vector<float> sums;                // [rows, k / 32]: each block's sum of x (Q4_1's offsets need it)
  int64_t rows = 0, blocks = 0;

  const int8_t* codes_of(int64_t row) const { return codes.data() + row * blocks * kBlock; }
  const int8_t* remainders_of(int64_t row) const { return remainders.data() + row * blocks * kBlock; }
  const float* scales_of(int64_t row) const { return scales.data() + row * blocks; }
  const float* sums_of(int64_t row) const { return sums.data() + row * blocks; }
};

// One block of 32 values: codes, remainders, and (returned) its step s and sum.
#if defined(__AVX512F__) && defined(__AVX512BW__)
inline void quantize_block(const float* v, int8_t* codes, int8_t* remainders, float& step_out, float& sum_out) {
  const __m512 lo = _mm512_loadu_ps(v), hi = _mm512_loadu_ps(v + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
  sum_out = _mm512_reduce_add_ps(_mm512_add_ps(lo, hi));
  const float step = amax / 127.f;
  const __m512 inverse = _mm512_set1_ps(step > 0.f ? 1.f / step : 0.f);
  const __m512 limit = _mm512_set1_ps(127.f);
  const __m512 halves[2] = {lo, hi};
  for (int h = 0; h < 2; ++h) {
    const __m512 scaled = _mm512_mul_ps(halves[h], inverse);
    const __m512 code = _mm512_roundscale_ps(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 rest = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(scaled, code), _mm512_set1_ps(256.f)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    rest = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), limit), _mm512_min_ps(limit, rest));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16 * h), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(code)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(remainders + 16 * h), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(rest)));
  }
  step_out = step;
}
#else
inline void quantize_block(const float* v, int8_t* codes, int8_t* remainders, float& step_out, float& sum_out) {
  float amax = 0.f, sum = 0.f;
  for (int64_t i = 0; i < kBlock; ++i) {
    amax = std::fmax(amax, std::fabs(v[i]));
    sum += v[i];
  }
  const float step = amax / 127.f;
  const float inverse = step > 0.f ? 1.f / step : 0.f;
  for (int64_t i = 0; i < kBlock; ++i) {
    const float code = std::nearbyint(v[i] * inverse);
    const float rest = std::nearbyint((v[i] * inverse - code) * 256.f);  // |rest| <= 128
    codes[i] = static_cast<int8_t>(code);
    remainders[i] = static_cast<int8_t>(std::fmax(-127.f, std::fmin(127.f, rest)));
  }
  step_out = step;
  sum_out = sum;
}
#endif

inline Int8Rows quantize_rows(const at::Tensor& x, int64_t in_features) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == in_features, "x must be [rows, ", in_features, "]");
  TORCH_CHECK(in_features % kBlock == 0, "in_features must be a multiple of 32");
  const at::Tensor input = x.to(at::kFloat).contiguous();
  const float* values = input.data_ptr<float>();
  Int8Rows q;
  q.rows = input.size(0);
  q.blocks = in_features / kBlock;
  q.codes.resize(input.numel());
  q.remainders.resize(input.numel());
  q.scales.resize(q.rows * q.blocks);
  q.sums.resize(q.rows * q.blocks);
  for (int64_t b = 0; b < q.rows * q.blocks; ++b) {
    float step;
    quantize_block(values + b * kBlock, q.codes.data() + b * kBlock, q.remainders.data() + b * kBlock, step,
                   q.sums[b]);
    q.scales[b] = step / 256.f;  // of the sum 256 c + r; exact: a power of two
  }
  return q;
}

}  // namespace specchat_kernels
