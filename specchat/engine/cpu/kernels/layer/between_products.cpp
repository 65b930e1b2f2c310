// The small steps between a CPU layer's products, for the few rows of a step or a
// verify pass: RMSNorm; the rotation of queries and keys with the cache write; and
// silu(gate) * up.
//
// Why: in torch each is a chain of small operators (RMSNorm: square, mean, add,
// rsqrt, two products; the rotation: slices, a negation, a concatenation, two
// products, a sum, casts and the cache's copies), each paying ~2-10 us of dispatch
// for a row of 576 values; a step of the embedded target made ~40 of them a layer,
// about half of a 12 ms step on a 2-core EPYC. Each row is computed alone, by the
// same instructions whatever the other rows are, so a verify pass stays bit for bit
// the single steps it replaces.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../common/library.h"
#include "../common/scalar.h"
#include "../common/vector_unit.h"

namespace {

using specchat_kernels::dot;
using specchat_kernels::widen;

template <typename T>
void norm_row(const float* x, const float* weight, int64_t n, float eps, T* out) {
  const float inverse = 1.f / std::sqrt(dot(x, x, n) / static_cast<float>(n) + eps);
  // to bf16 (round to nearest even) as torch's cast of the fp32 result would
  for (int64_t e = 0; e < n; ++e) out[e] = static_cast<T>(x[e] * inverse * weight[e]);
}

// y = x / sqrt(mean(x^2) + eps) * weight, per row. x [rows, n] fp32, weight [n]
// fp32; y fp32, or bf16 for a product that takes bf16 inputs (one cast fewer).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool bf16) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == at::kFloat, "x: fp32 [rows, n]");
  TORCH_CHECK(weight.dim() == 1 && weight.dtype() == at::kFloat && weight.size(0) == x.size(1) &&
                  weight.is_contiguous(),
              "weight: fp32 [n]");
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty(input.sizes(), input.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  const int64_t rows = input.size(0), n = input.size(1);
  const float* xp = input.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float e = static_cast<float>(eps);
  // A long prefill is spread over the threads; a pass's few rows are not worth waking them for.
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (bf16) {
        norm_row(xp + r * n, wp, n, e, out.data_ptr<c10::BFloat16>() + r * n);
      } else {
        norm_row(xp + r * n, wp, n, e, out.data_ptr<float>() + r * n);
      }
    }
  });
  return out;
}

// x * cos + rotate_half(x) * sin, as transformers' Llama computes it in fp32
template <typename T>
void rotate(const T* x, const float* cos, const float* sin, int64_t d, float* out) {
  const int64_t half = d / 2;
  for (int64_t e = 0; e < half; ++e) out[e] = widen(x[e]) * cos[e] + -widen(x[e + half]) * sin[e];
  for (int64_t e = half; e < d; ++e) out[e] = widen(x[e]) * cos[e] + widen(x[e - half]) * sin[e];
}

// An int8 cache's row: codes round(x / scale), scale = max |x| / 127 (as
// kv_codes.to_codes rounds a prefill's rows: to nearest, ties to even)
void to_codes(const float* x, int64_t d, int8_t* codes, float* scale) {
  float largest = 0.f;
  for (int64_t e = 0; e < d; ++e) largest = std::max(largest, std::fabs(x[e]));
  *scale = largest / 127.f;
  for (int64_t e = 0; e < d; ++e) {
    codes[e] = static_cast<int8_t>(largest > 0.f ? std::nearbyint(x[e] / *scale) : 0.f);
  }
}

// An int8 cache's extras: per-position scales [kv heads, capacity], and the layer's
// channel factors [kv heads, d] (keys are stored divided by them, queries multiplied)
struct CodeScales {
  float* keys = nullptr;
  float* values = nullptr;
  const float* channels = nullptr;
};

