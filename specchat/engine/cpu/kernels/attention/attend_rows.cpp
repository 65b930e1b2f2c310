// Attention for the few query rows of a decode step or a verify pass, over the KV
// cache's buffers, each row over exactly the positions its mask lets it see.
//
// Why: torch's CPU sdpa (flash attention) costs ~200 us a call for one query over
// 300 positions on a 2-core EPYC, and a call over k + 1 rows costs k + 1 times that.
// A decode query is a dot product per position, a softmax and a weighted sum.
//
// The work is split into tasks of (row, kv head, chunk of the row's visible
// positions). A task computes every query head that shares the kv head, so each key
// and value is loaded and widened once for the whole group (one head per task is
// bound by instructions, not memory: 5 ms at 3,600 positions with the cache in L2). Chunks keep both cores busy on one row; their softmax
// pieces (max, sum, weighted values) are merged in chunk order.
//
// A row's result depends only on the keys and values it sees, in order: chunks are
// cut from the list of its visible positions, not from cache indices, and every
// sum has a fixed order. A verify pass gives bit for bit the logits single steps
// give, drafted alternatives included (their keys sit elsewhere in the cache).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "chunk.h"
#include "int8_keys.h"
#include "int8_values.h"
#include "../common/library.h"

namespace {

using specchat_kernels::kChunk;

// A row's chunks: one size, a multiple of 16 positions and at most kChunk, the last
// taking the rest; at least two from 64 positions on, so three kv heads split over
// two cores. Chunks of 256 and 44 at 300 positions had given one core nearly twice
// the other's work (4-row attention over 300 positions: 0.49 -> 0.45 ms a step on
// Zen 5). From the row's count alone, so the same in a verify pass as in its single
// step.
struct Chunking {
  int64_t count, size;
  explicit Chunking(int64_t visible) {
    count = std::max<int64_t>((visible + kChunk - 1) / kChunk, visible >= 64 ? 2 : 1);
    const int64_t even = (visible + count - 1) / count;
    size = std::min<int64_t>(kChunk, std::max<int64_t>(16, (even + 15) / 16 * 16));
    count = std::max<int64_t>(1, (visible + size - 1) / size);
  }
};

struct Shape {
  int64_t heads, rows, d, kv_heads, capacity, length, group;
};

// An int8 cache's per-position scales, [kv heads, capacity] each
struct CodeScales {
  const float* keys = nullptr;
  const float* values = nullptr;
};

// The chunk's pieces for each head of a group: [max, sum, acc[d]] per head, acc in
// the layout `arranged` gives (the vector path keeps bf16's even and odd elements apart)
template <typename T>
void attend_chunk(const float* q, const T* keys, const T* values, const int32_t* seen, int64_t count,
                  const Shape& s, float scale, float* pieces, std::vector<float>& scores) {
  scores.resize(s.group * kChunk);
#ifdef SPECCHAT_VECTOR_UNIT
  if (specchat_kernels::uses_vector_path(s.d)) {
    specchat_kernels::chunk_vectors<T>(q, keys, values, seen, count, s.d, s.group, scale, pieces, scores.data());
    return;
  }
#endif
  specchat_kernels::chunk_scalar<T>(q, keys, values, seen, count, s.d, s.group, scale, pieces, scores.data());
}

// The same over an int8 cache (int8_keys.h): heads, the group's queries as codes
void attend_code_chunk(const specchat_kernels::QueryCodes* heads, const uint8_t* keys, const int8_t* values,
                       CodeScales scales, const int32_t* seen, int64_t count, const Shape& s, float scale,
                       float* pieces, std::vector<float>& scores, std::vector<float>& spanned,
                       specchat_kernels::ValueWork& work) {
  scores.resize(s.group * kChunk);
  specchat_kernels::code_scores(keys, scales.keys, heads, seen, count, s.d, s.group, scale, kChunk, scores.data(),
                                spanned);
#ifdef SPECCHAT_VALUE_CODES
  if (specchat_kernels::weighs_value_codes(s.d)) {
    specchat_kernels::softmax_pieces(count, s.d, s.group, pieces, scores.data());
    specchat_kernels::value_codes(values, scales.values, seen, count, s.d, s.group, kChunk, pieces, scores.data(),
                                  work);
    return;
  }
#endif
#ifdef SPECCHAT_VECTOR_UNIT
  if (specchat_kernels::uses_vector_path(s.d)) {
    specchat_kernels::pieces_vectors<int8_t>(values, scales.values, seen, count, s.d, s.group, pieces, scores.data());
    return;
  }
#endif
  specchat_kernels::pieces_scalar<int8_t>(values, scales.values, seen, count, s.d, s.group, pieces, scores.data());
}

// T: the cache's keys (float, bf16, or uint8 for an int8 cache's key tiles)
template <typename T>
void attend_all(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& visible,
                double scale, CodeScales scales, at::Tensor& out) {
  constexpr bool kCodes = std::is_same<T, uint8_t>::value;
  using Values = typename std::conditional<kCodes, int8_t, T>::type;
  Shape s{q.size(0), q.size(1), q.size(2), keys.size(0), keys.size(1), visible.size(1), 0};
  s.group = s.heads / s.kv_heads;
  const float* qp = q.data_ptr<float>();
  const T* kp = static_cast<const T*>(keys.data_ptr());
  const Values* vp = static_cast<const Values*>(values.data_ptr());
  const bool* mp = visible.data_ptr<bool>();
  const bool vector_layout = specchat_kernels::uses_vector_path(s.d);

  // each row's visible positions, in ascending order
  std::vector<std::vector<int32_t>> seen(s.rows);
  std::vector<Chunking> cut;
  int64_t chunks = 1;
  for (int64_t row = 0; row < s.rows; ++row) {
    const bool* m = mp + row * s.length;
    if (std::find(m, m + s.length, false) == m + s.length) {  // a step's row sees everything: 0..length
      seen[row].resize(s.length);
      std::iota(seen[row].begin(), seen[row].end(), 0);
    } else {
      for (int64_t j = 0; j < s.length; ++j) {
        if (m[j]) seen[row].push_back(static_cast<int32_t>(j));
      }
    }
    cut.emplace_back(static_cast<int64_t>(seen[row].size()));
    chunks = std::max<int64_t>(chunks, cut.back().count);
  }
  // queries in the layout the chunks' loads use, one block per (row, head); as codes for an int8 cache
  std::vector<float> arranged(s.rows * s.heads * s.d);
  for (int64_t head = 0; head < s.heads; ++head) {
    for (int64_t row = 0; row < s.rows; ++row) {
      specchat_kernels::arrange<T>(qp + (head * s.rows + row) * s.d, arranged.data() + (row * s.heads + head) * s.d,
                                   s.d, vector_layout);
    }
  }
  const specchat_kernels::CodedQueries coded(arranged.data(), kCodes ? s.rows * s.heads : 0, s.d);
  const int64_t piece = 2 + s.d;
  std::vector<float> pieces(s.kv_heads * chunks * s.rows * s.group * piece);
  // rows innermost: consecutive tasks on a thread read the same chunk of keys and values
  at::parallel_for(0, s.kv_heads * chunks * s.rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, spanned;
    specchat_kernels::ValueWork work;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task % s.rows, chunk = task / s.rows % chunks, kv = task / s.rows / chunks;
      const int64_t first = chunk * cut[row].size;
      const int64_t count = std::min<int64_t>(cut[row].size, static_cast<int64_t>(seen[row].size()) - first);
      if (count <= 0) continue;
      const int64_t head = row * s.heads + kv * s.group, at = kv * s.capacity * s.d;
      float* own = pieces.data() + task * s.group * piece;
      if constexpr (kCodes) {
        const CodeScales kv_scales{scales.keys + kv * s.capacity, scales.values + kv * s.capacity};
        attend_code_chunk(coded.heads.data() + head, kp + at, vp + at, kv_scales, seen[row].data() + first, count, s,
                          static_cast<float>(scale), own, scores, spanned, work);
      } else {
        attend_chunk<T>(arranged.data() + head * s.d, kp + at, vp + at, seen[row].data() + first, count, s,
                        static_cast<float>(scale), own, scores);
      }
    }
  });
  float* op = out.data_ptr<float>();
  std::vector<float> merged(s.d);
  for (int64_t row = 0; row < s.rows; ++row) {
    const int64_t used = cut[row].count;
    for (int64_t head = 0; head < s.heads; ++head) {
      const int64_t kv = head / s.group, member = head % s.group;
      auto at = [&](int64_t chunk) {
        return pieces.data() + (((kv * chunks + chunk) * s.rows + row) * s.group + member) * piece;
      };
      specchat_kernels::merge(at, used, s.d, merged.data());
      specchat_kernels::unarrange<Values>(merged.data(), op + (row * s.heads + head) * s.d, s.d, vector_layout);
    }
  }
}

