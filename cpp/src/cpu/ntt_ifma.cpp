// AVX-512 IFMA NTT for moduli below 2^50 (52-bit Shoup multiplication with vpmadd52luq/huq).
// Compiled with -mavx512f -mavx512ifma; called only when cpuid reports IFMA (see modarith.cpp).
#include "medtwin/ntt.h"

#if defined(MEDTWIN_HAVE_IFMA)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace medtwin {
namespace ifma {
namespace {
// No namespace-scope AVX-512 constants: this file's code must not run on CPUs without IFMA.
#define kMask52 _mm512_set1_epi64((1LL << 52) - 1)
#define kZero _mm512_setzero_si512()

// a * w mod q in [0, 2q) for a < 2^52, w < q < 2^50, wp = floor(w * 2^52 / q):
// r = a w - hi q with hi = floor(a wp / 2^52); computed mod 2^52 as lo52(a w) + lo52(hi (2^52 - q)).
// mul_lazy without its final mask: congruent to a w mod q in [0, 2q) modulo 2^52 only (bit 52
// may hold a carry). For the lazy forward butterflies (Mul52L), whose additions and subtractions
// need only be right modulo 2^52: their true values stay below 2^52, and the 52-bit products
// read the low 52 bits of their operands. reduce_full52 masks once at the end.
inline __m512i mul_lazy_unmasked(__m512i a, __m512i w, __m512i wp, __m512i q) {
  const __m512i qn = _mm512_sub_epi64(_mm512_set1_epi64(1LL << 52), q);
  __m512i hi = _mm512_madd52hi_epu64(kZero, a, wp);
  return _mm512_madd52lo_epu64(_mm512_madd52lo_epu64(kZero, a, w), hi, qn);
}
inline __m512i mul_lazy(__m512i a, __m512i w, __m512i wp, __m512i q) {
  return _mm512_and_si512(mul_lazy_unmasked(a, w, wp, q), kMask52);
}
inline __m512i csub(__m512i x, __m512i m) {  // x >= m ? x - m : x
  return _mm512_min_epu64(x, _mm512_sub_epi64(x, m));
}
// Lane tables for the last three stages (t = 4, 2, 1): 16 elements (two vectors) per step.
struct SmallStage {
  __m512i ix, iy;      // element index (0..15) of lane l's x and y
  __m512i back0, back1;  // where output element e (0..7, 8..15) is found in (X, Y)
  __m512i wl;          // lane -> twiddle offset l / t
};
SmallStage make_stage(unsigned t) {
  alignas(64) long long ix[8], iy[8], b0[8], b1[8], wl[8];
  long long where[16];
  for (unsigned l = 0; l < 8; ++l) {
    unsigned blk = l / t, off = l % t;
    ix[l] = blk * 2 * t + off;
    iy[l] = ix[l] + t;
    wl[l] = blk;
    where[ix[l]] = l;
    where[iy[l]] = 8 + l;
  }
  for (unsigned e = 0; e < 8; ++e) { b0[e] = where[e]; b1[e] = where[8 + e]; }
  SmallStage s;
  s.ix = _mm512_load_si512(ix); s.iy = _mm512_load_si512(iy);
  s.back0 = _mm512_load_si512(b0); s.back1 = _mm512_load_si512(b1);
  s.wl = _mm512_load_si512(wl);
  return s;
}
// The three small stages merged in registers: (v0, v1) -> layout of stage A (in_x, in_y), between
// stages one permute pair from layout A to layout B, and back to element order at the end.
struct Merged3 {
  __m512i in_x, in_y, ab_x, ab_y, bc_x, bc_y, out0, out1;
  __m512i w4, w2;  // lane -> twiddle offset for t = 4 and t = 2
};
Merged3 make_merged(unsigned ta, unsigned tb, unsigned tc) {
  auto lay = [](unsigned t, long long* ix, long long* iy, long long* where) {
    for (unsigned l = 0; l < 8; ++l) {
      unsigned blk = l / t, off = l % t;
      ix[l] = blk * 2 * t + off;
      iy[l] = ix[l] + t;
      where[ix[l]] = l;
      where[iy[l]] = 8 + l;
    }
  };
  long long ixa[8], iya[8], wa[16], ixb[8], iyb[8], wb[16], ixc[8], iyc[8], wc[16];
  lay(ta, ixa, iya, wa); lay(tb, ixb, iyb, wb); lay(tc, ixc, iyc, wc);
  alignas(64) long long abx[8], aby[8], bcx[8], bcy[8], o0[8], o1[8], w4[8], w2[8];
  for (unsigned l = 0; l < 8; ++l) {
    abx[l] = wa[ixb[l]]; aby[l] = wa[iyb[l]];
    bcx[l] = wb[ixc[l]]; bcy[l] = wb[iyc[l]];
    o0[l] = wc[l]; o1[l] = wc[8 + l];
    w4[l] = l / 4; w2[l] = l / 2;
  }
  alignas(64) long long ina[8], inb[8];
  for (unsigned l = 0; l < 8; ++l) { ina[l] = ixa[l]; inb[l] = iya[l]; }
  Merged3 r;
  r.in_x = _mm512_load_si512(ina); r.in_y = _mm512_load_si512(inb);
  r.ab_x = _mm512_load_si512(abx); r.ab_y = _mm512_load_si512(aby);
  r.bc_x = _mm512_load_si512(bcx); r.bc_y = _mm512_load_si512(bcy);
  r.out0 = _mm512_load_si512(o0); r.out1 = _mm512_load_si512(o1);
  r.w4 = _mm512_load_si512(w4); r.w2 = _mm512_load_si512(w2);
  return r;
}
const Merged3& merged_fwd() {
  static const Merged3 m = make_merged(4, 2, 1);  // first IFMA call only
  return m;
}
const Merged3& merged_inv() {
  static const Merged3 m = make_merged(1, 2, 4);
  return m;
}
const SmallStage& stage(std::size_t t) {
  static const SmallStage st[3] = {make_stage(4), make_stage(2), make_stage(1)};  // first IFMA call only
  return st[t == 4 ? 0 : (t == 2 ? 1 : 2)];
}
}  // namespace

namespace {
constexpr std::size_t kBlock = 2048;  // elements per L1-resident block (16 KiB)

// a * w mod q in [0, 2q) for 64-bit lanes (q < 2^62), wp = floor(w 2^64 / q) (AVX-512F/DQ only):
// the high word of a * wp is assembled from four 32x32-bit products.
inline __m512i mul_lazy64(__m512i a, __m512i w, __m512i wp, __m512i q) {
  const __m512i m32 = _mm512_set1_epi64(0xffffffffLL);
  __m512i ah = _mm512_srli_epi64(a, 32), bh = _mm512_srli_epi64(wp, 32);
  __m512i ll = _mm512_mul_epu32(a, wp), lh = _mm512_mul_epu32(a, bh);
  __m512i hl = _mm512_mul_epu32(ah, wp), hh = _mm512_mul_epu32(ah, bh);
  __m512i mid = _mm512_add_epi64(_mm512_add_epi64(_mm512_srli_epi64(ll, 32), _mm512_and_si512(lh, m32)),
                                 _mm512_and_si512(hl, m32));
  __m512i hi = _mm512_add_epi64(_mm512_add_epi64(hh, _mm512_srli_epi64(lh, 32)),
                                _mm512_add_epi64(_mm512_srli_epi64(hl, 32), _mm512_srli_epi64(mid, 32)));
  return _mm512_sub_epi64(_mm512_mullo_epi64(a, w), _mm512_mullo_epi64(hi, q));
}
// The same with the high word approximated (the carry out of the middle partial products is
// dropped, so hi is low by at most 2): a * w mod q in [0, 4q). Used for q < 2^60 with lazy
// bounds doubled (values below 8q < 2^63).
inline __m512i mul_lazy64_approx(__m512i a, __m512i w, __m512i wp, __m512i q) {
  __m512i ah = _mm512_srli_epi64(a, 32), bh = _mm512_srli_epi64(wp, 32);
  __m512i lh = _mm512_mul_epu32(a, bh), hl = _mm512_mul_epu32(ah, wp), hh = _mm512_mul_epu32(ah, bh);
  __m512i hi = _mm512_add_epi64(hh, _mm512_add_epi64(_mm512_srli_epi64(lh, 32), _mm512_srli_epi64(hl, 32)));
  return _mm512_sub_epi64(_mm512_mullo_epi64(a, w), _mm512_mullo_epi64(hi, q));
}
// Each multiplier type: the product, its Shoup tables, and whether its output bound is 4q
// (wide) instead of 2q. The butterflies take "q2" = the output bound B: forward values stay
// below 2B, inverse values below B.
struct Mul52 {
  static constexpr bool wide = false, is52 = true, lazy = false;
  static __m512i mul(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy(a, w, wp, q); }
  static __m512i bfly(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy(a, w, wp, q); }
  static const u64* fw(const NTTTables& t) { return t.w52.data(); }
  static const u64* iw(const NTTTables& t) { return t.iw52.data(); }
};
struct Mul64 {
  static constexpr bool wide = false, is52 = false, lazy = false;
  static __m512i mul(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy64(a, w, wp, q); }
  static __m512i bfly(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy64(a, w, wp, q); }
  static const u64* fw(const NTTTables& t) { return t.wp.data(); }
  static const u64* iw(const NTTTables& t) { return t.iwp.data(); }
};
struct Mul64a {
  static constexpr bool wide = true, is52 = false, lazy = false;
  static __m512i mul(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy64_approx(a, w, wp, q); }
  static __m512i bfly(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy64_approx(a, w, wp, q); }
  static const u64* fw(const NTTTables& t) { return t.wp.data(); }
  static const u64* iw(const NTTTables& t) { return t.iwp.data(); }
};
// The forward transform with lazy butterflies for q < 2^46: the inputs of a butterfly are not
// reduced, so each stage adds at most 2q to the bound; from inputs below 4q, after log2(n) <= 17
// stages the values stay below (4 + 2 * 17) q < 2^52, the 52-bit products' limit, and one full
// reduction at the end brings them to [0, q). Saves two of the butterfly's nine operations.
// Its butterflies' products skip the 52-bit mask (mul_lazy_unmasked): the values between stages
// are right modulo 2^52 only, and reduce_full52 masks them at the end. One operation fewer per
// butterfly (six instead of seven): forward NTT at N = 2^16 in L2 106-110 -> 99-103 us.
struct Mul52L : Mul52 {
  static constexpr bool lazy = true;
  static __m512i bfly(__m512i a, __m512i w, __m512i wp, __m512i q) { return mul_lazy_unmasked(a, w, wp, q); }
};
inline bool lazy_forward_ok(u64 q, std::size_t n) {
  unsigned stages = 0;
  while ((std::size_t(1) << stages) < n) ++stages;
  return q < (u64(1) << 46) && static_cast<unsigned __int128>(4 + 2 * stages) * q < (static_cast<unsigned __int128>(1) << 52);
}
// A forward butterfly's input: reduced below 2B (B the output bound), or as it is when lazy.
template <class M>
inline __m512i fwd_in(__m512i x, __m512i q2) {
  if constexpr (M::lazy) return x;
  else return csub(x, q2);
}
// [0, q) for 52-bit products: x < 2^52 -> x - floor(x floor(2^52/q) / 2^52) q in [0, 2q) -> [0, q).
// hi q <= x < 2^52, so the 52-bit product hi q is exact. x may carry garbage in bits 52-63 (the
// unmasked lazy butterflies): the products read its low 52 bits, and the difference is masked.
inline __m512i reduce_full52(__m512i x, __m512i q, __m512i r52) {
  __m512i hi = _mm512_madd52hi_epu64(_mm512_setzero_si512(), x, r52);
  __m512i r = _mm512_sub_epi64(x, _mm512_madd52lo_epu64(_mm512_setzero_si512(), hi, q));
  return csub(_mm512_and_si512(r, kMask52), q);
}
// [0, B) -> [0, q) for the multiplier's output bound B (2q or 4q).
template <class M>
inline __m512i reduce_b(__m512i v, __m512i q) {
  if (M::wide) v = csub(v, _mm512_add_epi64(q, q));
  return csub(v, q);
}
template <class M>
inline __m512i bound_of(u64 q) { return _mm512_set1_epi64(static_cast<long long>(M::wide ? 4 * q : 2 * q)); }

// One forward stage (m groups of 2t) restricted to groups [i0, i1).
template <class M>
inline void fwd_stage(const NTTTables& tb, u64* a, std::size_t m, std::size_t t, std::size_t i0, std::size_t i1,
                      __m512i q, __m512i q2) {
  if (t >= 8) {
    for (std::size_t i = i0; i < i1; ++i) {
      const __m512i W = _mm512_set1_epi64(tb.w[m + i]), Wp = _mm512_set1_epi64(M::fw(tb)[m + i]);
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 8) {
        __m512i u = fwd_in<M>(_mm512_loadu_si512(x + j), q2);
        __m512i v = M::bfly(_mm512_loadu_si512(y + j), W, Wp, q);
        _mm512_storeu_si512(x + j, _mm512_add_epi64(u, v));
        _mm512_storeu_si512(y + j, _mm512_sub_epi64(_mm512_add_epi64(u, q2), v));
      }
    }
  } else {
    const SmallStage& st = stage(t);
    const std::size_t per = 8 / t;  // groups per 16 elements
    for (std::size_t i = i0; i < i1; i += per) {
      u64* p = a + 2 * i * t;
      __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 8);
      __m512i X = _mm512_permutex2var_epi64(v0, st.ix, v1);
      __m512i Y = _mm512_permutex2var_epi64(v0, st.iy, v1);
      __m512i W = _mm512_permutexvar_epi64(st.wl, _mm512_loadu_si512(tb.w.data() + m + i));
      __m512i Wp = _mm512_permutexvar_epi64(st.wl, _mm512_loadu_si512(M::fw(tb) + m + i));
      __m512i u = fwd_in<M>(X, q2);
      __m512i v = M::bfly(Y, W, Wp, q);
      X = _mm512_add_epi64(u, v);
      Y = _mm512_sub_epi64(_mm512_add_epi64(u, q2), v);
      _mm512_storeu_si512(p, _mm512_permutex2var_epi64(X, st.back0, Y));
      _mm512_storeu_si512(p + 8, _mm512_permutex2var_epi64(X, st.back1, Y));
    }
  }
}

