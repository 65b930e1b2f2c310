// GGUF's Q4_1 blocks (per 32 inputs, 4-bit codes 0..15 with a scale d and an offset
// m: w = d q + m) against activations as two int8 codes per block (activation_codes.h), by
// integer dot products: a torch operator for the CPU.
//
// Why: torch's int4 kernel (_weight_int4pack_mm_for_cpu) ran a step's layers of the
// embedded model at ~20 GB/s on a 2-core EPYC and took rows four at a time, so a
// verify pass of 5 rows cost 1.9x one row. Here the weights' bytes are read once per
// pass and meet every row while in registers (block_tiles.h).
//
//   y[o] = sum over blocks b of  d[o,b] s[b] (256 dot(q, c) + dot(q, r))  +  m[o,b] sum(x_b)

#include "../common/library.h"

#include <cstdint>

#include "block_tiles.h"

namespace {

using namespace specchat_kernels;

// A tile's block: 4 chunks of 64 code bytes, then d and m of the 16 outputs as fp16.
// In chunk c, byte 4 o + i holds input 4 c + i of output o in its low nibble and
// input 16 + 4 c + i in its high nibble: each nibble plane is one dot-product operand.
constexpr int64_t kChunk = 64;
constexpr int64_t kCodeBytes = 4 * kChunk;

struct Q4_1 {
  static constexpr int64_t kTileBytes = kCodeBytes + 2 * kTileOuts * 2;  // 320
  static constexpr bool kOffsets = true;

#if defined(SPECCHAT_INT_LANES)
  template <int kPart>
  struct Block {
    Lanes::Int w[8];  // input group g's codes, 0..15
    Lanes::Float d, m;

    explicit Block(const uint8_t* tile) {
      constexpr int64_t offset = kPart * Lanes::kWidth * 4;  // this part's bytes within a chunk
      for (int c = 0; c < 4; ++c) {
        const Lanes::Int raw = Lanes::load(tile + c * kChunk + offset);
        w[c] = Lanes::low_nibbles(raw);
        w[c + 4] = Lanes::high_nibbles(raw);
      }
      d = Lanes::halfs(tile + kCodeBytes + kPart * Lanes::kWidth * 2);
      m = Lanes::halfs(tile + kCodeBytes + kTileOuts * 2 + kPart * Lanes::kWidth * 2);
    }
    Lanes::Int dot4(Lanes::Int acc, int g, Lanes::Int x) const { return Lanes::dot4(acc, w[g], x); }
    Lanes::Float add_to(Lanes::Float acc, Lanes::Float total, float scale, float sum) const {
      return Lanes::fma(m, Lanes::set1(sum), Lanes::fma(total, Lanes::mul(d, Lanes::set1(scale)), acc));
    }
  };
#endif

  static int32_t code(const uint8_t* tile, int64_t o, int64_t i) {
    return (tile[(i % 16) / 4 * kChunk + 4 * o + i % 4] >> (i < 16 ? 0 : 4)) & 0x0F;
  }
  static float scale(const uint8_t* tile, int64_t o) { return half_to_float(tile + kCodeBytes + 2 * o); }
  static float offset(const uint8_t* tile, int64_t o) { return half_to_float(tile + kCodeBytes + kTileOuts * 2 + 2 * o); }
};

// tiles: uint8 [outputs / 16, blocks, 320]; x [rows, blocks * 32] -> fp32 [rows, outputs]
at::Tensor q4_1_mm(const at::Tensor& x, const at::Tensor& tiles) { return block_mm<Q4_1>(x, tiles); }

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) { m.def("q4_1_mm(Tensor x, Tensor tiles) -> Tensor"); }

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) { m.impl("q4_1_mm", &q4_1_mm); }
