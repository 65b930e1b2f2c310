// Attention scores over an int8 KV cache's keys (cpu/int8_kv.py has the layout).
//
// Why: after a long document attention reads the whole cache every step (3,600
// positions x 30 layers of the embedded target: 83 MB in bf16, about half a step on
// a 2-core EPYC, bound by memory). One byte a key or value element halves that; the
// keys' scores then come from integer products, so widening them costs nothing.
//
// Keys are stored in tiles of 16 positions: [d / 4][16 positions][4 elements], each
// element code + 128 (unsigned). One 64-byte row of a tile holds 4 elements of 16
// positions, so an integer product (vpdpbusd) against 4 of a query's codes,
// broadcast, adds to 16 positions' scores at once: no key is widened and no sum is
// reduced across lanes. A query is two int8 codes an element per block of 32, as
// the block kernels take activations (activation_codes.h), so its rounding stays ~1/65,000.
//
// Integer sums are exact, so a position's score does not depend on which rows or
// positions a pass holds: verify passes stay bit for bit the single steps.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/activation_codes.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace specchat_kernels {

constexpr int64_t kTile = 16;  // positions a key tile holds

// A query head as codes: x ~ step_b / 256 * (256 c + r) in block b of 32 elements;
// bias_b = 128 * (256 sum(c) + sum(r)), what the keys' +128 adds to block b's sum.
// Views into CodedQueries' buffers.
struct QueryCodes {
  const int8_t* codes;
  const int8_t* remainders;
  const float* steps;
  const int32_t* biases;
};

// Every (row, head) query of a pass as codes, in four buffers (one allocation each a
// call, not four a head: a step makes 30 calls of 9 heads)
struct CodedQueries {
  std::vector<int8_t> codes, remainders;
  std::vector<float> steps;
  std::vector<int32_t> biases;
  std::vector<QueryCodes> heads;

  CodedQueries(const float* q, int64_t count, int64_t d) {
    const int64_t blocks = d / kBlock;
    codes.resize(count * d);
    remainders.resize(count * d);
    steps.resize(count * blocks);
    biases.resize(count * blocks);
    heads.reserve(count);
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t at = i * d + b * kBlock;
        float step, sum;
        quantize_block(q + at, codes.data() + at, remainders.data() + at, step, sum);
        int32_t code_sum = 0, remainder_sum = 0;
        for (int64_t e = at; e < at + kBlock; ++e) {
          code_sum += codes[e];
          remainder_sum += remainders[e];
        }
        steps[i * blocks + b] = step / 256.f;
        biases[i * blocks + b] = 128 * (256 * code_sum + remainder_sum);
      }
      heads.push_back({codes.data() + i * d, remainders.data() + i * d, steps.data() + i * blocks,
                       biases.data() + i * blocks});
    }
  }
};

// One tile's 16 scores for each head of a group: out[h * stride + slot], times
// `scale` and each key's own scale (key_scales of the tile's 16 positions)
inline void tile_scores(const uint8_t* tile, const QueryCodes* heads, int64_t group, int64_t d,
                        const float* key_scales, float scale, float* out, int64_t stride) {
  const int64_t blocks = d / kBlock;
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
  const __m512 keys = _mm512_mul_ps(_mm512_loadu_ps(key_scales), _mm512_set1_ps(scale));
  for (int64_t h = 0; h < group; ++h) {
    const QueryCodes& q = heads[h];
    __m512 score = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* rows = tile + b * (kBlock / 4) * 64;
      const int32_t* c = reinterpret_cast<const int32_t*>(q.codes + b * kBlock);
      const int32_t* r = reinterpret_cast<const int32_t*>(q.remainders + b * kBlock);
      __m512i high = _mm512_setzero_si512(), low = _mm512_setzero_si512();
      for (int j = 0; j < kBlock / 4; ++j) {
        const __m512i row = _mm512_loadu_si512(rows + j * 64);
        high = _mm512_dpbusd_epi32(high, row, _mm512_set1_epi32(c[j]));
        low = _mm512_dpbusd_epi32(low, row, _mm512_set1_epi32(r[j]));
      }
      const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(high, 8), low),
                                           _mm512_set1_epi32(q.biases[b]));
      score = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(q.steps[b]), score);
    }
    _mm512_storeu_ps(out + h * stride, _mm512_mul_ps(score, keys));
  }
#else
  for (int64_t h = 0; h < group; ++h) {
    const QueryCodes& q = heads[h];
    float score[kTile] = {};
    for (int64_t b = 0; b < blocks; ++b) {
      int32_t sum[kTile] = {};
      for (int64_t j = b * kBlock / 4; j < (b + 1) * kBlock / 4; ++j) {
        const uint8_t* row = tile + j * 64;
        for (int64_t slot = 0; slot < kTile; ++slot) {
          int32_t part = 0;
          for (int i = 0; i < 4; ++i) part += row[slot * 4 + i] * (256 * q.codes[j * 4 + i] + q.remainders[j * 4 + i]);
          sum[slot] += part;
        }
      }
      for (int64_t slot = 0; slot < kTile; ++slot) score[slot] += static_cast<float>(sum[slot] - q.biases[b]) * q.steps[b];
    }
    for (int64_t slot = 0; slot < kTile; ++slot) out[h * stride + slot] = score[slot] * (key_scales[slot] * scale);
  }
#endif
}

// The scores of a chunk's visible positions (scores: each head's row of kChunk):
// every tile the chunk spans is scored whole, then the visible positions are picked.
// keys: one kv head's tiles; key_scales: its per-position scales.
inline void code_scores(const uint8_t* keys, const float* key_scales, const QueryCodes* heads, const int32_t* seen,
                        int64_t count, int64_t d, int64_t group, float scale, int64_t chunk, float* scores,
                        std::vector<float>& spanned) {
  const int64_t first = seen[0] / kTile, last = seen[count - 1] / kTile, span = (last - first + 1) * kTile;
  spanned.resize(group * span);  // [group][span]: each head's scores of the positions spanned
  for (int64_t t = first; t <= last; ++t) {
#if defined(__AVX512F__)
    // the tile after next, from memory while this one is computed (the hardware's
    // prefetcher alone left a long document's attention at the sum of both)
    const char* ahead = reinterpret_cast<const char*>(keys + (t + 6) * kTile * d);
    for (int64_t line = 0; line < kTile * d; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(key_scales + (t + 6) * kTile), _MM_HINT_T0);
#endif
    tile_scores(keys + t * kTile * d, heads, group, d, key_scales + t * kTile, scale,
                spanned.data() + (t - first) * kTile, span);
  }
  const int64_t offset = seen[0] - first * kTile;
  if (seen[count - 1] - seen[0] == count - 1) {  // one run of positions (no drafted alternative's gap)
    for (int64_t h = 0; h < group; ++h) {
      std::copy_n(spanned.data() + h * span + offset, count, scores + h * chunk);
    }
    return;
  }
  for (int64_t h = 0; h < group; ++h) {
    for (int64_t i = 0; i < count; ++i) scores[h * chunk + i] = spanned[h * span + seen[i] - first * kTile];
  }
}

}  // namespace specchat_kernels