// Two forward stages in one pass (t >= 16): stage (m, t), then (2m, t/2); the same butterflies
// in the same order per element as two radix-2 passes.
// The rescale's prologue: centred(v) mod q for v < ql < 2q (values above ql/2 stand for v - ql).
// With mul: a + centred(v) * cm mod q instead, a the array's own value (ModDown's conversion
// output, to which the rescale's correction term is added before one shared transform).
struct Centre {
  const u64* src = nullptr;
  __m512i half, adj;
  bool mul = false;
  __m512i cm, cm52;
  inline __m512i load(const u64* p, std::size_t off, __m512i q) const {
    __m512i v = _mm512_loadu_si512(src + (p - base) + off);
    __m512i r = csub(v, q);
    r = _mm512_mask_add_epi64(r, _mm512_cmpgt_epu64_mask(v, half), r, adj);
    r = csub(r, q);
    if (!mul) return r;
    r = csub(mul_lazy(r, cm, cm52, q), q);
    return csub(_mm512_add_epi64(r, _mm512_loadu_si512(p + off)), q);
  }
  const u64* base = nullptr;  // the array the stage indexes (src is read at the same offsets)
};

// Software prefetch of the next block's epilogue inputs into L2, one line per stream per
// iteration of the block's radix-4 stages (see forward_impl).
struct PfStreams {
  const char* p[3] = {nullptr, nullptr, nullptr};
  const char* end[3] = {nullptr, nullptr, nullptr};
  int k = 0;
  inline void step() {
    for (int i = 0; i < k; ++i)
      if (p[i] < end[i]) {
        _mm_prefetch(p[i], _MM_HINT_T1);
        p[i] += 64;
      }
  }
};
template <class M, bool kCentre = false>
inline void fwd_stage2(const NTTTables& tb, u64* a, std::size_t m, std::size_t t, __m512i q, __m512i q2,
                       const Centre* ce = nullptr, std::size_t i0 = 0, std::size_t i1 = ~std::size_t(0),
                       PfStreams* pf = nullptr) {
  const std::size_t h = t >> 1;
  if (i1 > m) i1 = m;
  for (std::size_t i = i0; i < i1; ++i) {
    const __m512i W1 = _mm512_set1_epi64(tb.w[m + i]), W1p = _mm512_set1_epi64(M::fw(tb)[m + i]);
    const __m512i W2 = _mm512_set1_epi64(tb.w[2 * m + 2 * i]), W2p = _mm512_set1_epi64(M::fw(tb)[2 * m + 2 * i]);
    const __m512i W3 = _mm512_set1_epi64(tb.w[2 * m + 2 * i + 1]), W3p = _mm512_set1_epi64(M::fw(tb)[2 * m + 2 * i + 1]);
    u64* p0 = a + 2 * i * t;
    u64* p1 = p0 + h;
    u64* p2 = p0 + t;
    u64* p3 = p2 + h;
    for (std::size_t j = 0; j < h; j += 8) {
      if (pf) pf->step();
      __m512i A, B, C, D;
      if constexpr (kCentre) {
        A = ce->load(p0, j, q); B = ce->load(p1, j, q); C = ce->load(p2, j, q); D = ce->load(p3, j, q);
      } else {
        A = _mm512_loadu_si512(p0 + j); B = _mm512_loadu_si512(p1 + j);
        C = _mm512_loadu_si512(p2 + j); D = _mm512_loadu_si512(p3 + j);
      }
      __m512i u = fwd_in<M>(A, q2), v = M::bfly(C, W1, W1p, q);
      A = _mm512_add_epi64(u, v); C = _mm512_sub_epi64(_mm512_add_epi64(u, q2), v);
      u = fwd_in<M>(B, q2); v = M::bfly(D, W1, W1p, q);
      B = _mm512_add_epi64(u, v); D = _mm512_sub_epi64(_mm512_add_epi64(u, q2), v);
      u = fwd_in<M>(A, q2); v = M::bfly(B, W2, W2p, q);
      _mm512_storeu_si512(p0 + j, _mm512_add_epi64(u, v));
      _mm512_storeu_si512(p1 + j, _mm512_sub_epi64(_mm512_add_epi64(u, q2), v));
      u = fwd_in<M>(C, q2); v = M::bfly(D, W3, W3p, q);
      _mm512_storeu_si512(p2 + j, _mm512_add_epi64(u, v));
      _mm512_storeu_si512(p3 + j, _mm512_sub_epi64(_mm512_add_epi64(u, q2), v));
    }
  }
}