// q [heads, rows, d] fp32; keys, values [kv heads, capacity, d]: fp32, bf16, or an
// int8 cache (keys uint8 in tiles, values int8, key_scales and value_scales [kv
// heads, capacity] fp32: cpu/int8_kv.py); visible bool [rows, length <= capacity].
// Returns [rows, heads * d] fp32.
at::Tensor attend_rows(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                       const at::Tensor& visible, double scale, const c10::optional<at::Tensor>& key_scales,
                       const c10::optional<at::Tensor>& value_scales) {
  TORCH_CHECK(q.dim() == 3 && q.dtype() == at::kFloat && q.is_contiguous(), "q: fp32 [heads, rows, d]");
  TORCH_CHECK(keys.dim() == 3 && keys.sizes() == values.sizes() && keys.is_contiguous() && values.is_contiguous() &&
                  keys.size(2) == q.size(2),
              "keys, values: [kv heads, capacity, d]");
  TORCH_CHECK(q.size(0) % keys.size(0) == 0, "heads must be a multiple of kv heads");
  TORCH_CHECK(visible.dim() == 2 && visible.dtype() == at::kBool && visible.is_contiguous() &&
                  visible.size(0) == q.size(1) && visible.size(1) <= keys.size(1),
              "visible: bool [rows, length]");
  at::Tensor out = at::empty({q.size(1), q.size(0) * q.size(2)}, q.options());
  if (keys.dtype() == at::kByte) {
    TORCH_CHECK(values.dtype() == at::kChar && key_scales.has_value() && value_scales.has_value(),
                "an int8 cache: uint8 key tiles, int8 values and their scales");
    TORCH_CHECK(keys.size(1) % specchat_kernels::kTile == 0 && keys.size(2) % specchat_kernels::kBlock == 0,
                "an int8 cache: capacity a multiple of 16, head size of 32");
    for (const at::Tensor& t : {*key_scales, *value_scales}) {
      TORCH_CHECK(t.dtype() == at::kFloat && t.is_contiguous() && t.dim() == 2 && t.size(0) == keys.size(0) &&
                      t.size(1) == keys.size(1),
                  "key_scales, value_scales: fp32 [kv heads, capacity]");
    }
    attend_all<uint8_t>(q, keys, values, visible, scale, {key_scales->data_ptr<float>(), value_scales->data_ptr<float>()},
                        out);
    return out;
  }
  TORCH_CHECK(keys.dtype() == values.dtype(), "keys, values: one dtype");
  if (keys.dtype() == at::kBFloat16) {
    attend_all<c10::BFloat16>(q, keys, values, visible, scale, {}, out);
  } else {
    TORCH_CHECK(keys.dtype() == at::kFloat, "keys, values: fp32, bf16, or an int8 cache");
    attend_all<float>(q, keys, values, visible, scale, {}, out);
  }
  return out;
}

}  // namespace

SPECCHAT_FRAGMENT(SPECCHAT_LIBRARY, m) {
  m.def("attend_rows(Tensor q, Tensor keys, Tensor values, Tensor visible, float scale, Tensor? key_scales=None, "
        "Tensor? value_scales=None) -> Tensor");
}

SPECCHAT_IMPL(SPECCHAT_LIBRARY, CPU, m) { m.impl("attend_rows", &attend_rows); }
