// One task of attend.cpp: a chunk of a row's visible positions against the query
// heads that share one kv head. Its softmax pieces per head are [max, sum, acc[d]]:
// the chunk's largest score, the sum of e^(score - max) and the values weighted by it.
#pragma once

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "scalar.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace specchat_kernels {

constexpr int64_t kChunk = 256;  // visible positions a task covers

// e^x for x <= 0 (scores less their maximum), vectorizable: 2^n times a polynomial
// on [-ln2/2, ln2/2]; relative error ~2e-7, and below e^-87 it is 0.
inline void exp_nonpositive(float* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float v = std::fmax(x[i], -87.f);
    const float n = std::nearbyint(v * 1.44269504f);
    const float r = v - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    float p = 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    x[i] = x[i] <= -87.f ? 0.f : p * scale;
  }
}

// Any head size, any vector unit: the compiler vectorizes dot and the value sums.
template <typename T>
void chunk_scalar(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count, int64_t d,
                  int64_t group, float scale, float* pieces, float* scores) {
  for (int64_t h = 0; h < group; ++h) {
    float* own = scores + h * kChunk;
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < count; ++i) {
      own[i] = dot(q + h * d, keys + seen[i] * d, d) * scale;
      best = std::fmax(best, own[i]);
    }
    for (int64_t i = 0; i < count; ++i) own[i] -= best;
    exp_nonpositive(own, count);
    float total = 0.f;
    for (int64_t i = 0; i < count; ++i) total += own[i];
    float* piece = pieces + h * (2 + d);
    piece[0] = best;
    piece[1] = total;
    std::fill(piece + 2, piece + 2 + d, 0.f);
  }
  for (int64_t i = 0; i < count; ++i) {  // each value row once for the whole group
    const T* v = values + seen[i] * d;
    for (int64_t h = 0; h < group; ++h) {
      float* acc = pieces + h * (2 + d) + 2;
      const float p = scores[h * kChunk + i];
      for (int64_t e = 0; e < d; ++e) acc[e] += p * widen(v[e]);
    }
  }
}

// The softmax pieces of a row's chunks, merged in chunk order into out[d]
template <typename At>
void merge(At at, int64_t chunks, int64_t d, float* out) {
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < chunks; ++c) best = std::fmax(best, at(c)[0]);
  std::fill(out, out + d, 0.f);
  float total = 0.f;
  for (int64_t c = 0; c < chunks; ++c) {
    const float* piece = at(c);
    const float weight = std::exp(piece[0] - best);  // exactly 1 for the chunk holding the maximum
    total += piece[1] * weight;
    for (int64_t e = 0; e < d; ++e) out[e] += piece[2 + e] * weight;
  }
  const float inverse = total > 0.f ? 1.f / total : 0.f;
  for (int64_t e = 0; e < d; ++e) out[e] *= inverse;
}

#if defined(__AVX512F__)
inline bool uses_vector_path(int64_t d) { return d == 32 || d == 64 || d == 96 || d == 128 || d == 256; }
#else
inline bool uses_vector_path(int64_t) { return false; }
#endif

// The vector path widens 32 bf16 at once into their even and odd elements, so its
// queries and sums keep that order: element b*32 + 2l + h sits at b*32 + 16h + l.
template <typename T>
void arrange(const float* from, float* to, int64_t d, bool vector_layout) {
  const bool split = vector_layout && std::is_same<T, c10::BFloat16>::value;
  for (int64_t e = 0; e < d; ++e) to[split ? e / 32 * 32 + e % 2 * 16 + e % 32 / 2 : e] = from[e];
}

template <typename T>
void unarrange(const float* from, float* to, int64_t d, bool vector_layout) {
  const bool split = vector_layout && std::is_same<T, c10::BFloat16>::value;
  for (int64_t e = 0; e < d; ++e) to[e] = from[split ? e / 32 * 32 + e % 2 * 16 + e % 32 / 2 : e];
}

#if defined(__AVX512F__)
inline void load_pair(const float* p, __m512& lo, __m512& hi) {
  lo = _mm512_loadu_ps(p);
  hi = _mm512_loadu_ps(p + 16);
}
inline void load_pair(const c10::BFloat16* p, __m512& lo, __m512& hi) {  // even, odd elements
  const __m512i raw = _mm512_loadu_si512(p);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// out[i] = the sum of a[i]'s 16 lanes, for 16 vectors at once, by the same tree for every i
inline __m512 sum_each(const __m512* a) {
  __m512 pairs[8], quads[4], halves[2];
  for (int i = 0; i < 8; ++i)
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0x88),
                              _mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], 0x88),
                       _mm512_shuffle_f32x4(halves[0], halves[1], 0xDD));
}

