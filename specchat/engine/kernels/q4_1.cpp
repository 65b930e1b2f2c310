// GGUF's Q4_1 blocks (per 32 inputs, 4-bit codes 0..15 with a scale d and an offset
// m: w = d q + m) against activations as two int8 codes per block (int8_rows.h), by
// integer dot products: a torch operator for the CPU.
//
// Why: torch's int4 kernel (_weight_int4pack_mm_for_cpu) ran a step's layers of the
// embedded model at ~20 GB/s on a 2-core EPYC and took rows four at a time, so a
// verify pass of 5 rows cost 1.9x one row. Here the weights' bytes are read once per
// pass and meet every row while in registers (int_lanes.h).
//
//   y[o] = sum over blocks b of  d[o,b] s[b] (256 dot(q, c) + dot(q, r))  +  m[o,b] sum(x_b)

#include "library.h"

#include <cstdint>

#include "int_lanes.h"

namespace {

using namespace specchat_kernels;

// A tile's block: 4 chunks of 64 code bytes, then d and m of the 16 outputs as fp16.
// In chunk c, byte 4 o + i holds input 4 c + i of output o in its low nibble and
// input 16 + 4 c + i in its high nibble: each nibble plane is one dot-product operand.
constexpr int64_t kChunk = 64;
constexpr int64_t kCodeBytes = 4 * kChunk;

struct Q4_1 {
  static constexpr int64_t kTileBytes = kCodeBytes + 2 * kTileOuts * 2;  // 320

#if defined(SPECCHAT_INT_LANES)
  // Outputs [part * width, (part + 1) * width) of the tile for rows [first, first + kCount)
  template <int kPart, int kCount>
  static void part(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
    using L = Lanes;
    constexpr int64_t offset = kPart * L::kWidth * 4;  // this part's bytes within a chunk
    typename L::Float acc[kCount];
    for (int r = 0; r < kCount; ++r) acc[r] = L::zero_f();
    for (int64_t b = 0; b < blocks; ++b, tile += kTileBytes) {
      typename L::Int w[8];
      for (int c = 0; c < 4; ++c) {
        const typename L::Int raw = L::load(tile + c * kChunk + offset);
        w[c] = L::low_nibbles(raw);
        w[c + 4] = L::high_nibbles(raw);
      }
      const typename L::Float d = L::halfs(tile + kCodeBytes + kPart * L::kWidth * 2);
      const typename L::Float m = L::halfs(tile + kCodeBytes + kTileOuts * 2 + kPart * L::kWidth * 2);
      for (int r = 0; r < kCount; ++r) {
        const int8_t* codes = q.codes_of(first + r) + b * kBlock;
        const int8_t* rest = q.remainders_of(first + r) + b * kBlock;
        typename L::Int main = L::zero(), fine = L::zero();
        for (int g = 0; g < 8; ++g) {
          main = L::dot4(main, w[g], L::broadcast(four_bytes(codes + 4 * g)));
          fine = L::dot4(fine, w[g], L::broadcast(four_bytes(rest + 4 * g)));
        }
        const typename L::Float total = L::to_float(L::combine(main, fine));
        acc[r] = L::fma(total, L::mul(d, L::set1(q.scales_of(first + r)[b])), acc[r]);
        acc[r] = L::fma(m, L::set1(q.sums_of(first + r)[b]), acc[r]);
      }
    }
    for (int r = 0; r < kCount; ++r) L::store(y + r * stride + kPart * L::kWidth, acc[r]);
  }

  template <int kCount>
  static void tile(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
    part<0, kCount>(tile, blocks, q, first, y, stride);
    if constexpr (Lanes::kWidth < kTileOuts) part<1, kCount>(tile, blocks, q, first, y, stride);
  }
#else
  template <int kCount>
  static void tile(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
    float acc[kCount][kTileOuts] = {};
    for (int64_t b = 0; b < blocks; ++b, tile += kTileBytes) {
      for (int r = 0; r < kCount; ++r) {
        const int8_t* codes = q.codes_of(first + r) + b * kBlock;
        const int8_t* rest = q.remainders_of(first + r) + b * kBlock;
        for (int64_t o = 0; o < kTileOuts; ++o) {
          int32_t main = 0, fine = 0;
          for (int64_t i = 0; i < kBlock; ++i) {
            const int64_t chunk = (i % 16) / 4, shift = i < 16 ? 0 : 4;
            const int32_t code = (tile[chunk * kChunk + 4 * o + i % 4] >> shift) & 0x0F;
            main += code * codes[i];
            fine += code * rest[i];
          }
          const float d = half_to_float(tile + kCodeBytes + 2 * o);
          const float m = half_to_float(tile + kCodeBytes + kTileOuts * 2 + 2 * o);
          acc[r][o] += static_cast<float>(main * 256 + fine) * (d * q.scales_of(first + r)[b]);
          acc[r][o] += m * q.sums_of(first + r)[b];
        }
      }
    }
    for (int r = 0; r < kCount; ++r) std::memcpy(y + r * stride, acc[r], sizeof acc[r]);
  }
#endif
};

// tiles: uint8 [outputs / 16, blocks, 320]; x [rows, blocks * 32] -> fp32 [rows, outputs]
at::Tensor q4_1_mm(const at::Tensor& x, const at::Tensor& tiles) { return block_mm<Q4_1>(x, tiles); }

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) { m.def("q4_1_mm(Tensor x, Tensor tiles) -> Tensor"); }

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) { m.impl("q4_1_mm", &q4_1_mm); }