template <typename T, typename C>
void rotate_all(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& keys,
                at::Tensor& values, CodeScales codes, int64_t start, int64_t heads, at::Tensor& queries) {
  const int64_t t = qkv.size(0), kv_heads = keys.size(0), capacity = keys.size(1), d = keys.size(2);
  const int64_t width = (heads + 2 * kv_heads) * d;
  const T* xp = qkv.data_ptr<T>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  C* kp = static_cast<C*>(keys.data_ptr());  // an int8 cache's: uint8 key tiles (cpu/int8_kv.py)
  C* vp = static_cast<C*>(values.data_ptr());
  float* qp = queries.data_ptr<float>();
  std::vector<float> rotated(d), widened(d);
  std::vector<int8_t> key_codes(d);
  const int64_t group = heads / kv_heads;
  for (int64_t r = 0; r < t; ++r) {
    const T* row = xp + r * width;
    const float* c = cp + r * d;
    const float* s = sp + r * d;
    for (int64_t h = 0; h < heads; ++h) {
      float* query = qp + (h * t + r) * d;
      rotate(row + h * d, c, s, d, query);
      if constexpr (std::is_same<C, int8_t>::value) {
        for (int64_t e = 0; e < d; ++e) query[e] *= codes.channels[h / group * d + e];
      }
    }
    for (int64_t h = 0; h < kv_heads; ++h) {
      rotate(row + (heads + h) * d, c, s, d, rotated.data());
      const int64_t at = h * capacity + start + r;
      C* key = kp + at * d;
      C* value = vp + at * d;
      const T* v = row + (heads + kv_heads + h) * d;
      if constexpr (std::is_same<C, int8_t>::value) {
        for (int64_t e = 0; e < d; ++e) {
          rotated[e] /= codes.channels[h * d + e];
          widened[e] = widen(v[e]);
        }
        to_codes(rotated.data(), d, key_codes.data(), codes.keys + at);
        to_codes(widened.data(), d, value, codes.values + at);
        // into the tile of 16 positions: [d / 4][16][4], each code + 128
        uint8_t* tile = reinterpret_cast<uint8_t*>(kp) + (h * capacity + (start + r) / 16 * 16) * d + (start + r) % 16 * 4;
        for (int64_t e = 0; e < d; ++e) tile[e / 4 * 64 + e % 4] = static_cast<uint8_t>(key_codes[e] + 128);
      } else {
        for (int64_t e = 0; e < d; ++e) {
          key[e] = static_cast<C>(rotated[e]);  // to bf16: round to nearest even, as torch's cast
          value[e] = static_cast<C>(widen(v[e]));
        }
      }
    }
  }
}

// qkv [rows, (heads + 2 kv heads) * d] (bf16 or fp32, a fused product's output);
// cos, sin [rows, d] fp32; keys, values: a layer's cache buffers [kv heads, capacity,
// d] (fp32, bf16, or int8 codes with their scales and the layer's channel factors),
// written at positions start..start + rows. Returns the rotated queries [heads, rows,
// d] fp32 (times the channel factors for an int8 cache).
at::Tensor rotate_into_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor keys,
                             at::Tensor values, int64_t start, int64_t heads,
                             const c10::optional<at::Tensor>& key_scales, const c10::optional<at::Tensor>& value_scales,
                             const c10::optional<at::Tensor>& channels) {
  TORCH_CHECK(keys.dim() == 3 && keys.sizes() == values.sizes() &&
                  keys.is_contiguous() && values.is_contiguous(),
              "keys, values: [kv heads, capacity, d]");
  const int64_t d = keys.size(2), t = qkv.size(0);
  TORCH_CHECK(d % 2 == 0, "head size must be even");
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous() && qkv.size(1) == (heads + 2 * keys.size(0)) * d,
              "qkv: [rows, (heads + 2 kv heads) * d]");
  TORCH_CHECK(cos.dtype() == at::kFloat && sin.dtype() == at::kFloat && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.numel() == t * d && sin.numel() == t * d,
              "cos, sin: fp32 [rows, d]");
  TORCH_CHECK(start >= 0 && start + t <= keys.size(1), "the rows must fit the buffers");
  at::Tensor queries = at::empty({heads, t, d}, qkv.options().dtype(at::kFloat));
  const bool bf16_in = qkv.dtype() == at::kBFloat16;
  TORCH_CHECK(bf16_in || qkv.dtype() == at::kFloat, "qkv: bf16 or fp32");
  CodeScales codes;
  auto run = [&](auto cached) {
    using C = decltype(cached);
    if (bf16_in) {
      rotate_all<c10::BFloat16, C>(qkv, cos, sin, keys, values, codes, start, heads, queries);
    } else {
      rotate_all<float, C>(qkv, cos, sin, keys, values, codes, start, heads, queries);
    }
  };
  if (keys.dtype() == at::kByte) {
    TORCH_CHECK(values.dtype() == at::kChar && key_scales.has_value() && value_scales.has_value() &&
                    channels.has_value() && keys.size(1) % 16 == 0 && d % 4 == 0,
                "an int8 cache: uint8 key tiles, int8 values, their scales and channel factors");
    for (const at::Tensor& t : {*key_scales, *value_scales}) {
      TORCH_CHECK(t.dtype() == at::kFloat && t.is_contiguous() && t.dim() == 2 && t.size(0) == keys.size(0) &&
                      t.size(1) == keys.size(1),
                  "key_scales, value_scales: fp32 [kv heads, capacity]");
    }
    TORCH_CHECK(channels->dtype() == at::kFloat && channels->is_contiguous() && channels->numel() == keys.size(0) * d,
                "channels: fp32 [kv heads, d]");
    TORCH_CHECK(heads % keys.size(0) == 0, "heads must be a multiple of kv heads");
    codes = {key_scales->data_ptr<float>(), value_scales->data_ptr<float>(), channels->data_ptr<float>()};
    run(int8_t{});
  } else if (keys.dtype() == at::kBFloat16 && values.dtype() == keys.dtype()) {
    run(c10::BFloat16{});
  } else {
    TORCH_CHECK(keys.dtype() == at::kFloat && values.dtype() == keys.dtype(), "keys, values: bf16, fp32 or int8");
    run(float{});
  }
  return queries;
}

