// What the block kernels (q8_0.cpp: Q8_0, q4_1.cpp: Q4_1) share: sixteen outputs
// to a tile, one 32-bit lane each, an input's four bytes broadcast to all lanes and
// multiplied by integer dot-product instructions (the layout llama.cpp's repacked
// kernels use), so a tile's weights are read once per pass and meet every row while
// in registers. `Lanes` is the vector unit they are written against (AVX-512: the
// tile in one register; AVX2: two halves of eight), and `block_mm` the driver that
// splits tiles among torch's threads and rows into groups kept in registers.
//
// Every output of every row is computed from that row alone, by the same
// instructions in the same order whatever the number of rows or threads: a verify
// pass over k + 1 rows gives bit for bit what k + 1 single steps give.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../common/activation_codes.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#endif

namespace specchat_kernels {

constexpr int64_t kTileOuts = 16;
// Rows a tile meets in one pass, their sums kept in registers: with more, the
// compiler spilled, and a pass of five rows cost twice one of four (2-core EPYC).
// Wider passes take the tile again, from L1.
constexpr int kRowsAtOnce = 4;

inline int32_t four_bytes(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

#if defined(__AVX512BW__) && defined(__AVX512F__)
#define SPECCHAT_INT_LANES 1
struct Lanes {
  using Int = __m512i;
  using Float = __m512;
  using Sign = __mmask64;  // the bytes whose weight is negative
  static constexpr int kWidth = 16;
  static Int load(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static Int low_nibbles(Int v) { return _mm512_and_si512(v, _mm512_set1_epi8(0x0F)); }
  static Int high_nibbles(Int v) { return low_nibbles(_mm512_srli_epi16(v, 4)); }
  static Int magnitude(Int v) { return _mm512_abs_epi8(v); }
  static Sign sign_of(Int v) { return _mm512_movepi8_mask(v); }
  static Int with_sign(Int x, Sign negative) { return _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x); }
  static Int broadcast(int32_t v) { return _mm512_set1_epi32(v); }
  static Int zero() { return _mm512_setzero_si512(); }
  // acc + the sums of four unsigned-by-signed byte products in each lane
  static Int dot4(Int acc, Int u, Int s) {
#if defined(__AVX512VNNI__)
    return _mm512_dpbusd_epi32(acc, u, s);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
  }
  static Int combine(Int codes, Int remainders) { return _mm512_add_epi32(_mm512_slli_epi32(codes, 8), remainders); }
  static Float halfs(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static Float zero_f() { return _mm512_setzero_ps(); }
  static Float set1(float v) { return _mm512_set1_ps(v); }
  static Float to_float(Int v) { return _mm512_cvtepi32_ps(v); }
  static Float mul(Float a, Float b) { return _mm512_mul_ps(a, b); }
  static Float fma(Float a, Float b, Float c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, Float v) { _mm512_storeu_ps(p, v); }
};
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SPECCHAT_INT_LANES 1
struct Lanes {
  using Int = __m256i;
  using Float = __m256;
  using Sign = __m256i;  // the weights themselves: sign_epi8 reads their signs
  static constexpr int kWidth = 8;
  static Int load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Int low_nibbles(Int v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
  static Int high_nibbles(Int v) { return low_nibbles(_mm256_srli_epi16(v, 4)); }
  static Int magnitude(Int v) { return _mm256_abs_epi8(v); }
  static Sign sign_of(Int v) { return v; }
  static Int with_sign(Int x, Sign w) { return _mm256_sign_epi8(x, w); }  // zero where w is (|w| is too)
  static Int broadcast(int32_t v) { return _mm256_set1_epi32(v); }
  static Int zero() { return _mm256_setzero_si256(); }
  static Int dot4(Int acc, Int u, Int s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
  }
  static Int combine(Int codes, Int remainders) { return _mm256_add_epi32(_mm256_slli_epi32(codes, 8), remainders); }
  static Float halfs(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static Float zero_f() { return _mm256_setzero_ps(); }
  static Float set1(float v) { return _mm256_set1_ps(v); }
  static Float to_float(Int v) { return _mm256_cvtepi32_ps(v); }
  static Float mul(Float a, Float b) { return _mm256_mul_ps(a, b); }
  static Float fma(Float a, Float b, Float c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, Float v) { _mm256_storeu_ps(p, v); }
};
#endif

inline float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// One tile's sixteen outputs for rows [first, first + kCount), whatever the block
// format. Format::Block<kPart> unpacks one block of the outputs [part * width,
// (part + 1) * width) and knows how its weights meet an input's codes (dot4) and
// how the integer sum becomes the output's (add_to); the scalar path reads a weight's
// code, scale and offset one at a time.
#if defined(SPECCHAT_INT_LANES)
template <typename Format, int kPart, int kCount>
void tile_part(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
  using L = Lanes;
  typename L::Float acc[kCount];
  for (int r = 0; r < kCount; ++r) acc[r] = L::zero_f();
  for (int64_t b = 0; b < blocks; ++b, tile += Format::kTileBytes) {
    const typename Format::template Block<kPart> block(tile);
    for (int r = 0; r < kCount; ++r) {
      const int8_t* codes = q.codes_of(first + r) + b * kBlock;
      const int8_t* rest = q.remainders_of(first + r) + b * kBlock;
      typename L::Int main = L::zero(), fine = L::zero();
      for (int g = 0; g < 8; ++g) {
        main = block.dot4(main, g, L::broadcast(four_bytes(codes + 4 * g)));
        fine = block.dot4(fine, g, L::broadcast(four_bytes(rest + 4 * g)));
      }
      acc[r] = block.add_to(acc[r], L::to_float(L::combine(main, fine)), q.scales_of(first + r)[b],
                            q.sums_of(first + r)[b]);
    }
  }
  for (int r = 0; r < kCount; ++r) L::store(y + r * stride + kPart * L::kWidth, acc[r]);
}

template <typename Format, int kCount>
void tile_rows(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
  tile_part<Format, 0, kCount>(tile, blocks, q, first, y, stride);
  if constexpr (Lanes::kWidth < kTileOuts) tile_part<Format, 1, kCount>(tile, blocks, q, first, y, stride);
}
#else
template <typename Format, int kCount>
void tile_rows(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
  float acc[kCount][kTileOuts] = {};
  for (int64_t b = 0; b < blocks; ++b, tile += Format::kTileBytes) {
    for (int r = 0; r < kCount; ++r) {
      const int8_t* codes = q.codes_of(first + r) + b * kBlock;
      const int8_t* rest = q.remainders_of(first + r) + b * kBlock;
      for (int64_t o = 0; o < kTileOuts; ++o) {
        int32_t main = 0, fine = 0;
        for (int64_t i = 0; i < kBlock; ++i) {
          const int32_t code = Format::code(tile, o, i);
          main += code * codes[i];
          fine += code * rest[i];
        }
        acc[r][o] += static_cast<float>(main * 256 + fine) * (Format::scale(tile, o) * q.scales_of(first + r)[b]);
        if constexpr (Format::kOffsets) acc[r][o] += Format::offset(tile, o) * q.sums_of(first + r)[b];
      }
    }
  }
  for (int r = 0; r < kCount; ++r) std::memcpy(y + r * stride, acc[r], sizeof acc[r]);
}
#endif

// tiles: uint8 [outputs / 16, blocks, Format::kTileBytes]; x [rows, blocks * 32] ->
// fp32 [rows, outputs].
template <typename Format>
at::Tensor block_mm(const at::Tensor& x, const at::Tensor& tiles) {
  TORCH_CHECK(tiles.dtype() == at::kByte && tiles.dim() == 3 && tiles.size(2) == Format::kTileBytes &&
                  tiles.is_contiguous(),
              "tiles: uint8 [outputs / 16, blocks, ", Format::kTileBytes, "]");
  const int64_t count = tiles.size(0), blocks = tiles.size(1), n = count * kTileOuts;
  const Int8Rows q = quantize_rows(x, blocks * kBlock);
  at::Tensor out = at::empty({q.rows, n}, x.options().dtype(at::kFloat));
  const uint8_t* w = tiles.data_ptr<uint8_t>();
  float* y = out.data_ptr<float>();
  at::parallel_for(0, count, 4, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* tile = w + t * blocks * Format::kTileBytes;
      for (int64_t first = 0; first < q.rows; first += kRowsAtOnce) {
        float* into = y + first * n + t * kTileOuts;
        static_assert(kRowsAtOnce == 4, "one case per row count");
        switch (std::min<int64_t>(kRowsAtOnce, q.rows - first)) {
          case 1: tile_rows<Format, 1>(tile, blocks, q, first, into, n); break;
          case 2: tile_rows<Format, 2>(tile, blocks, q, first, into, n); break;
          case 3: tile_rows<Format, 3>(tile, blocks, q, first, into, n); break;
          default: tile_rows<Format, 4>(tile, blocks, q, first, into, n); break;
        }
      }
    }
  });
  return out;
}

}  // namespace specchat_kernels