// Three forward stages in one pass (t >= 32): (m, t), (2m, t/2), (4m, t/4) on eight vectors whose
// offsets in a group's 2t elements are k t/4; the same butterflies, in the same order per
// element, as three radix-2 passes. For the whole-array stages, whose passes stream the tower
// through L2: at N = 2^16 five such stages take two passes instead of three (forward NTT with a
// 40-bit modulus 118 -> 108 us; 52-bit products only: the 64-bit ones gain nothing).
template <class M>
inline void fwd_stage3(const NTTTables& tb, u64* a, std::size_t m, std::size_t t, __m512i q, __m512i q2) {
  const std::size_t t4 = t >> 2;
  const u64* wv = tb.w.data();
  const u64* wpv = M::fw(tb);
  for (std::size_t i = 0; i < m; ++i) {
    const std::size_t i2 = 2 * m + 2 * i, i4 = 4 * m + 4 * i;
    const __m512i W1 = _mm512_set1_epi64(wv[m + i]), W1p = _mm512_set1_epi64(wpv[m + i]);
    const __m512i W2 = _mm512_set1_epi64(wv[i2]), W2p = _mm512_set1_epi64(wpv[i2]);
    const __m512i W3 = _mm512_set1_epi64(wv[i2 + 1]), W3p = _mm512_set1_epi64(wpv[i2 + 1]);
    u64* p = a + 2 * i * t;
    for (std::size_t j = 0; j < t4; j += 8) {
      __m512i x[8];
      for (int k = 0; k < 8; ++k) x[k] = _mm512_loadu_si512(p + k * t4 + j);
      for (int k = 0; k < 4; ++k) {  // (m, t): x_k with x_(k+4)
        const __m512i u = fwd_in<M>(x[k], q2), v = M::bfly(x[k + 4], W1, W1p, q);
        x[k] = _mm512_add_epi64(u, v);
        x[k + 4] = _mm512_sub_epi64(_mm512_add_epi64(u, q2), v);
      }
      for (int k : {0, 1, 4, 5}) {  // (2m, t/2): x_k with x_(k+2)
        const __m512i w = k < 4 ? W2 : W3, wp = k < 4 ? W2p : W3p;
        const __m512i u = fwd_in<M>(x[k], q2), v = M::bfly(x[k + 2], w, wp, q);
        x[k] = _mm512_add_epi64(u, v);
        x[k + 2] = _mm512_sub_epi64(_mm512_add_epi64(u, q2), v);
      }
      for (int k = 0; k < 8; k += 2) {  // (4m, t/4): x_k with x_(k+1)
        const __m512i w = _mm512_set1_epi64(wv[i4 + k / 2]), wp = _mm512_set1_epi64(wpv[i4 + k / 2]);
        const __m512i u = fwd_in<M>(x[k], q2), v = M::bfly(x[k + 1], w, wp, q);
        _mm512_storeu_si512(p + k * t4 + j, _mm512_add_epi64(u, v));
        _mm512_storeu_si512(p + (k + 1) * t4 + j, _mm512_sub_epi64(_mm512_add_epi64(u, q2), v));
      }
    }
  }
}

