// The vector unit the attention kernel is written against: AVX-512 (16 lanes) or
// AVX2 with FMA (8 lanes), whichever -march=native gives; `VectorUnit` names it, and
// SPECCHAT_VECTOR_UNIT and kHasVectorUnit say whether there is one (else the scalar
// path runs).
//
// Every operation has one fixed order of sums, so a result depends on its inputs only.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define SPECCHAT_VECTOR_UNIT 1
#include <immintrin.h>
#endif

namespace specchat_kernels {

#if defined(__AVX512F__)
struct VectorUnit {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float v) { return _mm512_set1_ps(v); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static float reduce_add(Reg v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(Reg v) { return _mm512_reduce_max_ps(v); }
  // lanes n and up replaced by fill
  static Reg first_or(Reg v, int64_t n, Reg fill) {
    return _mm512_mask_mov_ps(fill, static_cast<__mmask16>((1u << n) - 1), v);
  }
  // 2 * kLanes elements: fp32 in order, bf16 as their even and odd elements
  static void load_pair(const float* p, Reg& lo, Reg& hi) {
    lo = _mm512_loadu_ps(p);
    hi = _mm512_loadu_ps(p + 16);
  }
  static void load_pair(const c10::BFloat16* p, Reg& lo, Reg& hi) {
    const __m512i raw = _mm512_loadu_si512(p);
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
    hi = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  static void load_pair(const int8_t* p, Reg& lo, Reg& hi) {  // int8 codes, in order
    lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  }
  // out[i] = the sum of a[i]'s lanes, for kLanes vectors, by the same tree for every i
  static Reg sum_each(const Reg* a) {
    Reg pairs[8], quads[4], halves[2];
    for (int i = 0; i < 8; ++i)
      pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; ++i)
      quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0x44),
                               _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], 0xEE));
    for (int i = 0; i < 2; ++i)
      halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0x88),
                                _mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], 0x88),
                         _mm512_shuffle_f32x4(halves[0], halves[1], 0xDD));
  }
  static Reg div(Reg a, Reg b) { return _mm512_div_ps(a, b); }
  static Reg minus_abs(Reg v) { return _mm512_or_ps(v, set1(-0.f)); }  // -|v|
  static Reg where_nonnegative(Reg v, Reg yes, Reg no) {  // yes where v >= 0, else no
    return _mm512_mask_mov_ps(no, _mm512_cmp_ps_mask(v, zero(), _CMP_GE_OQ), yes);
  }
  // kLanes elements as fp32, in order
  static Reg widened(const float* p) { return _mm512_loadu_ps(p); }
  static Reg widened(const c10::BFloat16* p) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  static Reg exp2_int(Reg n) { return _mm512_scalef_ps(set1(1.f), n); }  // 2^n, n an integer
  static Reg round(Reg v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
};
constexpr bool kHasVectorUnit = true;

#elif defined(__AVX2__) && defined(__FMA__)
struct VectorUnit {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float v) { return _mm256_set1_ps(v); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce_add(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static float reduce_max(Reg v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  static Reg first_or(Reg v, int64_t n, Reg fill) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane));
    return _mm256_blendv_ps(fill, v, keep);
  }
  static void load_pair(const float* p, Reg& lo, Reg& hi) {
    lo = _mm256_loadu_ps(p);
    hi = _mm256_loadu_ps(p + 8);
  }
  static void load_pair(const c10::BFloat16* p, Reg& lo, Reg& hi) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
    hi = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  static void load_pair(const int8_t* p, Reg& lo, Reg& hi) {
    lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8))));
  }
  static Reg sum_each(const Reg* a) {
    const __m256 low = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 high = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(low, high, 0x20), _mm256_permute2f128_ps(low, high, 0x31));
  }
  static Reg div(Reg a, Reg b) { return _mm256_div_ps(a, b); }
  static Reg minus_abs(Reg v) { return _mm256_or_ps(v, set1(-0.f)); }
  static Reg where_nonnegative(Reg v, Reg yes, Reg no) {
    return _mm256_blendv_ps(no, yes, _mm256_cmp_ps(v, zero(), _CMP_GE_OQ));
  }
  static Reg widened(const float* p) { return _mm256_loadu_ps(p); }
  static Reg widened(const c10::BFloat16* p) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  }
  static Reg exp2_int(Reg n) {  // n >= -126 here (exp clamps its argument)
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(bits);
  }
  static Reg round(Reg v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
};
constexpr bool kHasVectorUnit = true;

#else
constexpr bool kHasVectorUnit = false;
#endif

#ifdef SPECCHAT_VECTOR_UNIT
// e^x for x <= 0: 2^n times a polynomial on [-ln2/2, ln2/2]; relative error ~2e-7
inline VectorUnit::Reg exp_nonpositive(VectorUnit::Reg x) {
  using V = VectorUnit;
  x = V::max(x, V::set1(-87.f));
  const V::Reg n = V::round(V::mul(x, V::set1(1.44269504f)));
  V::Reg r = V::fma(n, V::set1(-0.693145751953125f), x);
  r = V::fma(n, V::set1(-1.428606765330187e-06f), r);
  V::Reg p = V::set1(1.f / 720.f);
  p = V::fma(p, r, V::set1(1.f / 120.f));
  p = V::fma(p, r, V::set1(1.f / 24.f));
  p = V::fma(p, r, V::set1(1.f / 6.f));
  p = V::fma(p, r, V::set1(0.5f));
  p = V::fma(p, r, V::set1(1.f));
  p = V::fma(p, r, V::set1(1.f));
  return V::mul(p, V::exp2_int(n));
}

// silu(g) = g * sigmoid(g), sigmoid from t = e^-|g| <= 1: 1 / (1 + t) for g >= 0, else
// t / (1 + t) (no e^x of a large x to overflow)
inline VectorUnit::Reg silu(VectorUnit::Reg g) {
  using V = VectorUnit;
  const V::Reg t = exp_nonpositive(V::minus_abs(g));
  const V::Reg one = V::set1(1.f);
  return V::mul(g, V::div(V::where_nonnegative(g, one, t), V::add(one, t)));
}
#endif

}  // namespace specchat_kernels
