// A pass through every layer of a CPU decoder whose products are all block formats
// (Q4_1, Q8_0): the operators CpuLayer.forward's kernel path calls, called here in
// the same order for each layer, so the same bits.
//
// Why: from Python each of a layer's eleven operator calls (and the cache views
// they take) cost 1-2 us of interpreter and dispatch beside its work: ~0.5 ms of a
// 2.9 ms step of the embedded target on a 2-core EPYC, paid again by every verify
// pass. Here the dispatcher is called from C++, one Python call a pass.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <vector>

#include "../common/library.h"

namespace {

using Optional = c10::optional<at::Tensor>;

// The operators' signatures, as the other kernels register them
using RmsNorm = at::Tensor(const at::Tensor&, const at::Tensor&, double, bool);
using RotateIntoCache = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor, at::Tensor,
                                   int64_t, int64_t, const Optional&, const Optional&, const Optional&);
using AttendRows = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                              const Optional&, const Optional&);
using SiluMul = at::Tensor(const at::Tensor&, bool);
using Product = at::Tensor(const at::Tensor&, const at::Tensor&);

struct Operators {
  c10::TypedOperatorHandle<RmsNorm> rms_norm;
  c10::TypedOperatorHandle<RotateIntoCache> rotate_into_cache;
  c10::TypedOperatorHandle<AttendRows> attend_rows;
  c10::TypedOperatorHandle<SiluMul> silu_mul;
  c10::TypedOperatorHandle<Product> q4_1_mm, q8_0_mm;

  static const Operators& get() {
    static const Operators ops = [] {
      auto& d = c10::Dispatcher::singleton();
      auto find = [&](const char* name) { return d.findSchemaOrThrow(name, ""); };
      return Operators{find(SPECCHAT_OPERATOR("rms_norm")).typed<RmsNorm>(),
                       find(SPECCHAT_OPERATOR("rotate_into_cache")).typed<RotateIntoCache>(),
                       find(SPECCHAT_OPERATOR("attend_rows")).typed<AttendRows>(),
                       find(SPECCHAT_OPERATOR("silu_mul")).typed<SiluMul>(),
                       find(SPECCHAT_OPERATOR("q4_1_mm")).typed<Product>(),
                       find(SPECCHAT_OPERATOR("q8_0_mm")).typed<Product>()};
    }();
    return ops;
  }
};

constexpr int64_t kProducts = 4;  // a layer's: qkv, out, gate_up, down
constexpr int64_t kQ8_0 = 1;      // kinds: 0 Q4_1, 1 Q8_0

// x [rows, hidden] fp32 through every layer; per layer: norms (2), eps (2), products
// and their kinds (4: qkv, out, gate_up, down), its cache's buffers [1, kv heads,
// capacity, d] and, for an int8 cache, their scales and the key channel factors
// (else empty lists). The rows' keys and values go to the caches at `start`.
at::Tensor fused_layers(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& visible,
                       int64_t start, int64_t heads, double scale, at::TensorList norms, at::ArrayRef<double> eps,
                       at::TensorList products, at::IntArrayRef kinds, at::TensorList keys, at::TensorList values,
                       at::TensorList key_scales, at::TensorList value_scales, at::TensorList channels) {
  const int64_t layers = static_cast<int64_t>(keys.size());
  const bool coded = !key_scales.empty();
  TORCH_CHECK(static_cast<int64_t>(values.size()) == layers && static_cast<int64_t>(norms.size()) == 2 * layers &&
                  static_cast<int64_t>(eps.size()) == 2 * layers &&
                  static_cast<int64_t>(products.size()) == kProducts * layers &&
                  static_cast<int64_t>(kinds.size()) == kProducts * layers,
              "fused_layers: per layer 2 norms and eps, 4 products and kinds, keys and values");
  TORCH_CHECK(!coded || (static_cast<int64_t>(key_scales.size()) == layers &&
                         static_cast<int64_t>(value_scales.size()) == layers &&
                         static_cast<int64_t>(channels.size()) == layers),
              "fused_layers: an int8 cache's scales and channel factors for every layer");
  const Operators& ops = Operators::get();
  auto product = [&](int64_t layer, int64_t which, const at::Tensor& input) {
    const int64_t at = layer * kProducts + which;
    return kinds[at] == kQ8_0 ? ops.q8_0_mm.call(input, products[at]) : ops.q4_1_mm.call(input, products[at]);
  };
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor k = keys[l].select(0, 0), v = values[l].select(0, 0);
    const Optional ks = coded ? Optional(key_scales[l].select(0, 0)) : Optional();
    const Optional vs = coded ? Optional(value_scales[l].select(0, 0)) : Optional();
    const Optional factors = coded ? Optional(channels[l]) : Optional();
    const at::Tensor qkv = product(l, 0, ops.rms_norm.call(x, norms[2 * l], eps[2 * l], false));
    const at::Tensor queries = ops.rotate_into_cache.call(qkv, cos, sin, k, v, start, heads, ks, vs, factors);
    x = x + product(l, 1, ops.attend_rows.call(queries, k, v, visible, scale, ks, vs));
    const at::Tensor gate_up = product(l, 2, ops.rms_norm.call(x, norms[2 * l + 1], eps[2 * l + 1], false));
    x = x + product(l, 3, ops.silu_mul.call(gate_up, false));
  }
  return x;
}

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) {
  m.def("fused_layers(Tensor x, Tensor cos, Tensor sin, Tensor visible, int start, int heads, float scale, "
        "Tensor[] norms, float[] eps, Tensor[] products, int[] kinds, Tensor(a!)[] keys, Tensor(b!)[] values, "
        "Tensor(c!)[] key_scales, Tensor(d!)[] value_scales, Tensor[] channels) -> Tensor");
}

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) { m.impl("fused_layers", &fused_layers); }