// Two inverse stages in one pass (t >= 8): stage (h groups, t), then (h/2 groups, 2t); scale != null:
// the second is the last stage, and its outputs are multiplied by scale (x) and folded into its
// twiddle (y) instead of a separate n^-1 pass. Same results as the radix-2 passes.
template <class M>
inline void inv_stage2(const NTTTables& tb, u64* a, std::size_t h, std::size_t t, __m512i q, __m512i q2,
                       const u64* scale, std::size_t g0 = 0, std::size_t g1 = ~std::size_t(0)) {
  const std::size_t h2 = h >> 1;
  if (g1 > h2) g1 = h2;
  for (std::size_t g = g0; g < g1; ++g) {
    const __m512i W1 = _mm512_set1_epi64(tb.iw[h + 2 * g]), W1p = _mm512_set1_epi64(M::iw(tb)[h + 2 * g]);
    const __m512i W2 = _mm512_set1_epi64(tb.iw[h + 2 * g + 1]), W2p = _mm512_set1_epi64(M::iw(tb)[h + 2 * g + 1]);
    __m512i W3, W3p, S, Sp;
    if (scale) {  // scale = {s, s', w3 s, (w3 s)'}
      S = _mm512_set1_epi64(scale[0]); Sp = _mm512_set1_epi64(scale[1]);
      W3 = _mm512_set1_epi64(scale[2]); W3p = _mm512_set1_epi64(scale[3]);
    } else {
      W3 = _mm512_set1_epi64(tb.iw[h2 + g]); W3p = _mm512_set1_epi64(M::iw(tb)[h2 + g]);
      S = Sp = W3;
    }
    u64* p0 = a + 4 * g * t;
    u64* p1 = p0 + t;
    u64* p2 = p1 + t;
    u64* p3 = p2 + t;
    for (std::size_t j = 0; j < t; j += 8) {
      __m512i A = _mm512_loadu_si512(p0 + j), B = _mm512_loadu_si512(p1 + j);
      __m512i C = _mm512_loadu_si512(p2 + j), D = _mm512_loadu_si512(p3 + j);
      __m512i x0 = csub(_mm512_add_epi64(A, B), q2);
      __m512i y0 = M::mul(_mm512_sub_epi64(_mm512_add_epi64(A, q2), B), W1, W1p, q);
      __m512i x1 = csub(_mm512_add_epi64(C, D), q2);
      __m512i y1 = M::mul(_mm512_sub_epi64(_mm512_add_epi64(C, q2), D), W2, W2p, q);
      __m512i s0 = csub(_mm512_add_epi64(x0, x1), q2);
      __m512i d0 = M::mul(_mm512_sub_epi64(_mm512_add_epi64(x0, q2), x1), W3, W3p, q);
      __m512i s1 = csub(_mm512_add_epi64(y0, y1), q2);
      __m512i d1 = M::mul(_mm512_sub_epi64(_mm512_add_epi64(y0, q2), y1), W3, W3p, q);
      if (scale) {
        s0 = reduce_b<M>(M::mul(s0, S, Sp, q), q); s1 = reduce_b<M>(M::mul(s1, S, Sp, q), q);
        d0 = reduce_b<M>(d0, q); d1 = reduce_b<M>(d1, q);
      }
      _mm512_storeu_si512(p0 + j, s0);
      _mm512_storeu_si512(p1 + j, s1);
      _mm512_storeu_si512(p2 + j, d0);
      _mm512_storeu_si512(p3 + j, d1);
    }
  }
}

// Three inverse stages in one pass: (h groups, t), (h/2, 2t), (h/4, 4t) on eight vectors at
// offsets k t within a group's 8t elements; the same butterflies, in the same order per element,
// as three radix-2 passes (see fwd_stage3). Not the last stages: no scaling.
template <class M>
inline void inv_stage3(const NTTTables& tb, u64* a, std::size_t h, std::size_t t, __m512i q, __m512i q2) {
  const u64* wv = tb.iw.data();
  const u64* wpv = M::iw(tb);
  for (std::size_t g = 0; g < h / 4; ++g) {
    const std::size_t i1 = h + 4 * g, i2 = h / 2 + 2 * g, i3 = h / 4 + g;
    __m512i W[4], Wp[4];
    for (int k = 0; k < 4; ++k) { W[k] = _mm512_set1_epi64(wv[i1 + k]); Wp[k] = _mm512_set1_epi64(wpv[i1 + k]); }
    const __m512i V0 = _mm512_set1_epi64(wv[i2]), V0p = _mm512_set1_epi64(wpv[i2]);
    const __m512i V1 = _mm512_set1_epi64(wv[i2 + 1]), V1p = _mm512_set1_epi64(wpv[i2 + 1]);
    const __m512i U = _mm512_set1_epi64(wv[i3]), Up = _mm512_set1_epi64(wpv[i3]);
    u64* p = a + 8 * g * t;
    for (std::size_t j = 0; j < t; j += 8) {
      __m512i x[8];
      for (int k = 0; k < 8; ++k) x[k] = _mm512_loadu_si512(p + k * t + j);
      for (int k = 0; k < 8; k += 2) {  // (h, t): x_k with x_(k+1)
        const __m512i s = csub(_mm512_add_epi64(x[k], x[k + 1]), q2);
        x[k + 1] = M::mul(_mm512_sub_epi64(_mm512_add_epi64(x[k], q2), x[k + 1]), W[k / 2], Wp[k / 2], q);
        x[k] = s;
      }
      for (int k : {0, 1, 4, 5}) {  // (h/2, 2t): x_k with x_(k+2)
        const __m512i w = k < 4 ? V0 : V1, wp = k < 4 ? V0p : V1p;
        const __m512i s = csub(_mm512_add_epi64(x[k], x[k + 2]), q2);
        x[k + 2] = M::mul(_mm512_sub_epi64(_mm512_add_epi64(x[k], q2), x[k + 2]), w, wp, q);
        x[k] = s;
      }
      for (int k = 0; k < 4; ++k) {  // (h/4, 4t): x_k with x_(k+4)
        _mm512_storeu_si512(p + k * t + j, csub(_mm512_add_epi64(x[k], x[k + 4]), q2));
        _mm512_storeu_si512(p + (k + 4) * t + j,
                            M::mul(_mm512_sub_epi64(_mm512_add_epi64(x[k], q2), x[k + 4]), U, Up, q));
      }
    }
  }
}