// A row's silu(gate) * up in fp32: by the vector unit where there is one (std::exp
// was ~6 us a call, 0.2 ms a step), the scalar formula for what is left over
template <typename T>
void silu_mul_row(const T* gate, const T* up, int64_t inner, float* out) {
  int64_t e = 0;
#ifdef SPECCHAT_VECTOR_UNIT
  using V = specchat_kernels::VectorUnit;
  for (; e + V::kLanes <= inner; e += V::kLanes)
    V::store(out + e, V::mul(specchat_kernels::silu(V::widened(gate + e)), V::widened(up + e)));
#endif
  for (; e < inner; ++e) {
    const float g = widen(gate[e]);
    out[e] = g / (1.f + std::exp(-g)) * widen(up[e]);
  }
}

template <typename T, typename O>
void silu_mul_all(const T* x, int64_t rows, int64_t inner, O* out) {
  std::vector<float> row(inner);
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = x + r * 2 * inner;
    silu_mul_row(gate, gate + inner, inner, row.data());
    for (int64_t e = 0; e < inner; ++e) out[r * inner + e] = static_cast<O>(row[e]);  // bf16: as torch casts
  }
}

// gate_up [rows, 2 inner] (bf16 or fp32: a fused gate and up product) -> silu(gate) * up,
// fp32, or bf16 for a product that takes bf16 inputs
at::Tensor silu_mul(const at::Tensor& gate_up, bool bf16) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "gate_up: [rows, 2 inner]");
  TORCH_CHECK(gate_up.dtype() == at::kBFloat16 || gate_up.dtype() == at::kFloat, "gate_up: bf16 or fp32");
  const int64_t rows = gate_up.size(0), inner = gate_up.size(1) / 2;
  at::Tensor out = at::empty({rows, inner}, gate_up.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  const bool bf16_in = gate_up.dtype() == at::kBFloat16;
  if (bf16_in && bf16) {
    silu_mul_all(gate_up.data_ptr<c10::BFloat16>(), rows, inner, out.data_ptr<c10::BFloat16>());
  } else if (bf16_in) {
    silu_mul_all(gate_up.data_ptr<c10::BFloat16>(), rows, inner, out.data_ptr<float>());
  } else if (bf16) {
    silu_mul_all(gate_up.data_ptr<float>(), rows, inner, out.data_ptr<c10::BFloat16>());
  } else {
    silu_mul_all(gate_up.data_ptr<float>(), rows, inner, out.data_ptr<float>());
  }
  return out;
}

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps, bool bf16) -> Tensor");
  m.def("rotate_into_cache(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) keys, Tensor(b!) values, int start, "
        "int heads, Tensor(c!)? key_scales=None, Tensor(d!)? value_scales=None, Tensor? channels=None) -> Tensor");
  m.def("silu_mul(Tensor gate_up, bool bf16) -> Tensor");
}

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("rotate_into_cache", &rotate_into_cache);
  m.impl("silu_mul", &silu_mul);
}
