// Attention for the few query rows of a decode step or a verify pass, over the KV
// cache's buffers, each row over exactly the positions its mask lets it see.
//
// Why: torch's CPU sdpa (flash attention) costs ~200 us a call for one query over
// 300 positions on a 2-core EPYC, and a call over k + 1 rows costs k + 1 times that:
// at 300 tokens of context attention was a third of a step and 60% of a 4-row verify
// pass. A decode query is a dot product per position, a softmax and a weighted sum:
// here that is one pass over the keys and one over the values per head.
//
// Each (row, head) is computed by one thread, over its visible positions in
// ascending order, with the same instructions whatever the other rows are: a verify
// pass gives bit for bit the logits single steps give, with no padding or planning.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "scalar.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using specchat_kernels::dot;
using specchat_kernels::widen;

// e^x for x <= 0 (scores less their maximum), vectorizable: 2^n times a polynomial
// on [-ln2/2, ln2/2]; relative error ~2e-7, and below e^-87 it is 0.
void exp_nonpositive(float* x, int64_t count) {
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

#if defined(__AVX512F__)
// 16 keys' or values' elements as fp32
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

template <typename T>
float dot16(const float* q, const T* k, int64_t d) {  // d a multiple of 16
  __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), load16(k));
  for (int64_t i = 16; i < d; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load16(k + i), acc);
  return _mm512_reduce_add_ps(acc);
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
#endif

// One query row of one head: out[d] = softmax(scale q K^T over visible) V
template <typename T>
void attend_one(const float* q, const T* keys, const T* values, const bool* visible, int64_t length,
                int64_t d, float scale, float* out, std::vector<int32_t>& seen, std::vector<float>& scores) {
  seen.clear();
  for (int64_t j = 0; j < length; ++j) {
    if (visible[j]) seen.push_back(static_cast<int32_t>(j));
  }
  const int64_t count = static_cast<int64_t>(seen.size());
  scores.resize(count);
  float best = -std::numeric_limits<float>::infinity();
#if defined(__AVX512F__)
  if (d % 16 == 0 && d <= 256) {
    for (int64_t i = 0; i < count; ++i) {
      scores[i] = dot16(q, keys + seen[i] * d, d) * scale;
      best = std::fmax(best, scores[i]);
    }
    __m512 sum = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores.data() + i), _mm512_set1_ps(best)));
      _mm512_storeu_ps(scores.data() + i, e);
      sum = _mm512_add_ps(sum, e);
    }
    if (i < count) {
      const __mmask16 tail = static_cast<__mmask16>((1u << (count - i)) - 1);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, scores.data() + i), _mm512_set1_ps(best)));
      _mm512_mask_storeu_ps(scores.data() + i, tail, e);
      sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
    }
    __m512 acc[16];
    const int64_t chunks = d / 16;
    for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < count; ++j) {
      const T* v = values + seen[j] * d;
      const __m512 p = _mm512_set1_ps(scores[j]);
      for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_fmadd_ps(p, load16(v + c * 16), acc[c]);
    }
    const __m512 inverse = _mm512_set1_ps(count ? 1.f / _mm512_reduce_add_ps(sum) : 0.f);
    for (int64_t c = 0; c < chunks; ++c) _mm512_storeu_ps(out + c * 16, _mm512_mul_ps(acc[c], inverse));
    return;
  }
#endif
  for (int64_t i = 0; i < count; ++i) {
    scores[i] = dot(q, keys + seen[i] * d, d) * scale;
    best = std::fmax(best, scores[i]);
  }
  for (int64_t i = 0; i < count; ++i) scores[i] -= best;
  exp_nonpositive(scores.data(), count);
  float total = 0.f;
  for (int64_t i = 0; i < count; ++i) total += scores[i];
  for (int64_t e = 0; e < d; ++e) out[e] = 0.f;
  for (int64_t i = 0; i < count; ++i) {
    const T* v = values + seen[i] * d;
    const float p = scores[i];
    for (int64_t e = 0; e < d; ++e) out[e] += p * widen(v[e]);
  }
  const float inverse = count ? 1.f / total : 0.f;
  for (int64_t e = 0; e < d; ++e) out[e] *= inverse;
}

template <typename T>
void attend_all(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& visible,
                double scale, at::Tensor& out) {
  const int64_t heads = q.size(0), rows = q.size(1), d = q.size(2);
  const int64_t kv_heads = keys.size(0), capacity = keys.size(1), length = visible.size(1);
  const int64_t group = heads / kv_heads;
  const float* qp = q.data_ptr<float>();
  const T* kp = keys.data_ptr<T>();
  const T* vp = values.data_ptr<T>();
  const bool* mp = visible.data_ptr<bool>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> seen;
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / heads, head = task % heads, kv = head / group;
      attend_one<T>(qp + (head * rows + row) * d, kp + kv * capacity * d, vp + kv * capacity * d,
                    mp + row * length, length, d, static_cast<float>(scale), op + (row * heads + head) * d, seen,
                    scores);
    }
  });
}

// q [heads, rows, d] fp32; keys, values [kv heads, capacity, d] (fp32 or bf16);
// visible bool [rows, length <= capacity]. Returns [rows, heads * d] fp32.
at::Tensor attend_rows(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                       const at::Tensor& visible, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.dtype() == at::kFloat && q.is_contiguous(), "q: fp32 [heads, rows, d]");
  TORCH_CHECK(keys.dim() == 3 && keys.sizes() == values.sizes() && keys.dtype() == values.dtype() &&
                  keys.is_contiguous() && values.is_contiguous() && keys.size(2) == q.size(2),
              "keys, values: [kv heads, capacity, d]");
  TORCH_CHECK(q.size(0) % keys.size(0) == 0, "heads must be a multiple of kv heads");
  TORCH_CHECK(visible.dim() == 2 && visible.dtype() == at::kBool && visible.is_contiguous() &&
                  visible.size(0) == q.size(1) && visible.size(1) <= keys.size(1),
              "visible: bool [rows, length]");
  at::Tensor out = at::empty({q.size(1), q.size(0) * q.size(2)}, q.options());
  if (keys.dtype() == at::kBFloat16) {
    attend_all<c10::BFloat16>(q, keys, values, visible, scale, out);
  } else {
    TORCH_CHECK(keys.dtype() == at::kFloat, "keys, values: fp32 or bf16");
    attend_all<float>(q, keys, values, visible, scale, out);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(specchat_cpu, m) {
  m.def("attend_rows(Tensor q, Tensor keys, Tensor values, Tensor visible, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(specchat_cpu, CPU, m) { m.impl("attend_rows", &attend_rows); }