// One inverse stage (h groups of 2t) restricted to groups [i0, i1).
template <class M>
inline void inv_stage(const NTTTables& tb, u64* a, std::size_t h, std::size_t t, std::size_t i0, std::size_t i1,
                      __m512i q, __m512i q2) {
  if (t >= 8) {
    for (std::size_t i = i0; i < i1; ++i) {
      const __m512i W = _mm512_set1_epi64(tb.iw[h + i]), Wp = _mm512_set1_epi64(M::iw(tb)[h + i]);
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; j += 8) {
        __m512i u = _mm512_loadu_si512(x + j), v = _mm512_loadu_si512(y + j);
        _mm512_storeu_si512(x + j, csub(_mm512_add_epi64(u, v), q2));
        _mm512_storeu_si512(y + j, M::mul(_mm512_sub_epi64(_mm512_add_epi64(u, q2), v), W, Wp, q));
      }
    }
  } else {
    const SmallStage& st = stage(t);
    const std::size_t per = 8 / t;
    for (std::size_t i = i0; i < i1; i += per) {
      u64* p = a + 2 * i * t;
      __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 8);
      __m512i X = _mm512_permutex2var_epi64(v0, st.ix, v1);
      __m512i Y = _mm512_permutex2var_epi64(v0, st.iy, v1);
      __m512i W = _mm512_permutexvar_epi64(st.wl, _mm512_loadu_si512(tb.iw.data() + h + i));
      __m512i Wp = _mm512_permutexvar_epi64(st.wl, _mm512_loadu_si512(M::iw(tb) + h + i));
      __m512i sum = csub(_mm512_add_epi64(X, Y), q2);
      __m512i dif = M::mul(_mm512_sub_epi64(_mm512_add_epi64(X, q2), Y), W, Wp, q);
      _mm512_storeu_si512(p, _mm512_permutex2var_epi64(sum, st.back0, dif));
      _mm512_storeu_si512(p + 8, _mm512_permutex2var_epi64(sum, st.back1, dif));
    }
  }
}
}  // namespace

// Epilogue source at [p, p + 8): src[p..] or, with a permutation, src[perm[p..]] (gathered).
inline __m512i ep_load(const u64* src, const std::uint32_t* perm, std::size_t p) {
  if (!perm) return _mm512_loadu_si512(src + p);
  __m256i ix = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(perm + p));
  return _mm512_i32gather_epi64(ix, reinterpret_cast<const long long*>(src), 8);
}

// x of the epilogue at p, times xw mod q in [0, q) when the epilogue multiplies x.
template <class M>
inline __m512i ep_x(const NTTEpilogue* ep, std::size_t p, __m512i q) {
  __m512i v = ep_load(ep->x, ep->perm, p);
  if (!ep->x_mul) return v;
  const bool m52 = M::is52;
  return reduce_b<M>(M::mul(v, _mm512_set1_epi64(static_cast<long long>(ep->xw)),
                            _mm512_set1_epi64(static_cast<long long>(m52 ? ep->xw52 : ep->xw_shoup)), q), q);
}

// The addend at p, times aw mod q in [0, q) when the epilogue multiplies it.
template <class M>
inline __m512i ep_add(const NTTEpilogue* ep, const u64* src, std::size_t p, __m512i q) {
  __m512i v = ep_load(src, ep->perm, p);
  if (!ep->add_mul) return v;
  const bool m52 = M::is52;
  return reduce_b<M>(M::mul(v, _mm512_set1_epi64(static_cast<long long>(ep->aw)),
                            _mm512_set1_epi64(static_cast<long long>(m52 ? ep->aw52 : ep->aw_shoup)), q), q);
}

// Helpers of the register-merged small stages, over K interleaved 16-element steps starting at p0.
// The K steps' 16 elements from src, split into the two halves of the first merged butterfly.
template <int K>
inline void merged_load(__m512i (&X)[K], __m512i (&Y)[K], const u64* src, std::size_t p0, const Merged3& L) {
  for (int k = 0; k < K; ++k) {
    const std::size_t p = p0 + 16 * k;
    __m512i v0 = _mm512_loadu_si512(src + p), v1 = _mm512_loadu_si512(src + p + 8);
    X[k] = _mm512_permutex2var_epi64(v0, L.in_x, v1);
    Y[k] = _mm512_permutex2var_epi64(v0, L.in_y, v1);
  }
}
// Lane twiddles of a stage whose table entry for element p is tab[p / div], spread by idx.
template <int K>
inline void merged_twiddles(__m512i (&W)[K], __m512i (&Wp)[K], __m512i idx, const u64* w, const u64* wp,
                            std::size_t p0, std::size_t div) {
  for (int k = 0; k < K; ++k) {
    const std::size_t p = p0 + 16 * k;
    W[k] = _mm512_permutexvar_epi64(idx, _mm512_loadu_si512(w + p / div));
    Wp[k] = _mm512_permutexvar_epi64(idx, _mm512_loadu_si512(wp + p / div));
  }
}
// Forward butterflies (U = x, V = y w), then the regrouping into the next stage's layout.
template <class M, int K>
inline void fwd_merged_stage(__m512i (&X)[K], __m512i (&Y)[K], const __m512i (&W)[K], const __m512i (&Wp)[K],
                             __m512i nx, __m512i ny, __m512i q, __m512i q2) {
  __m512i U[K], V[K];
  for (int k = 0; k < K; ++k) { U[k] = fwd_in<M>(X[k], q2); V[k] = M::bfly(Y[k], W[k], Wp[k], q); }
  for (int k = 0; k < K; ++k) {
    __m512i x = _mm512_add_epi64(U[k], V[k]), y = _mm512_sub_epi64(_mm512_add_epi64(U[k], q2), V[k]);
    X[k] = _mm512_permutex2var_epi64(x, nx, y); Y[k] = _mm512_permutex2var_epi64(x, ny, y);
  }
}
// Inverse butterflies: S = x + y, D = (x - y) w.
template <class M, int K>
inline void inv_merged_bfly(const __m512i (&X)[K], const __m512i (&Y)[K], const __m512i (&W)[K],
                            const __m512i (&Wp)[K], __m512i (&S)[K], __m512i (&D)[K], __m512i q, __m512i q2) {
  for (int k = 0; k < K; ++k) {
    S[k] = csub(_mm512_add_epi64(X[k], Y[k]), q2);
    D[k] = M::mul(_mm512_sub_epi64(_mm512_add_epi64(X[k], q2), Y[k]), W[k], Wp[k], q);
  }
}

