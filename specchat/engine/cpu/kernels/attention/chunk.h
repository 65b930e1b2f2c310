// One task of attend_rows.cpp: a chunk of a row's visible positions against the query
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

#include "../common/scalar.h"
#include "../common/vector_unit.h"

namespace specchat_kernels {

constexpr int64_t kChunk = 256;  // visible positions a task covers (a multiple of the lanes)
#ifdef SPECCHAT_VECTOR_UNIT
constexpr int64_t kSpanLanes = VectorUnit::kLanes;
#else
constexpr int64_t kSpanLanes = 16;  // unused: no vector path
#endif

// e^x for x <= 0 (scores less their maximum), vectorizable: 2^n times a polynomial
// on [-ln2/2, ln2/2]; relative error ~2e-7, and below e^-87 it is 0.
inline void exp_nonpositive(float* x, int64_t count) {  // the scalar path's
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

// A chunk's scores (each head's row of kChunk in `scores`) to its softmax pieces, and
// the values weighted by them; a value's weight times its scale for an int8 cache.
template <typename T>
void pieces_scalar(const T* values, const float* value_scales, const int32_t* seen, int64_t count, int64_t d,
                   int64_t group, float* pieces, float* scores) {
  for (int64_t h = 0; h < group; ++h) {
    float* own = scores + h * kChunk;
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < count; ++i) best = std::fmax(best, own[i]);
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
    const float factor = value_scales != nullptr ? value_scales[seen[i]] : 1.f;
    for (int64_t h = 0; h < group; ++h) {
      float* acc = pieces + h * (2 + d) + 2;
      const float p = scores[h * kChunk + i] * factor;
      for (int64_t e = 0; e < d; ++e) acc[e] += p * widen(v[e]);
    }
  }
}

// Any head size, any vector unit: the compiler vectorizes dot and the value sums.
template <typename T>
void chunk_scalar(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count, int64_t d,
                  int64_t group, float scale, float* pieces, float* scores) {
  for (int64_t h = 0; h < group; ++h) {
    for (int64_t i = 0; i < count; ++i) scores[h * kChunk + i] = dot(q + h * d, keys + seen[i] * d, d) * scale;
  }
  pieces_scalar<T>(values, nullptr, seen, count, d, group, pieces, scores);
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

// The vector path's head sizes: whole pairs of registers, and a template for each
inline bool uses_vector_path(int64_t d) {
  if (!kHasVectorUnit) return false;
  const int64_t span = 2 * kSpanLanes;
  return d % span == 0 && (d / span == 1 || d / span == 2 || d / span == 3 || d / span == 4 || d / span == 8);
}

// The vector path widens 2 * lanes bf16 at once into their even and odd elements, so
// its queries and sums keep that order: element s*w + 2l + h sits at s*w + (w/2)h + l
// (w = 2 * lanes).
template <typename T>
void arrange(const float* from, float* to, int64_t d, bool vector_layout) {
  const bool split = vector_layout && std::is_same<T, c10::BFloat16>::value;
  const int64_t w = 2 * kSpanLanes;
  for (int64_t e = 0; e < d; ++e) to[split ? e / w * w + e % 2 * (w / 2) + e % w / 2 : e] = from[e];
}

template <typename T>
void unarrange(const float* from, float* to, int64_t d, bool vector_layout) {
  const bool split = vector_layout && std::is_same<T, c10::BFloat16>::value;
  const int64_t w = 2 * kSpanLanes;
  for (int64_t e = 0; e < d; ++e) to[e] = from[split ? e / w * w + e % 2 * (w / 2) + e % w / 2 : e];
}

#ifdef SPECCHAT_VECTOR_UNIT
// Heads whose R registers of a row fit beside R others
constexpr int fitting_heads(int registers_a_row) {
  return (VectorUnit::kRegisters - registers_a_row - 2) / registers_a_row;
}

// The values weighted by e^(score - max) (scores: each head's row of kChunk), into
// the pieces' acc; each value is widened once for S heads, its weight times its
// scale for an int8 cache.
template <typename T, int B>
void weigh_values(const T* values, const float* value_scales, const int32_t* seen, int64_t count, int64_t group,
                  float* pieces, const float* scores) {
  using V = VectorUnit;
  using Reg = V::Reg;
  constexpr int L = V::kLanes, R = 2 * B;
  constexpr int64_t d = L * R;
  constexpr int S = fitting_heads(R) >= 1 ? fitting_heads(R) : 1;
  for (int64_t h0 = 0; h0 < group; h0 += S) {
    const int64_t hs = std::min<int64_t>(S, group - h0);
    Reg acc[S][R];
    for (int h = 0; h < S; ++h)
      for (int r = 0; r < R; ++r) acc[h][r] = V::zero();
    for (int64_t i = 0; i < count; ++i) {
      Reg v[R];
      const T* row = values + seen[i] * d;
      {  // 32 positions on, from memory beside the products (a prefetch past the buffer is a no-op)
        const char* ahead = reinterpret_cast<const char*>(row + 32 * d);
        for (int64_t line = 0; line < d * static_cast<int64_t>(sizeof(T)); line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
      }
      for (int b = 0; b < B; ++b) V::load_pair(row + 2 * L * b, v[2 * b], v[2 * b + 1]);
      const float factor = value_scales != nullptr ? value_scales[seen[i]] : 1.f;
      for (int h = 0; h < S; ++h) {
        if (h >= hs) break;
        const Reg p = V::set1(scores[(h0 + h) * kChunk + i] * factor);
        for (int r = 0; r < R; ++r) acc[h][r] = V::fma(p, v[r], acc[h][r]);
      }
    }
    for (int h = 0; h < hs; ++h)
      for (int r = 0; r < R; ++r) V::store(pieces + (h0 + h) * (2 + d) + 2 + L * r, acc[h][r]);
  }
}

// A head's scores less their maximum `top`, exponentiated in place; top and their sum
// go to the head's piece
inline void exp_and_sum(float* own, int64_t count, float top, float* piece) {
  using V = VectorUnit;
  using Reg = V::Reg;
  constexpr int L = V::kLanes;
  Reg total = V::zero();
  for (int64_t base = 0; base < count; base += L) {
    const Reg e = exp_nonpositive(V::sub(V::load(own + base), V::set1(top)));
    V::store(own + base, e);
    total = V::add(total, V::first_or(e, std::min<int64_t>(L, count - base), V::zero()));
  }
  piece[0] = top;
  piece[1] = V::reduce_add(total);
}

// B spans of 2 * lanes elements a head. Each key is widened once for G heads, each
// value once for S heads; the G heads' queries stay in registers where they fit
// beside the key (AVX-512 up to d = 128), else they are read from L1.
template <typename T, int B>
void chunk_vector(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count,
                  int64_t group, float scale, float* pieces, float* scores) {
  using V = VectorUnit;
  using Reg = V::Reg;
  constexpr int L = V::kLanes, R = 2 * B;  // lanes; registers one head's row fills
  constexpr int64_t d = L * R;
  constexpr int kFit = fitting_heads(R);
  constexpr bool kHoldQueries = kFit >= 1;
  constexpr int G = kHoldQueries ? kFit : 8;
  for (int64_t h0 = 0; h0 < group; h0 += G) {  // scores, L positions at a time
    const int64_t hs = std::min<int64_t>(G, group - h0);
    Reg dots[G][L], best[G], held[kHoldQueries ? G : 1][R];
    for (int h = 0; h < G; ++h) best[h] = V::set1(-std::numeric_limits<float>::infinity());
    if constexpr (kHoldQueries) {
      for (int h = 0; h < G; ++h)
        for (int r = 0; r < R; ++r) held[h][r] = h < hs ? V::load(q + (h0 + h) * d + L * r) : V::zero();
    }
    for (int64_t base = 0; base < count; base += L) {
      const int64_t n = std::min<int64_t>(L, count - base);
      for (int64_t slot = 0; slot < L; ++slot) {
        if (slot >= n) {
          for (int h = 0; h < G; ++h) dots[h][slot] = V::zero();
          continue;
        }
        Reg k[R];
        const T* row = keys + seen[base + slot] * d;
        for (int b = 0; b < B; ++b) V::load_pair(row + 2 * L * b, k[2 * b], k[2 * b + 1]);
        for (int h = 0; h < G; ++h) {
          if (h >= hs) break;
          const float* qh = q + (h0 + h) * d;
          auto query = [&](int r) { if constexpr (kHoldQueries) return held[h][r]; else return V::load(qh + L * r); };
          Reg acc = V::mul(query(0), k[0]);
          for (int r = 1; r < R; ++r) acc = V::fma(query(r), k[r], acc);
          dots[h][slot] = acc;
        }
      }
      for (int64_t h = 0; h < hs; ++h) {  // scores has room for whole vectors (kChunk % L == 0)
        const Reg s = V::mul(V::sum_each(dots[h]), V::set1(scale));
        V::store(scores + (h0 + h) * kChunk + base, s);
        best[h] = V::max(best[h], V::first_or(s, n, best[h]));
      }
    }
    for (int64_t h = 0; h < hs; ++h) {  // e^(score - max) and its sum
      exp_and_sum(scores + (h0 + h) * kChunk, count, V::reduce_max(best[h]), pieces + (h0 + h) * (2 + d));
    }
  }
  weigh_values<T, B>(values, nullptr, seen, count, group, pieces, scores);
}

// Each head's scores (its row of kChunk) to e^(score - max) in place, max and sum
// to its piece
inline void softmax_pieces(int64_t count, int64_t d, int64_t group, float* pieces, float* scores) {
  using V = VectorUnit;
  constexpr int64_t L = V::kLanes;
  for (int64_t h = 0; h < group; ++h) {
    float* own = scores + h * kChunk;
    V::Reg best = V::set1(-std::numeric_limits<float>::infinity());
    for (int64_t base = 0; base < count; base += L) {
      best = V::max(best, V::first_or(V::load(own + base), std::min<int64_t>(L, count - base), best));
    }
    exp_and_sum(own, count, V::reduce_max(best), pieces + h * (2 + d));
  }
}

// Scores already in `scores` (each head's row of kChunk) to the softmax pieces and
// the weighted values, as chunk_vector finishes (the int8 cache's path where
// int8_values.h does not apply)
template <typename T>
void pieces_vectors(const T* values, const float* value_scales, const int32_t* seen, int64_t count, int64_t d,
                    int64_t group, float* pieces, float* scores) {
  softmax_pieces(count, d, group, pieces, scores);
  switch (d / (2 * kSpanLanes)) {  // uses_vector_path admits these
    case 1: return weigh_values<T, 1>(values, value_scales, seen, count, group, pieces, scores);
    case 2: return weigh_values<T, 2>(values, value_scales, seen, count, group, pieces, scores);
    case 3: return weigh_values<T, 3>(values, value_scales, seen, count, group, pieces, scores);
    case 4: return weigh_values<T, 4>(values, value_scales, seen, count, group, pieces, scores);
    default: return weigh_values<T, 8>(values, value_scales, seen, count, group, pieces, scores);
  }
}

template <typename T>
void chunk_vectors(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count, int64_t d,
                   int64_t group, float scale, float* pieces, float* scores) {
  switch (d / (2 * kSpanLanes)) {  // uses_vector_path admits these
    case 1: return chunk_vector<T, 1>(q, keys, values, seen, count, group, scale, pieces, scores);
    case 2: return chunk_vector<T, 2>(q, keys, values, seen, count, group, scale, pieces, scores);
    case 3: return chunk_vector<T, 3>(q, keys, values, seen, count, group, scale, pieces, scores);
    case 4: return chunk_vector<T, 4>(q, keys, values, seen, count, group, scale, pieces, scores);
    default: return chunk_vector<T, 8>(q, keys, values, seen, count, group, scale, pieces, scores);
  }
}
#endif

}  // namespace specchat_kernels
