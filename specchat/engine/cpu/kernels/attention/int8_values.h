// The values of an int8 KV cache weighed by a chunk's softmax weights with integer
// products (AVX-512 VNNI's vpdpwssd), where the float path widens every value.
//
// Why: after a long document the float path spent ~0.75 ms of a 1.3 ms attention
// step (3,500 positions x 30 layers, 2-core Zen 5) widening int8 values to fp32 and
// weighing them: four conversions and twelve multiply-adds a position for a group
// of three heads, bound by instructions rather than memory. Here two positions'
// values are widened to int16 once and interleaved, and each head adds them with
// one instruction per 16 elements: half the instructions.
//
// A weight is its position's e^(score - max) times the value's scale, as an int16
// code of the chunk's largest weight / 32767 (rounding ~1/65,000 of the largest, like
// the queries' two codes). Integer sums are exact and a chunk's codes depend only on
// its own scores, so verify passes stay bit for bit the single steps.
//
// The weights' first pass reads each position's value scale, which missed the cache
// until the next chunk's scales were prefetched beside this chunk's values.
// Attention over 3,500 positions x 30 layers (random codes, one kv head group of 3):
// 1.27-1.30 ms with the float path, 1.15 with this.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SPECCHAT_VALUE_CODES 1
#endif

namespace specchat_kernels {

// A task's buffers, kept across its chunks (a step has ~1,300 chunks after a long document)
struct ValueWork {
  std::vector<float> scaled, steps;
  std::vector<int32_t> pairs;
};

#ifdef SPECCHAT_VALUE_CODES
constexpr int32_t kWeightTop = 32767;  // the largest weight's code
constexpr int64_t kAhead = 64;        // positions a value row is prefetched ahead


// The weights of one head's chunk as codes, two positions an int32 (pairs[k] holds
// positions 2k and 2k + 1; an odd count's last pair has 0 beside it). Returns the
// step a code stands for.
inline float weight_codes(const float* weights, const float* value_scales, const int32_t* seen, int64_t count,
                          std::vector<float>& scaled, int32_t* pairs) {
  scaled.resize(count + 16);
  const bool one_run = seen[count - 1] - seen[0] == count - 1;  // no drafted alternative's gap
  __m512 top_lanes = _mm512_setzero_ps();
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 in = static_cast<__mmask16>((1u << std::min<int64_t>(16, count - i)) - 1);
    const __m512 scales =
        one_run ? _mm512_maskz_loadu_ps(in, value_scales + seen[0] + i)
                : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, _mm512_maskz_loadu_epi32(in, seen + i),
                                           value_scales, 4);
    const __m512 scaled_weights = _mm512_mul_ps(_mm512_maskz_loadu_ps(in, weights + i), scales);
    _mm512_storeu_ps(scaled.data() + i, scaled_weights);  // zeros past count
    top_lanes = _mm512_max_ps(top_lanes, scaled_weights);
  }
  const float top = _mm512_reduce_max_ps(top_lanes);
  const __m512 inverse = _mm512_set1_ps(top > 0.f ? kWeightTop / top : 0.f);
  for (int64_t i = 0; i < count; i += 16) {  // 16 weights to 16 int16 codes: 8 pairs
    const __m512i codes = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_loadu_ps(scaled.data() + i), inverse),
                                                            _mm512_set1_ps(static_cast<float>(kWeightTop))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + i / 2), _mm512_cvtepi32_epi16(codes));
  }
  return top / kWeightTop;
}