// The last three forward stages (t = 4, 2, 1) over [b, b + B), 16 elements per step in registers,
// with the full reduction and the epilogue (if any) applied before the store. K independent steps
// are interleaved (K divides B / 16), so that their long dependency chains (permute, multiply, add,
// three times, then the reduction) overlap in the scheduler.
template <class M, int K>
inline void fwd_last3(const NTTTables& tb, u64* a, std::size_t b, std::size_t B, const NTTEpilogue* ep, __m512i q,
                       __m512i q2, __m512i kq) {
  const Merged3& L = merged_fwd();
  const std::size_t n = tb.n();
  const u64* w = tb.w.data();
  const u64* wp = M::fw(tb);
  const u64 *w4 = w + n / 8, *w4p = wp + n / 8, *w2 = w + n / 4, *w2p = wp + n / 4, *w1 = w + n / 2, *w1p = wp + n / 2;
  const bool m52 = M::is52;
  const __m512i EW = _mm512_set1_epi64(ep ? ep->w : 0);
  const __m512i EWp = _mm512_set1_epi64(ep ? (m52 ? ep->w52 : ep->w_shoup) : 0);
  const __m512i R52 = _mm512_set1_epi64(m52 ? static_cast<long long>((u64(1) << 52) / tb.q()) : 0);
  for (std::size_t p0 = b; p0 < b + B; p0 += 16 * K) {
    __m512i X[K], Y[K], U[K], V[K];
    merged_load<K>(X, Y, a, p0, L);
    __m512i W[K], Wp[K];
    merged_twiddles<K>(W, Wp, L.w4, w4, w4p, p0, 8);  // t = 4
    fwd_merged_stage<M, K>(X, Y, W, Wp, L.ab_x, L.ab_y, q, q2);
    merged_twiddles<K>(W, Wp, L.w2, w2, w2p, p0, 4);  // t = 2
    fwd_merged_stage<M, K>(X, Y, W, Wp, L.bc_x, L.bc_y, q, q2);
    for (int k = 0; k < K; ++k) {  // t = 1
      const std::size_t p = p0 + 16 * k;
      U[k] = fwd_in<M>(X[k], q2);
      V[k] = M::bfly(Y[k], _mm512_loadu_si512(w1 + p / 2), _mm512_loadu_si512(w1p + p / 2), q);
    }
    for (int k = 0; k < K; ++k) {
      if constexpr (M::lazy) {
        X[k] = _mm512_add_epi64(U[k], V[k]);
        Y[k] = _mm512_sub_epi64(_mm512_add_epi64(U[k], q2), V[k]);
        if (!ep) {  // (an epilogue takes the unreduced values: see below)
          X[k] = reduce_full52(X[k], q, R52);
          Y[k] = reduce_full52(Y[k], q, R52);
        }
      } else {
        X[k] = reduce_b<M>(csub(_mm512_add_epi64(U[k], V[k]), q2), q);
        Y[k] = reduce_b<M>(csub(_mm512_sub_epi64(_mm512_add_epi64(U[k], q2), V[k]), q2), q);
      }
    }
    for (int k = 0; k < K; ++k) {
      U[k] = _mm512_permutex2var_epi64(X[k], L.out0, Y[k]);
      V[k] = _mm512_permutex2var_epi64(X[k], L.out1, Y[k]);
    }
    if (!ep) {
      for (int k = 0; k < K; ++k) {
        _mm512_storeu_si512(a + p0 + 16 * k, U[k]);
        _mm512_storeu_si512(a + p0 + 16 * k + 8, V[k]);
      }
      continue;
    }
    // x - NTT: with the lazy transform, whose outputs are below kq = (4 + 2 log N) q and right
    // modulo 2^52 only, x + kq - NTT (below 2^52, a multiple of q added) goes straight into the
    // 52-bit product, which reads its low 52 bits: no full reduction of the transform's output.
    const __m512i xq = M::lazy ? kq : q;
    for (int k = 0; k < K; ++k) {
      const std::size_t p = p0 + 16 * k;
      X[k] = _mm512_sub_epi64(_mm512_add_epi64(ep_x<M>(ep, p, q), xq), U[k]);
      Y[k] = _mm512_sub_epi64(_mm512_add_epi64(ep_x<M>(ep, p + 8, q), xq), V[k]);
    }
    for (int k = 0; k < K; ++k) {
      X[k] = reduce_b<M>(M::mul(X[k], EW, EWp, q), q);
      Y[k] = reduce_b<M>(M::mul(Y[k], EW, EWp, q), q);
    }
    if (ep->add)
      for (int k = 0; k < K; ++k) {
        const std::size_t p = p0 + 16 * k;
        X[k] = csub(_mm512_add_epi64(X[k], ep_add<M>(ep, ep->add, p, q)), q);
        Y[k] = csub(_mm512_add_epi64(Y[k], ep_add<M>(ep, ep->add, p + 8, q)), q);
      }
    if (ep->add2)
      for (int k = 0; k < K; ++k) {
        const std::size_t p = p0 + 16 * k;
        X[k] = csub(_mm512_add_epi64(X[k], ep_load(ep->add2, ep->perm, p)), q);
        Y[k] = csub(_mm512_add_epi64(Y[k], ep_load(ep->add2, ep->perm, p + 8)), q);
      }
    for (int k = 0; k < K; ++k) {
      _mm512_storeu_si512(ep->out + p0 + 16 * k, X[k]);
      _mm512_storeu_si512(ep->out + p0 + 16 * k + 8, Y[k]);
    }
  }
}

