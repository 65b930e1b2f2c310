// GGUF's Q8_0 blocks (per 32 inputs, int8 codes and a scale d: w = d q) against
// activations as two int8 codes per block (int8_rows.h; llama.cpp's one code moved
// the next-token distribution past specchat's KL gate), by integer dot products: a
// torch operator for the CPU.
//
// Why: torch has no 8-bit block kernel, so the output layer stayed fp16: 57 MB read
// a step for SmolLM2-135M, whose GGUF stores it (the tied embedding) in Q8_0. Here
// it reads 30 MB, once per pass whatever its rows (int_lanes.h): the first version,
// one output at a time, cost 0.46 ms a row on a 2-core EPYC, so a verify pass of
// five rows spent 2.3 ms on this layer alone.
//
//   y[o] = sum over blocks b of  d[o,b] s[b] (256 dot(q, c) + dot(q, r))
//
// The dot-product instructions take one unsigned operand: |q| against the
// activations' codes given q's signs.

#include "library.h"

#include <cstdint>

#include "int_lanes.h"

namespace {

using namespace specchat_kernels;

// A tile's block: 8 groups of 64 code bytes (in group g, byte 4 o + i is input
// 4 g + i of output o), then the 16 outputs' scales as fp16.
constexpr int64_t kGroup = 64;
constexpr int64_t kCodeBytes = 8 * kGroup;

struct Q8_0 {
  static constexpr int64_t kTileBytes = kCodeBytes + kTileOuts * 2;  // 544

#if defined(SPECCHAT_INT_LANES)
  // Outputs [part * width, (part + 1) * width) of the tile for rows [first, first + kCount)
  template <int kPart, int kCount>
  static void part(const uint8_t* tile, int64_t blocks, const Int8Rows& q, int64_t first, float* y, int64_t stride) {
    using L = Lanes;
    constexpr int64_t offset = kPart * L::kWidth * 4;  // this part's bytes within a group
    typename L::Float acc[kCount];
    for (int r = 0; r < kCount; ++r) acc[r] = L::zero_f();
    for (int64_t b = 0; b < blocks; ++b, tile += kTileBytes) {
      typename L::Int magnitude[8];
      typename L::Sign sign[8];
      for (int g = 0; g < 8; ++g) {
        const typename L::Int w = L::load(tile + g * kGroup + offset);
        magnitude[g] = L::magnitude(w);
        sign[g] = L::sign_of(w);
      }
      const typename L::Float d = L::halfs(tile + kCodeBytes + kPart * L::kWidth * 2);
      for (int r = 0; r < kCount; ++r) {
        const int8_t* codes = q.codes_of(first + r) + b * kBlock;
        const int8_t* rest = q.remainders_of(first + r) + b * kBlock;
        typename L::Int main = L::zero(), fine = L::zero();
        for (int g = 0; g < 8; ++g) {
          main = L::dot4(main, magnitude[g], L::with_sign(L::broadcast(four_bytes(codes + 4 * g)), sign[g]));
          fine = L::dot4(fine, magnitude[g], L::with_sign(L::broadcast(four_bytes(rest + 4 * g)), sign[g]));
        }
        const typename L::Float total = L::to_float(L::combine(main, fine));
        acc[r] = L::fma(total, L::mul(d, L::set1(q.scales_of(first + r)[b])), acc[r]);
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
            const int32_t code = static_cast<int8_t>(tile[(i / 4) * kGroup + 4 * o + i % 4]);
            main += code * codes[i];
            fine += code * rest[i];
          }
          const float d = half_to_float(tile + kCodeBytes + 2 * o);
          acc[r][o] += static_cast<float>(main * 256 + fine) * (d * q.scales_of(first + r)[b]);
        }
      }
    }
    for (int r = 0; r < kCount; ++r) std::memcpy(y + r * stride, acc[r], sizeof acc[r]);
  }
#endif
};

// tiles: uint8 [outputs / 16, blocks, 544]; x [rows, blocks * 32] -> fp32 [rows, outputs]
at::Tensor q8_0_mm(const at::Tensor& x, const at::Tensor& tiles) { return block_mm<Q8_0>(x, tiles); }

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) { m.def("q8_0_mm(Tensor x, Tensor tiles) -> Tensor"); }

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) { m.impl("q8_0_mm", &q8_0_mm); }
