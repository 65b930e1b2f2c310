// GGUF's Q8_0 blocks (per 32 inputs, int8 codes and a scale d: w = d q) against
// activations as two int8 codes per block (activation_codes.h; llama.cpp's one code moved
// the next-token distribution past specchat's KL gate), by integer dot products: a
// torch operator for the CPU.
//
// Why: torch has no 8-bit block kernel, so the output layer stayed fp16: 57 MB read
// a step for SmolLM2-135M, whose GGUF stores it (the tied embedding) in Q8_0. Here
// it reads 30 MB, once per pass whatever its rows (block_tiles.h): one output at a
// time costs 0.46 ms a row on a 2-core EPYC, so a verify pass of five rows would
// spend 2.3 ms on this layer alone.
//
//   y[o] = sum over blocks b of  d[o,b] s[b] (256 dot(q, c) + dot(q, r))
//
// The dot-product instructions take one unsigned operand: |q| against the
// activations' codes given q's signs.

#include "../common/library.h"

#include <cstdint>

#include "block_tiles.h"

namespace {

using namespace specchat_kernels;

// A tile's block: 8 groups of 64 code bytes (in group g, byte 4 o + i is input
// 4 g + i of output o), then the 16 outputs' scales as fp16.
constexpr int64_t kGroup = 64;
constexpr int64_t kCodeBytes = 8 * kGroup;

struct Q8_0 {
  static constexpr int64_t kTileBytes = kCodeBytes + kTileOuts * 2;  // 544
  static constexpr bool kOffsets = false;

#if defined(SPECCHAT_INT_LANES)
  template <int kPart>
  struct Block {
    Lanes::Int magnitude[8];  // input group g's |codes|
    Lanes::Sign sign[8];
    Lanes::Float d;

    explicit Block(const uint8_t* tile) {
      constexpr int64_t offset = kPart * Lanes::kWidth * 4;  // this part's bytes within a group
      for (int g = 0; g < 8; ++g) {
        const Lanes::Int w = Lanes::load(tile + g * kGroup + offset);
        magnitude[g] = Lanes::magnitude(w);
        sign[g] = Lanes::sign_of(w);
      }
      d = Lanes::halfs(tile + kCodeBytes + kPart * Lanes::kWidth * 2);
    }
    Lanes::Int dot4(Lanes::Int acc, int g, Lanes::Int x) const {
      return Lanes::dot4(acc, magnitude[g], Lanes::with_sign(x, sign[g]));
    }
    Lanes::Float add_to(Lanes::Float acc, Lanes::Float total, float scale, float /*sum*/) const {
      return Lanes::fma(total, Lanes::mul(d, Lanes::set1(scale)), acc);
    }
  };
#endif

  static int32_t code(const uint8_t* tile, int64_t o, int64_t i) {
    return static_cast<int8_t>(tile[(i / 4) * kGroup + 4 * o + i % 4]);
  }
  static float scale(const uint8_t* tile, int64_t o) { return half_to_float(tile + kCodeBytes + 2 * o); }
  static float offset(const uint8_t*, int64_t) { return 0.f; }  // none: kOffsets is false
};

// tiles: uint8 [outputs / 16, blocks, 544]; x [rows, blocks * 32] -> fp32 [rows, outputs]
at::Tensor q8_0_mm(const at::Tensor& x, const at::Tensor& tiles) { return block_mm<Q8_0>(x, tiles); }

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) { m.def("q8_0_mm(Tensor x, Tensor tiles) -> Tensor"); }

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) { m.impl("q8_0_mm", &q8_0_mm); }