// The first three inverse stages (t = 1, 2, 4) over [b, b + B), 16 elements per step in
// registers, K steps interleaved (as fwd_last3).
template <class M, int K>
inline void inv_first3(const NTTTables& tb, const u64* src, u64* a, std::size_t b, std::size_t B, __m512i q,
                        __m512i q2) {
  const Merged3& L = merged_inv();
  const std::size_t n = tb.n();
  const u64* w = tb.iw.data();
  const u64* wp = M::iw(tb);
  const u64 *w4 = w + n / 8, *w4p = wp + n / 8, *w2 = w + n / 4, *w2p = wp + n / 4, *w1 = w + n / 2, *w1p = wp + n / 2;
  for (std::size_t p0 = b; p0 < b + B; p0 += 16 * K) {
    __m512i X[K], Y[K], S[K], D[K];
    merged_load<K>(X, Y, src, p0, L);
    __m512i W[K], Wp[K];
    for (int k = 0; k < K; ++k) {  // t = 1: the table is in lane order
      W[k] = _mm512_loadu_si512(w1 + (p0 + 16 * k) / 2);
      Wp[k] = _mm512_loadu_si512(w1p + (p0 + 16 * k) / 2);
    }
    inv_merged_bfly<M, K>(X, Y, W, Wp, S, D, q, q2);
    for (int k = 0; k < K; ++k) {
      X[k] = _mm512_permutex2var_epi64(S[k], L.ab_x, D[k]); Y[k] = _mm512_permutex2var_epi64(S[k], L.ab_y, D[k]);
    }
    merged_twiddles<K>(W, Wp, L.w2, w2, w2p, p0, 4);  // t = 2
    inv_merged_bfly<M, K>(X, Y, W, Wp, S, D, q, q2);
    for (int k = 0; k < K; ++k) {
      X[k] = _mm512_permutex2var_epi64(S[k], L.bc_x, D[k]); Y[k] = _mm512_permutex2var_epi64(S[k], L.bc_y, D[k]);
    }
    merged_twiddles<K>(W, Wp, L.w4, w4, w4p, p0, 8);  // t = 4
    inv_merged_bfly<M, K>(X, Y, W, Wp, S, D, q, q2);
    for (int k = 0; k < K; ++k) {
      _mm512_storeu_si512(a + p0 + 16 * k, _mm512_permutex2var_epi64(S[k], L.out0, D[k]));
      _mm512_storeu_si512(a + p0 + 16 * k + 8, _mm512_permutex2var_epi64(S[k], L.out1, D[k]));
    }
  }
}

// Last pass of the forward NTT over [b, b + B): full reduction, then the epilogue if any.
template <class M>
inline __m512i fwd_out(__m512i v, __m512i q, __m512i q2, __m512i r52) {
  if constexpr (M::lazy) return reduce_full52(v, q, r52);
  else return reduce_b<M>(csub(v, q2), q);
}

template <class M>
inline void fwd_finish(u64* a, std::size_t b, std::size_t B, const NTTEpilogue* ep, __m512i q, __m512i q2,
                       __m512i r52) {
  if (!ep) {
    for (std::size_t j = b; j < b + B; j += 8) {
      __m512i v = _mm512_loadu_si512(a + j);
      _mm512_storeu_si512(a + j, fwd_out<M>(v, q, q2, r52));
    }
    return;
  }
  const __m512i W = _mm512_set1_epi64(ep->w);
  const __m512i Wp = _mm512_set1_epi64(M::is52 ? ep->w52 : ep->w_shoup);
  for (std::size_t j = b; j < b + B; j += 8) {
    __m512i v = fwd_out<M>(_mm512_loadu_si512(a + j), q, q2, r52);
    __m512i r = _mm512_sub_epi64(_mm512_add_epi64(ep_x<M>(ep, j, q), q), v);
    r = reduce_b<M>(M::mul(r, W, Wp, q), q);
    if (ep->add) r = csub(_mm512_add_epi64(r, ep_add<M>(ep, ep->add, j, q)), q);
    if (ep->add2) r = csub(_mm512_add_epi64(r, ep_load(ep->add2, ep->perm, j)), q);
    _mm512_storeu_si512(ep->out + j, r);
  }
}

template <class M>
void forward_impl(const NTTTables& tb, u64* a, const NTTEpilogue* ep) {
  const std::size_t n = tb.n();
  const u64 qs = tb.q();
  const __m512i q = _mm512_set1_epi64(qs), q2 = bound_of<M>(qs);
  const __m512i r52 = _mm512_set1_epi64(M::is52 ? static_cast<long long>((u64(1) << 52) / qs) : 0);  // lazy end
  unsigned logn = 0;
  while ((std::size_t(1) << logn) < n) ++logn;
  const __m512i kq = _mm512_set1_epi64(static_cast<long long>((4 + 2 * u64(logn)) * qs));  // lazy output bound
  std::size_t m = 1, t = n >> 1;
  // large stages: whole-array passes, two stages per pass where two remain
  // (not for the exact 64-bit product: its temporaries leave too few registers)
  if (ep && ep->centre_src) {  // the first pass reads centred(src) (forward() checked it applies)
    Centre ce;
    ce.src = ep->centre_src;
    ce.base = a;
    ce.half = _mm512_set1_epi64(static_cast<long long>(ep->centre_ql >> 1));
    ce.adj = _mm512_set1_epi64(static_cast<long long>(qs - ep->centre_ql % qs));
    ce.mul = ep->centre_mul;
    ce.cm = _mm512_set1_epi64(static_cast<long long>(ep->cm));
    ce.cm52 = _mm512_set1_epi64(static_cast<long long>(ep->cm52));
    fwd_stage2<M, true>(tb, a, m, t, q, q2, &ce);
    m <<= 2;
    t >>= 2;
  }
  if (!std::is_same<M, Mul64>::value) {
    // an odd number (three or more) of whole-array stages left: three of them in one pass
    std::size_t large = 0;
    for (std::size_t tt = t; tt >= kBlock; tt >>= 1) ++large;
    if (M::is52 && m < n && large >= 3 && large % 2 == 1) {
      fwd_stage3<M>(tb, a, m, t, q, q2);
      m <<= 3;
      t >>= 3;
    }
    for (; m < n && t > kBlock; m <<= 2, t >>= 2) fwd_stage2<M>(tb, a, m, t, q, q2);
  }
  for (; m < n && 2 * t > kBlock; m <<= 1, t >>= 1) fwd_stage<M>(tb, a, m, t, 0, m, q, q2);
  // small stages: each block of kBlock elements through all of them while in L1
  if (m < n) {
    const std::size_t B = std::min(kBlock, n);
    // The epilogue reads its inputs (x, add, add2: towers in memory, a rescale's or ModDown's
    // addends) block by block, after the block's stages: without help each block's first reads
    // wait on memory. So the next block's lines are requested into L2 while this block's stages
    // compute (256 radix-4 iterations per 2,048-element block, one line per stream each).
    // Rescale at N = 2^16, depth 20 (one process, alternating): 4.25 against 4.50 ms; the key
    // switches unchanged (+-1%). (Not for permuted reads: a rotation's epilogue gathers.)
    const u64* pfs[3] = {nullptr, nullptr, nullptr};
    int npf = 0;
    if (ep && ep->x && !ep->perm) {
      pfs[npf++] = ep->x;
      if (ep->add) pfs[npf++] = ep->add;
      if (ep->add2) pfs[npf++] = ep->add2;
    }
    PfStreams pf;
    for (std::size_t b = 0; b < n; b += B) {
      pf.k = 0;
      if (npf && b + B < n) {
        for (int i = 0; i < npf; ++i) {
          pf.p[i] = reinterpret_cast<const char*>(pfs[i] + b + B);
          pf.end[i] = pf.p[i] + 8 * B;
        }
        pf.k = npf;
      }
      std::size_t mm = m, tt = t;
      if (M::is52)
        for (; tt >= 16; mm <<= 2, tt >>= 2) fwd_stage2<M>(tb, a, mm, tt, q, q2, nullptr, b / (2 * tt), (b + B) / (2 * tt), &pf);
      for (; tt >= 8; mm <<= 1, tt >>= 1) {
        const std::size_t g0 = b / (2 * tt), g1 = (b + B) / (2 * tt);
        fwd_stage<M>(tb, a, mm, tt, g0, g1, q, q2);
      }
      if (tt == 4 && !std::is_same<M, Mul64>::value) {  // (not for the exact 64-bit product: registers)
        if (B % 32 == 0) fwd_last3<M, 2>(tb, a, b, B, ep, q, q2, kq);
        else fwd_last3<M, 1>(tb, a, b, B, ep, q, q2, kq);
      } else {
        for (; mm < n; mm <<= 1, tt >>= 1) fwd_stage<M>(tb, a, mm, tt, b / (2 * tt), (b + B) / (2 * tt), q, q2);
        fwd_finish<M>(a, b, B, ep, q, q2, r52);
      }
    }
  }
}

