// GGUF's Q8_0 blocks against activations quantized to int8 per block of 32 inputs,
// by integer dot products (AVX2 maddubs, or VNNI dpbusd), as llama.cpp computes them:
// a torch operator for the CPU.
//
// Why: torch has no 8-bit block kernel, so the output layer stayed fp16: 57 MB read
// a step for SmolLM2-135M, whose GGUF stores it (the tied embedding) in Q8_0. Here
// it reads 32 MB; a one-row step on a 2-core EPYC went from 13.8 to 11.9 ms.
// (The same arithmetic for the Q4_1 layers was tried: int8 activations there cost
// KL 2.3e-3 against the float weights, over specchat's 1e-3, and a 4-row pass was
// compute-bound at 1.3x torch's int4 kernel.)
//
// Each output element is computed by one thread from its own input row alone, in
// the same order whatever the number of rows or threads: a verify pass over k + 1
// rows gives bit for bit what k + 1 single steps give.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kBlock = 32;

// x [rows, k] fp32 -> int8 codes [rows, k] and scales [rows, k / 32]
void quantize_rows(const float* x, int64_t rows, int64_t k, int8_t* codes, float* scales) {
  const int64_t blocks = k / kBlock;
  for (int64_t b = 0; b < rows * blocks; ++b) {
    const float* v = x + b * kBlock;
    float amax = 0.f;
    for (int64_t i = 0; i < kBlock; ++i) amax = std::fmax(amax, std::fabs(v[i]));
    const float scale = amax / 127.f;
    const float inverse = scale > 0.f ? 1.f / scale : 0.f;
    for (int64_t i = 0; i < kBlock; ++i) codes[b * kBlock + i] = static_cast<int8_t>(std::nearbyint(v[i] * inverse));
    scales[b] = scale;
  }
}

#if defined(__AVX2__)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 unsigned bytes times 32 signed bytes, summed by fours into 8 int32
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
#endif

// Weights come tiled: four outputs side by side, block after block, each block of the
// tile holding the four outputs' codes and then their scales, so
// a product reads one sequential stream (interleaved rows read at a third of the
// speed: the prefetcher follows one stream, not four). Four outputs at once also
// give four independent dependency chains. Every output is computed by the same
// instructions in the same order, whatever the number of rows or threads.
constexpr int64_t kOuts = 4;
constexpr int64_t kQ8Tile = kOuts * 32 + kOuts * 4;  // codes, scales: 144 bytes

inline float load_float(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Four outputs of a Q8_0 tile: 32 int8 codes per output and block, then the scales.
void tile_q8_0(const uint8_t* tile, int64_t blocks, const int8_t* qx, const float* dx, float* y) {
#if defined(__AVX2__)
  __m256 acc[kOuts];
  for (int j = 0; j < kOuts; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b, tile += kQ8Tile) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + b * kBlock));
    for (int j = 0; j < kOuts; ++j) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + j * 32));
      // unsigned times signed: |w| against x with w's sign
      const __m256i p = dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
      const float scale = load_float(tile + kOuts * 32 + j * 4) * dx[b];
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc[j]);
    }
  }
  for (int j = 0; j < kOuts; ++j) y[j] = hsum(acc[j]);
#else
  float total[kOuts] = {};
  for (int64_t b = 0; b < blocks; ++b, tile += kQ8Tile) {
    for (int j = 0; j < kOuts; ++j) {
      const int8_t* codes = reinterpret_cast<const int8_t*>(tile + j * 32);
      int32_t sum = 0;
      for (int64_t i = 0; i < kBlock; ++i) sum += codes[i] * qx[b * kBlock + i];
      total[j] += static_cast<float>(sum) * (load_float(tile + kOuts * 32 + j * 4) * dx[b]);
    }
  }
  for (int j = 0; j < kOuts; ++j) y[j] = total[j];
#endif
}

struct QuantizedRows {
  std::vector<int8_t> codes;
  std::vector<float> scales;
  int64_t rows, blocks;
};

QuantizedRows quantize(const at::Tensor& x, int64_t in_features) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == in_features, "x must be [rows, ", in_features, "]");
  TORCH_CHECK(in_features % kBlock == 0, "in_features must be a multiple of 32");
  const at::Tensor input = x.to(at::kFloat).contiguous();
  QuantizedRows q{std::vector<int8_t>(input.numel()), {}, input.size(0), in_features / kBlock};
  q.scales.resize(q.rows * q.blocks);
  quantize_rows(input.data_ptr<float>(), q.rows, in_features, q.codes.data(), q.scales.data());
  return q;
}

// tiles: uint8 [outputs / 4, blocks, 144]. Tiles are split among torch's own
// threads (its OpenMP team, on the calling thread); each tile's weights meet every
// input row while they are in L1.
at::Tensor q8_0_mm(const at::Tensor& x, const at::Tensor& tiles) {
  constexpr int64_t tile_bytes = kQ8Tile;
  TORCH_CHECK(tiles.dtype() == at::kByte && tiles.dim() == 3 && tiles.size(2) == tile_bytes && tiles.is_contiguous(),
              "tiles: uint8 [outputs / 4, blocks, ", tile_bytes, "]");
  const int64_t count = tiles.size(0), blocks = tiles.size(1), k = blocks * kBlock, n = count * kOuts;
  const QuantizedRows q = quantize(x, k);
  at::Tensor out = at::empty({q.rows, n}, x.options().dtype(at::kFloat));
  const uint8_t* w = tiles.data_ptr<uint8_t>();
  float* y = out.data_ptr<float>();
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    float result[kOuts];
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* tile = w + t * blocks * tile_bytes;
      for (int64_t r = 0; r < q.rows; ++r) {
        const int8_t* qx = q.codes.data() + r * k;
        const float* dx = q.scales.data() + r * blocks;
        tile_q8_0(tile, blocks, qx, dx, result);
        std::memcpy(y + r * n + t * kOuts, result, sizeof result);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(specchat_cpu, m) {
  m.def("q8_0_mm(Tensor x, Tensor tiles) -> Tensor");
}

TORCH_LIBRARY_IMPL(specchat_cpu, CPU, m) {
  m.impl("q8_0_mm", &q8_0_mm);
}