// e^x for x <= 0, 16 at a time: 2^n times a polynomial on [-ln2/2, ln2/2]
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 first(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }  // n <= 16

// Heads in steps of S, their queries (scores pass) or sums (values pass) held in
// registers: S * 2B vectors of 32.
template <typename T, int B>
void chunk_blocks(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count,
                  int64_t group, float scale, float* pieces, float* scores) {
  constexpr int64_t d = 32 * B;
  constexpr int S = B >= 12 ? 1 : 12 / B;
  for (int64_t h0 = 0; h0 < group; h0 += S) {
    const int64_t hs = std::min<int64_t>(S, group - h0);
    __m512 qv[S][2 * B], best[S];
    for (int h = 0; h < S; ++h) {
      best[h] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      for (int b = 0; b < 2 * B; ++b) qv[h][b] = h < hs ? _mm512_loadu_ps(q + (h0 + h) * d + 16 * b) : best[h];
    }
    alignas(64) __m512 dots[S][16];
    for (int64_t base = 0; base < count; base += 16) {
      const int64_t n = std::min<int64_t>(16, count - base);
      for (int64_t slot = 0; slot < 16; ++slot) {
        if (slot >= n) {
          for (int h = 0; h < S; ++h) dots[h][slot] = _mm512_setzero_ps();
          continue;
        }
        __m512 k[2 * B];
        const T* row = keys + seen[base + slot] * d;
        for (int b = 0; b < B; ++b) load_pair(row + 32 * b, k[2 * b], k[2 * b + 1]);
        for (int h = 0; h < S; ++h) {
          if (h >= hs) break;
          __m512 acc = _mm512_mul_ps(qv[h][0], k[0]);
          for (int b = 1; b < 2 * B; ++b) acc = _mm512_fmadd_ps(qv[h][b], k[b], acc);
          dots[h][slot] = acc;
        }
      }
      for (int h = 0; h < hs; ++h) {
        const __m512 s = _mm512_mul_ps(sum_each(dots[h]), _mm512_set1_ps(scale));
        _mm512_mask_storeu_ps(scores + (h0 + h) * kChunk + base, first(n), s);
        best[h] = _mm512_mask_max_ps(best[h], first(n), best[h], s);
      }
    }
    for (int h = 0; h < hs; ++h) {  // e^(score - max) and its sum
      float* own = scores + (h0 + h) * kChunk;
      const float top = _mm512_reduce_max_ps(best[h]);
      __m512 total = _mm512_setzero_ps();
      for (int64_t base = 0; base < count; base += 16) {
        const __mmask16 m = first(std::min<int64_t>(16, count - base));
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, own + base), _mm512_set1_ps(top)));
        _mm512_mask_storeu_ps(own + base, m, e);
        total = _mm512_add_ps(total, _mm512_maskz_mov_ps(m, e));
      }
      float* piece = pieces + (h0 + h) * (2 + d);
      piece[0] = top;
      piece[1] = _mm512_reduce_add_ps(total);
    }
    __m512 acc[S][2 * B];
    for (int h = 0; h < S; ++h)
      for (int b = 0; b < 2 * B; ++b) acc[h][b] = _mm512_setzero_ps();
    for (int64_t i = 0; i < count; ++i) {
      __m512 v[2 * B];
      const T* row = values + seen[i] * d;
      for (int b = 0; b < B; ++b) load_pair(row + 32 * b, v[2 * b], v[2 * b + 1]);
      for (int h = 0; h < S; ++h) {
        if (h >= hs) break;
        const __m512 p = _mm512_set1_ps(scores[(h0 + h) * kChunk + i]);
        for (int b = 0; b < 2 * B; ++b) acc[h][b] = _mm512_fmadd_ps(p, v[b], acc[h][b]);
      }
    }
    for (int h = 0; h < hs; ++h)
      for (int b = 0; b < 2 * B; ++b) _mm512_storeu_ps(pieces + (h0 + h) * (2 + d) + 2 + 16 * b, acc[h][b]);
  }
}

template <typename T>
void chunk_avx512(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count, int64_t d,
                  int64_t group, float scale, float* pieces, float* scores) {
  switch (d / 32) {
    case 1: return chunk_blocks<T, 1>(q, keys, values, seen, count, group, scale, pieces, scores);
    case 2: return chunk_blocks<T, 2>(q, keys, values, seen, count, group, scale, pieces, scores);
    case 3: return chunk_blocks<T, 3>(q, keys, values, seen, count, group, scale, pieces, scores);
    case 4: return chunk_blocks<T, 4>(q, keys, values, seen, count, group, scale, pieces, scores);
    default: return chunk_blocks<T, 8>(q, keys, values, seen, count, group, scale, pieces, scores);  // 256
  }
}
#endif

}  // namespace specchat_kernels