bool forward(const NTTTables& tb, u64* a, const NTTEpilogue* ep) {
  if (tb.n() < 16) return false;
  if (ep && ep->centre_src) {  // the centring prologue: first pass radix 4 on 52-bit products only
    if (!(tb.q() < (u64(1) << 50) && !tb.w52.empty() && tb.n() / 2 > kBlock && ep->centre_ql < 2 * tb.q()))
      return false;
    if (lazy_forward_ok(tb.q(), tb.n())) forward_impl<Mul52L>(tb, a, ep); else forward_impl<Mul52>(tb, a, ep);
    return true;
  }
  if (tb.q() < (u64(1) << 50) && !tb.w52.empty()) {
    if (lazy_forward_ok(tb.q(), tb.n())) forward_impl<Mul52L>(tb, a, ep); else forward_impl<Mul52>(tb, a, ep);
    return true;
  }
  if (tb.q() < (u64(1) << 60) && cpu_has_avx512dq()) { forward_impl<Mul64a>(tb, a, ep); return true; }
  if (tb.q() < (u64(1) << 62) && cpu_has_avx512dq()) { forward_impl<Mul64>(tb, a, ep); return true; }
  return false;
}

template <class M>
void inverse_impl(const NTTTables& tb, u64* a, const NTTEpilogue* ep, const u64* src) {
  const std::size_t n = tb.n();
  const u64 qs = tb.q();
  const __m512i q = _mm512_set1_epi64(qs), q2 = bound_of<M>(qs);
  const std::size_t B = std::min(kBlock, n);
  if (std::is_same<M, Mul64>::value && src != a) std::memcpy(a, src, 8 * n);  // (first pass in place)
  // small stages (t = 1 .. B/2) per block
  std::size_t t_end = 1, m_end = n;
  for (std::size_t b = 0; b < n; b += B) {
    std::size_t t = 1, mm = n;
    if (!std::is_same<M, Mul64>::value) {
      if (B % 32 == 0) inv_first3<M, 2>(tb, src, a, b, B, q, q2);
      else inv_first3<M, 1>(tb, src, a, b, B, q, q2);
      t = 8;
      mm = n >> 3;
    }
    // 52-bit products: two stages per pass over the block while two fit (one read and write of
    // the block per pair instead of per stage), then a single one if left. (The 64-bit products
    // run out of registers in the pair: 4% slower at 60 bits, so one stage per pass there.)
    for (; M::is52 && t >= 8 && mm >= 4 && 4 * t <= B; mm >>= 2, t <<= 2)
      inv_stage2<M>(tb, a, mm >> 1, t, q, q2, nullptr, b / (4 * t), (b + B) / (4 * t));
    for (; mm > 1 && 2 * t <= B; mm >>= 1, t <<= 1) {
      const std::size_t h = mm >> 1;
      const std::size_t g0 = b / (2 * t), g1 = (b + B) / (2 * t);
      inv_stage<M>(tb, a, h, t, g0, g1, q, q2);
    }
    t_end = t;
    m_end = mm;
  }
  const bool m52 = M::is52;
  const u64 sc = ep ? ep->w : tb.ninv, scp = ep ? (m52 ? ep->w52 : ep->w_shoup) : (m52 ? tb.ninv52 : tb.ninvp);
  // large stages: two per pass; the n^-1 (times the epilogue's factor) folded into the last pass
  std::size_t t = t_end, mm = m_end;
  unsigned large = 0;
  while ((std::size_t(1) << large) < mm) ++large;
  if (M::is52 && large % 2 == 1 && large >= 5) {  // three in one pass, then pairs (the last one scaled)
    inv_stage3<M>(tb, a, mm >> 1, t, q, q2);
    mm >>= 3;
    t <<= 3;
    large -= 3;
  }
  if (large % 2 == 1 && mm > 2) { inv_stage<M>(tb, a, mm >> 1, t, 0, mm >> 1, q, q2); mm >>= 1; t <<= 1; }
  for (; mm > 4; mm >>= 2, t <<= 2) inv_stage2<M>(tb, a, mm >> 1, t, q, q2, nullptr);
  if (mm == 4) {
    // the last two stages (one group): the scaling folded into the final stage
    const u64 w3 = tb.iw[1];
    const Modulus& md = tb.mod();
    const u64 w3s = mulmod(w3, sc, md);
    u64 fold[4] = {sc, scp, w3s, m52 ? static_cast<u64>((static_cast<u128>(w3s) << 52) / qs) : shoup(w3s, qs)};
    inv_stage2<M>(tb, a, 2, t, q, q2, fold);
    return;
  }
  for (; mm > 1; mm >>= 1, t <<= 1) inv_stage<M>(tb, a, mm >> 1, t, 0, mm >> 1, q, q2);
  const __m512i NI = _mm512_set1_epi64(sc);
  const __m512i NIp = _mm512_set1_epi64(scp);
  for (std::size_t j = 0; j < n; j += 8) {
    __m512i v = M::mul(_mm512_loadu_si512(a + j), NI, NIp, q);
    _mm512_storeu_si512(a + j, reduce_b<M>(v, q));
  }
}

bool inverse(const NTTTables& tb, u64* a, const NTTEpilogue* ep, const u64* src) {
  if (tb.n() < 16) return false;
  if (!src) src = a;
  if (tb.q() < (u64(1) << 50) && !tb.iw52.empty()) { inverse_impl<Mul52>(tb, a, ep, src); return true; }
  if (tb.q() < (u64(1) << 60) && cpu_has_avx512dq()) { inverse_impl<Mul64a>(tb, a, ep, src); return true; }
  if (tb.q() < (u64(1) << 62) && cpu_has_avx512dq()) { inverse_impl<Mul64>(tb, a, ep, src); return true; }
  return false;
}

}  // namespace ifma
}  // namespace medtwin
#else
namespace medtwin {
namespace ifma {
bool forward(const NTTTables&, u64*, const NTTEpilogue*) { return false; }
bool inverse(const NTTTables&, u64*, const NTTEpilogue*, const u64*) { return false; }
}  // namespace ifma
}  // namespace medtwin
#endif