// D32 spans of 32 elements a head (d = 32 * D32). weights: each head's row of
// `stride` e^(score - max); the weighted sums go to each head's piece acc[d].
template <int D32>
void weigh_value_codes(const int8_t* values, const float* value_scales, const int32_t* seen, int64_t count,
                       int64_t group, int64_t stride, float* pieces, const float* weights, ValueWork& work) {
  constexpr int64_t d = 32 * D32;
  constexpr int R = 2 * D32;                       // registers a head's sums fill
  constexpr int S = std::max(1, (32 - R - 3) / R);  // heads whose sums stay in registers
  static_assert(2 * 32767LL * 127 * 256 / 2 < (1LL << 31), "a chunk's integer sums fit int32 (kChunk <= 256)");
  const int64_t pairs_a_head = (count + 1) / 2 + 8;
  work.pairs.resize(group * pairs_a_head);
  work.steps.resize(group);
  const int32_t* pairs = work.pairs.data();
  const float* steps = work.steps.data();
  for (int64_t h = 0; h < group; ++h) {
    work.steps[h] = weight_codes(weights + h * stride, value_scales, seen, count, work.scaled,
                                 work.pairs.data() + h * pairs_a_head);
  }
  for (int64_t h0 = 0; h0 < group; h0 += S) {
    const int64_t hs = std::min<int64_t>(S, group - h0);
    __m512i acc[S][R];
    for (int h = 0; h < S; ++h)
      for (int r = 0; r < R; ++r) acc[h][r] = _mm512_setzero_si512();
    for (int64_t i = 0; i < count; i += 2) {
      const int8_t* a = values + seen[i] * d;
      const int8_t* b = i + 1 < count ? values + seen[i + 1] * d : a;  // weight 0 beside an odd count's last
      for (int64_t line = 0; line < d; line += 64) {  // positions ahead, from memory beside the products
        _mm_prefetch(reinterpret_cast<const char*>(a + kAhead * d + line), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(b + kAhead * d + line), _MM_HINT_T0);
      }
      if (i % 16 == 0) {  // the next chunk's scales (a thread's next task), which missed the cache
        _mm_prefetch(reinterpret_cast<const char*>(value_scales + seen[i] + 256), _MM_HINT_T0);
      }
      __m512i both[R];  // lanes of (a, b) int16 pairs; span s: elements 8L+0..3 in 2s, 8L+4..7 in 2s+1
      for (int s = 0; s < D32; ++s) {
        const __m512i wa = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32 * s)));
        const __m512i wb = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32 * s)));
        both[2 * s] = _mm512_unpacklo_epi16(wa, wb);
        both[2 * s + 1] = _mm512_unpackhi_epi16(wa, wb);
      }
      for (int h = 0; h < S; ++h) {
        if (h >= hs) break;
        const __m512i w = _mm512_set1_epi32(pairs[(h0 + h) * pairs_a_head + i / 2]);
        for (int r = 0; r < R; ++r) acc[h][r] = _mm512_dpwssd_epi32(acc[h][r], both[r], w);
      }
    }
    for (int h = 0; h < hs; ++h) {  // back to element order, times the step
      float* out = pieces + (h0 + h) * (2 + d) + 2;
      alignas(64) int32_t sums[32];
      for (int s = 0; s < D32; ++s) {
        _mm512_store_si512(sums, acc[h][2 * s]);
        _mm512_store_si512(sums + 16, acc[h][2 * s + 1]);
        for (int lane = 0; lane < 4; ++lane) {  // a 128-bit lane: elements 8L..8L+7
          for (int e = 0; e < 4; ++e) {
            out[32 * s + 8 * lane + e] = static_cast<float>(sums[4 * lane + e]) * steps[h0 + h];
            out[32 * s + 8 * lane + 4 + e] = static_cast<float>(sums[16 + 4 * lane + e]) * steps[h0 + h];
          }
        }
      }
    }
  }
}

inline bool weighs_value_codes(int64_t d) { return d % 32 == 0 && d / 32 >= 1 && d / 32 <= 4; }

inline void value_codes(const int8_t* values, const float* value_scales, const int32_t* seen, int64_t count,
                        int64_t d, int64_t group, int64_t stride, float* pieces, const float* weights,
                        ValueWork& work) {
  switch (d / 32) {  // weighs_value_codes admits these
    case 1: return weigh_value_codes<1>(values, value_scales, seen, count, group, stride, pieces, weights, work);
    case 2: return weigh_value_codes<2>(values, value_scales, seen, count, group, stride, pieces, weights, work);
    case 3: return weigh_value_codes<3>(values, value_scales, seen, count, group, stride, pieces, weights, work);
    default: return weigh_value_codes<4>(values, value_scales, seen, count, group, stride, pieces, weights, work);
  }
}
#endif

}  // namespace specchat_kernels
