#include "medtwin/rns_ifma.h"

#if defined(MEDTWIN_HAVE_IFMA)
#include <immintrin.h>

#include <cstdint>

namespace medtwin {
namespace ifma {
namespace {
#define M52 _mm512_set1_epi64((1LL << 52) - 1)
#define Z0 _mm512_setzero_si512()
inline __m512i mul_lazy(__m512i a, __m512i w, __m512i wp, __m512i q) {
  __m512i hi = _mm512_madd52hi_epu64(Z0, a, wp);
  __m512i r = _mm512_sub_epi64(_mm512_madd52lo_epu64(Z0, a, w), _mm512_madd52lo_epu64(Z0, hi, q));
  return _mm512_and_si512(r, M52);
}
inline __m512i csub(__m512i x, __m512i m) { return _mm512_min_epu64(x, _mm512_sub_epi64(x, m)); }
}  // namespace

namespace {
// x*y*2^-52 mod q in [0, 2q) for x, y < 2^52 (see inner_mont).
inline __m512i mont(__m512i x, __m512i y, __m512i q, __m512i qn) {
  __m512i lo = _mm512_madd52lo_epu64(Z0, x, y);
  __m512i hi = _mm512_madd52hi_epu64(Z0, x, y);
  __m512i m = _mm512_and_si512(_mm512_madd52lo_epu64(Z0, lo, qn), M52);
  __m512i r = _mm512_madd52hi_epu64(hi, m, q);
  __mmask8 nz = _mm512_test_epi64_mask(lo, lo);
  return _mm512_mask_add_epi64(r, nz, r, _mm512_set1_epi64(1));
}
}  // namespace

bool center_mod(u64* out, const u64* x, std::size_t n, u64 qs, u64 ql) {
  if (!ifma_enabled() || ql >= 2 * qs || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(qs), half = _mm512_set1_epi64(ql >> 1);
  const __m512i adj = _mm512_set1_epi64(qs - ql % qs);  // q - (ql mod q): adding it subtracts ql
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i v = _mm512_loadu_si512(x + c);
    __m512i r = csub(v, q);
    __mmask8 hi = _mm512_cmpgt_epu64_mask(v, half);
    r = _mm512_mask_add_epi64(r, hi, r, adj);
    _mm512_storeu_si512(out + c, csub(r, q));
  }
  return true;
}

bool reduce52_sub(u64* out, const u64* x, std::size_t n, u64 qs, u64 sub) {
  if (!ifma_enabled() || qs >= (u64(1) << 50) || sub >= qs || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(qs), s = _mm512_set1_epi64(sub);
  const __m512i r52 = _mm512_set1_epi64(static_cast<long long>((u64(1) << 52) / qs));
  for (std::size_t c = 0; c < n; c += 8) {
    // x - floor(x floor(2^52/q) / 2^52) q in [0, 2q) (the product is below x < 2^52: exact)
    const __m512i v = _mm512_loadu_si512(x + c);
    const __m512i hi = _mm512_madd52hi_epu64(Z0, v, r52);
    __m512i r = csub(_mm512_sub_epi64(v, _mm512_madd52lo_epu64(Z0, hi, q)), q);
    const __mmask8 lt = _mm512_cmplt_epu64_mask(r, s);
    r = _mm512_sub_epi64(r, s);
    _mm512_storeu_si512(out + c, _mm512_mask_add_epi64(r, lt, r, q));
  }
  return true;
}

bool mul_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 qs, u64 qneg, u64 r2s) {
  if (!ifma_enabled() || qs >= (u64(1) << 50) || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(qs), qn = _mm512_set1_epi64(qneg), r2 = _mm512_set1_epi64(r2s);
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i t = mont(_mm512_loadu_si512(a + c), _mm512_loadu_si512(b + c), q, qn);
    _mm512_storeu_si512(out + c, csub(mont(t, r2, q, qn), q));
  }
  return true;
}

bool tensor_tower(const u64* a0, const u64* a1, const u64* b0, const u64* b1, u64* c0, u64* c1, u64* c2,
                  std::size_t n, u64 qs, u64 qneg, u64 r2s, bool stream01) {
  if (!ifma_enabled() || qs >= (u64(1) << 50) || n % 8) return false;
  const bool nt = stream01 && ((reinterpret_cast<std::uintptr_t>(c0) | reinterpret_cast<std::uintptr_t>(c1)) & 63) == 0;
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs), qn = _mm512_set1_epi64(qneg),
                r2 = _mm512_set1_epi64(r2s);
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i x0 = _mm512_loadu_si512(a0 + c), x1 = _mm512_loadu_si512(a1 + c);
    __m512i y0 = _mm512_loadu_si512(b0 + c), y1 = _mm512_loadu_si512(b1 + c);
    __m512i p00 = mont(x0, y0, q, qn), p11 = mont(x1, y1, q, qn);
    __m512i p01 = csub(_mm512_add_epi64(mont(x0, y1, q, qn), mont(x1, y0, q, qn)), q2);
    const __m512i r0 = csub(mont(p00, r2, q, qn), q), r1 = csub(mont(p01, r2, q, qn), q);
    if (nt) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(c0 + c), r0);
      _mm512_stream_si512(reinterpret_cast<__m512i*>(c1 + c), r1);
    } else {
      _mm512_storeu_si512(c0 + c, r0);
      _mm512_storeu_si512(c1 + c, r1);
    }
    _mm512_storeu_si512(c2 + c, csub(mont(p11, r2, q, qn), q));
  }
  if (nt) _mm_sfence();  // the streamed lines are visible before another thread reads them
  return true;
}

namespace {
// [L + H 2^52]_q in [0, q) for L < 2^52 and H < 2^52 (q < 2^50): L through a 52-bit Barrett step
// (r52 = floor(2^52 / q)), H times R = 2^52 mod q by a Shoup product (Rp its 52-bit constant).
inline __m512i fold2(__m512i L, __m512i H, __m512i q, __m512i q2, __m512i r52, __m512i R, __m512i Rp) {
  const __m512i lq = _mm512_madd52hi_epu64(Z0, L, r52);
  const __m512i l = _mm512_sub_epi64(L, _mm512_madd52lo_epu64(Z0, lq, q));  // [0, 2q): lq q <= L, exact
  return csub(csub(_mm512_add_epi64(l, mul_lazy(H, R, Rp, q)), q2), q);
}
struct Fold {  // the constants of fold2 and of 2^104 mod q for one modulus q < 2^50
  __m512i q, q2, r52, R, Rp, R2, R2p;
  explicit Fold(u64 qs) {
    const u64 r = static_cast<u64>((u128(1) << 52) % qs), r2 = static_cast<u64>((u128(r) << 52) % qs);
    q = _mm512_set1_epi64(static_cast<long long>(qs));
    q2 = _mm512_set1_epi64(static_cast<long long>(2 * qs));
    r52 = _mm512_set1_epi64(static_cast<long long>((u64(1) << 52) / qs));
    R = _mm512_set1_epi64(static_cast<long long>(r));
    Rp = _mm512_set1_epi64(static_cast<long long>(static_cast<u64>((u128(r) << 52) / qs)));
    R2 = _mm512_set1_epi64(static_cast<long long>(r2));
    R2p = _mm512_set1_epi64(static_cast<long long>(static_cast<u64>((u128(r2) << 52) / qs)));
  }
};
}  // namespace

bool conv_small(const u64* const* in, const u64* w, const u64* w52, std::size_t cnt, u64 qs, u64* out, std::size_t n) {
  if (!ifma_enabled() || qs >= (u64(1) << 50) || n % 8) return false;
  if (cnt <= 15) {
    // Exact: sum x w = L + H 2^52 with L the low and H the high 52-bit halves of the products
    // (x, w < 2^50: each high half < 2^48), reduced once. After the carry L >> 52 moves into H,
    // H < 15 (2^48 + 1) < 2^52, as fold2 needs.
    const Fold f(qs);
    __m512i wv[15];
    for (std::size_t i = 0; i < cnt; ++i) wv[i] = _mm512_set1_epi64(static_cast<long long>(w[i]));
    for (std::size_t c = 0; c < n; c += 8) {
      __m512i L = Z0, H = Z0;
      for (std::size_t i = 0; i < cnt; ++i) {
        const __m512i x = _mm512_loadu_si512(in[i] + c);
        L = _mm512_madd52lo_epu64(L, x, wv[i]);
        H = _mm512_madd52hi_epu64(H, x, wv[i]);
      }
      H = _mm512_add_epi64(H, _mm512_srli_epi64(L, 52));
      _mm512_storeu_si512(out + c, fold2(_mm512_and_si512(L, M52), H, f.q, f.q2, f.r52, f.R, f.Rp));
    }
    return true;
  }
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs);
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i acc = Z0;
    for (std::size_t i = 0; i < cnt; ++i) {
      __m512i x = _mm512_loadu_si512(in[i] + c);
      acc = csub(_mm512_add_epi64(acc, mul_lazy(x, _mm512_set1_epi64(w[i]), _mm512_set1_epi64(w52[i]), q)), q2);
    }
    _mm512_storeu_si512(out + c, csub(acc, q));
  }
  return true;
}

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

bool conv_large(const u64* const* in, const u64* w, const u64* wp, std::size_t cnt, u64 qs, u64* out, std::size_t n) {
  if (!ifma_enabled() || !cpu_has_avx512dq() || qs >= (u64(1) << 62) || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs);
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i acc = Z0;
    for (std::size_t i = 0; i < cnt; ++i) {
      __m512i x = _mm512_loadu_si512(in[i] + c);
      acc = csub(_mm512_add_epi64(acc, mul_lazy64(x, _mm512_set1_epi64(w[i]), _mm512_set1_epi64(wp[i]), q)), q2);
    }
    _mm512_storeu_si512(out + c, csub(acc, q));
  }
  return true;
}

bool conv_large52(const u64* const* in, const u64* w, std::size_t cnt, u64 qs, u64* out, std::size_t n) {
  if (!ifma_enabled() || !cpu_has_avx512dq() || qs < (u64(1) << 56) || qs >= (u64(1) << 62) || cnt > 8 || n % 8)
    return false;
  // x w = L1 + (H1 + L2) 2^52 + H2 2^104 with w = wh 2^52 + wl, x wl = H1 2^52 + L1, x wh = H2 2^52 + L2.
  // AL = sum L1 < 8 * 2^52 <= q; M = AH 2^52 + AM < 2^64; S = M 2^52 + AL.
  __m512i wl[8], wh[8];
  for (std::size_t i = 0; i < cnt; ++i) {
    wl[i] = _mm512_set1_epi64(static_cast<long long>(w[i] & ((u64(1) << 52) - 1)));
    wh[i] = _mm512_set1_epi64(static_cast<long long>(w[i] >> 52));
  }
  const u64 r52s = (u64(1) << 52) % qs;
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs);
  const __m512i R = _mm512_set1_epi64(r52s), Rp = _mm512_set1_epi64(shoup(r52s, qs));
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i al = Z0, am = Z0, ah = Z0;
    for (std::size_t i = 0; i < cnt; ++i) {
      __m512i x = _mm512_loadu_si512(in[i] + c);
      al = _mm512_madd52lo_epu64(al, x, wl[i]);
      am = _mm512_madd52hi_epu64(am, x, wl[i]);
      am = _mm512_madd52lo_epu64(am, x, wh[i]);
      ah = _mm512_madd52hi_epu64(ah, x, wh[i]);
    }
    __m512i m = _mm512_add_epi64(_mm512_slli_epi64(ah, 52), am);
    __m512i r = _mm512_add_epi64(mul_lazy64(m, R, Rp, q), al);
    _mm512_storeu_si512(out + c, csub(csub(r, q2), q));
  }
  return true;
}

bool inner_wide(const u64* const* e, const u64* const* b, const u64* const* a, std::size_t cnt, u64 qs, u64* o0,
                u64* o1, std::size_t n) {
  if (!ifma_enabled() || !cpu_has_avx512dq() || qs >= (u64(1) << 62) || cnt > 32 || n % 8) return false;
  // Exact, in 52-bit limbs: with x = xh 2^52 + xl and k = kh 2^52 + kl (xh, kh < 2^10),
  // x k = xl kl + (xl kh + xh kl) 2^52 + xh kh 2^104, so sum x k = L0 + L1 2^52 + L2 2^104 with
  // L0 = sum lo(xl kl) < 32 2^52, L1 = sum hi(xl kl) + lo(xl kh) + lo(xh kl) < 96 2^52,
  // L2 = sum hi(xl kh) + hi(xh kl) + xh kh < 32 (2^11 + 2^20) (lo, hi: the 52-bit halves of a
  // product). After the carries, [L0 + L1 R1 + L2 R2]_q with R1 = 2^52, R2 = 2^104 mod q: two
  // 64-bit Shoup products. No per-coefficient constants beside the key.
  const u64 r1 = static_cast<u64>((u128(1) << 52) % qs), r2 = static_cast<u64>((u128(r1) << 52) % qs);
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(qs)), q2 = _mm512_set1_epi64(static_cast<long long>(2 * qs));
  const __m512i R1 = _mm512_set1_epi64(static_cast<long long>(r1)), R1p = _mm512_set1_epi64(static_cast<long long>(shoup(r1, qs)));
  const __m512i R2 = _mm512_set1_epi64(static_cast<long long>(r2)), R2p = _mm512_set1_epi64(static_cast<long long>(shoup(r2, qs)));
  auto finish = [&](__m512i L0, __m512i L1, __m512i L2) {
    L1 = _mm512_add_epi64(L1, _mm512_srli_epi64(L0, 52));
    L2 = _mm512_add_epi64(L2, _mm512_srli_epi64(L1, 52));
    __m512i l0 = csub(csub(_mm512_and_si512(L0, M52), q2), q);  // < 2^52 <= 4q: to [0, q)
    __m512i s = csub(_mm512_add_epi64(mul_lazy64(_mm512_and_si512(L1, M52), R1, R1p, q), mul_lazy64(L2, R2, R2p, q)), q2);
    return csub(csub(_mm512_add_epi64(s, l0), q2), q);  // < 3q < 2^64
  };
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i A0 = Z0, A1 = Z0, A2 = Z0, B0 = Z0, B1 = Z0, B2 = Z0;
    for (std::size_t j = 0; j < cnt; ++j) {
      const __m512i x = _mm512_loadu_si512(e[j] + c);
      const __m512i xl = _mm512_and_si512(x, M52), xh = _mm512_srli_epi64(x, 52);
      const __m512i kb = _mm512_loadu_si512(b[j] + c), ka = _mm512_loadu_si512(a[j] + c);
      const __m512i bl = _mm512_and_si512(kb, M52), bh = _mm512_srli_epi64(kb, 52);
      const __m512i al = _mm512_and_si512(ka, M52), ah = _mm512_srli_epi64(ka, 52);
      A0 = _mm512_madd52lo_epu64(A0, xl, bl);
      A1 = _mm512_madd52hi_epu64(A1, xl, bl);
      A1 = _mm512_madd52lo_epu64(A1, xl, bh);
      A1 = _mm512_madd52lo_epu64(A1, xh, bl);
      A2 = _mm512_madd52hi_epu64(A2, xl, bh);
      A2 = _mm512_madd52hi_epu64(A2, xh, bl);
      A2 = _mm512_madd52lo_epu64(A2, xh, bh);
      B0 = _mm512_madd52lo_epu64(B0, xl, al);
      B1 = _mm512_madd52hi_epu64(B1, xl, al);
      B1 = _mm512_madd52lo_epu64(B1, xl, ah);
      B1 = _mm512_madd52lo_epu64(B1, xh, al);
      B2 = _mm512_madd52hi_epu64(B2, xl, ah);
      B2 = _mm512_madd52hi_epu64(B2, xh, al);
      B2 = _mm512_madd52lo_epu64(B2, xh, ah);
    }
    _mm512_storeu_si512(o0 + c, finish(A0, A1, A2));
    _mm512_storeu_si512(o1 + c, finish(B0, B1, B2));
  }
  return true;
}

bool conv_wide(const u64* const* in, const u64* w, std::size_t cnt, u64 qs, u64* out, std::size_t n) {
  if (!ifma_enabled() || qs >= (u64(1) << 50) || cnt > 64 || n % 8) return false;
  // Exact: x = xh 2^52 + xl (xh < 2^12), so sum x w = L0 + L1 2^52 + L2 2^104 with
  // L0 = sum lo(xl w), L1 = sum hi(xl w) + lo(xh w), L2 = sum hi(xh w) (lo, hi: the 52-bit halves
  // of a product; w < 2^50, hi(xl w) < 2^50, xh w < 2^62). With the carries propagated, L0, L1 <
  // 2^52 and L2 < 64 (2^10 + 2) < 2^52; one reduction per output.
  const Fold f(qs);
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i L0 = Z0, L1 = Z0, L2 = Z0;
    for (std::size_t i = 0; i < cnt; ++i) {
      const __m512i x = _mm512_loadu_si512(in[i] + c), wv = _mm512_set1_epi64(static_cast<long long>(w[i]));
      const __m512i xl = _mm512_and_si512(x, M52), xh = _mm512_srli_epi64(x, 52);
      L0 = _mm512_madd52lo_epu64(L0, xl, wv);
      L1 = _mm512_madd52hi_epu64(L1, xl, wv);
      L1 = _mm512_madd52lo_epu64(L1, xh, wv);
      L2 = _mm512_madd52hi_epu64(L2, xh, wv);
    }
    L1 = _mm512_add_epi64(L1, _mm512_srli_epi64(L0, 52));
    L2 = _mm512_add_epi64(L2, _mm512_srli_epi64(L1, 52));
    const __m512i r01 = fold2(_mm512_and_si512(L0, M52), _mm512_and_si512(L1, M52), f.q, f.q2, f.r52, f.R, f.Rp);
    _mm512_storeu_si512(out + c, csub(csub(_mm512_add_epi64(r01, mul_lazy(L2, f.R2, f.R2p, f.q)), f.q2), f.q));
  }
  return true;
}

bool cpu_has_vbmi() {
  static const bool h = (__builtin_cpu_init(), __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw"));
  return h;
}

namespace {
// The loads of a key polynomial: plain words, or packed at w bits per value (SwitchKey::pack_bits).
// Packed: the 8 values of a vector are the w bytes at w c / 8; lane i's value starts at bit w i of
// them, so a byte permute brings bytes w i / 8 .. + 7 into lane i, a shift by w i mod 8 and a mask
// finish it (w <= 56: the value and its shift fit the lane's 8 bytes; the 64-byte load stays in the
// polynomial's n-word slot, whose packed bytes end at least n (64 - w) / 8 >= 64 bytes before it).
struct KeyLoad {
  __m512i idx, shift, mask;
  unsigned w = 0;
  explicit KeyLoad(unsigned bits) : w(bits) {
    alignas(64) unsigned char ib[64];
    alignas(64) long long sh[8];
    for (unsigned i = 0; i < 8; ++i) {
      for (unsigned k = 0; k < 8; ++k) ib[8 * i + k] = static_cast<unsigned char>(bits * i / 8 + k);
      sh[i] = static_cast<long long>(bits * i % 8);
    }
    idx = _mm512_load_si512(ib);
    shift = _mm512_load_si512(sh);
    mask = _mm512_set1_epi64(static_cast<long long>(bits ? (u64(1) << bits) - 1 : ~u64(0)));
  }
  template <bool kPacked>
  inline __m512i operator()(const u64* p, std::size_t c) const {
    if constexpr (kPacked) {
      const __m512i v = _mm512_loadu_si512(reinterpret_cast<const unsigned char*>(p) + std::size_t(w) * c / 8);
      return _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutexvar_epi8(idx, v), shift), mask);
    } else {
      return _mm512_loadu_si512(p + c);
    }
  }
};

template <bool kPacked>
void inner_mont_impl(const u64* const* e, const u64* const* b, const u64* const* a, std::size_t cnt, u64 qs, u64 qneg,
                     u64* o0, u64* o1, std::size_t n, const KeyLoad& ld) {
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs), qn = _mm512_set1_epi64(qneg);
  if (cnt <= 15) {
    // Exact: T = sum x y = L + H 2^52 (52-bit halves of the products, x, y < 2^50: H < 15 2^48
    // after the carry), then one Montgomery reduction t = (T + m q) / 2^52 = H + hi52(m q) + (L != 0)
    // with m = L qneg mod 2^52: t < 2^52 + q, brought to [0, q) by a 52-bit Barrett step.
    const __m512i r52 = _mm512_set1_epi64(static_cast<long long>((u64(1) << 52) / qs));
    auto finish = [&](__m512i L, __m512i H) {
      H = _mm512_add_epi64(H, _mm512_srli_epi64(L, 52));
      L = _mm512_and_si512(L, M52);
      const __m512i m = _mm512_and_si512(_mm512_madd52lo_epu64(Z0, L, qn), M52);
      __m512i t = _mm512_madd52hi_epu64(H, m, q);
      t = _mm512_mask_add_epi64(t, _mm512_test_epi64_mask(L, L), t, _mm512_set1_epi64(1));
      const __m512i tq = _mm512_madd52hi_epu64(Z0, t, r52);
      return csub(csub(_mm512_sub_epi64(t, _mm512_madd52lo_epu64(Z0, tq, q)), q2), q);
    };
    for (std::size_t c = 0; c < n; c += 8) {
      __m512i L0 = Z0, H0 = Z0, L1 = Z0, H1 = Z0;
      for (std::size_t j = 0; j < cnt; ++j) {
        const __m512i x = _mm512_loadu_si512(e[j] + c);
        const __m512i kb = ld.operator()<kPacked>(b[j], c), ka = ld.operator()<kPacked>(a[j], c);
        L0 = _mm512_madd52lo_epu64(L0, x, kb);
        H0 = _mm512_madd52hi_epu64(H0, x, kb);
        L1 = _mm512_madd52lo_epu64(L1, x, ka);
        H1 = _mm512_madd52hi_epu64(H1, x, ka);
      }
      _mm512_storeu_si512(o0 + c, finish(L0, H0));
      _mm512_storeu_si512(o1 + c, finish(L1, H1));
    }
    return;
  }
  // more terms: one Montgomery product (mont, in [0, 2q)) and a conditional subtraction each
  for (std::size_t c = 0; c < n; c += 8) {
    __m512i s0 = Z0, s1 = Z0;
    for (std::size_t j = 0; j < cnt; ++j) {
      __m512i x = _mm512_loadu_si512(e[j] + c);
      s0 = csub(_mm512_add_epi64(s0, mont(x, ld.operator()<kPacked>(b[j], c), q, qn)), q2);
      s1 = csub(_mm512_add_epi64(s1, mont(x, ld.operator()<kPacked>(a[j], c), q, qn)), q2);
    }
    _mm512_storeu_si512(o0 + c, csub(s0, q));
    _mm512_storeu_si512(o1 + c, csub(s1, q));
  }
}
}  // namespace

bool inner_mont(const u64* const* e, const u64* const* b, const u64* const* a, std::size_t cnt, u64 qs, u64 qneg,
                u64* o0, u64* o1, std::size_t n, unsigned pack_bits) {
  if (!ifma_enabled() || qs >= (u64(1) << 50) || n % 8) return false;
  if (pack_bits && (pack_bits > 56 || !cpu_has_vbmi())) return false;
  const KeyLoad ld(pack_bits);
  if (pack_bits) inner_mont_impl<true>(e, b, a, cnt, qs, qneg, o0, o1, n, ld);
  else inner_mont_impl<false>(e, b, a, cnt, qs, qneg, o0, o1, n, ld);
  return true;
}

bool add_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 qs) {
  if (!ifma_enabled() || qs >= (u64(1) << 63) || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(qs));
  for (std::size_t c = 0; c < n; c += 8)
    _mm512_storeu_si512(out + c, csub(_mm512_add_epi64(_mm512_loadu_si512(a + c), _mm512_loadu_si512(b + c)), q));
  return true;
}

bool sub_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 qs) {
  if (!ifma_enabled() || qs >= (u64(1) << 63) || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(qs));
  for (std::size_t c = 0; c < n; c += 8) {  // a - b + q in [1, 2q): one conditional subtraction
    __m512i d = _mm512_add_epi64(_mm512_sub_epi64(_mm512_loadu_si512(a + c), _mm512_loadu_si512(b + c)), q);
    _mm512_storeu_si512(out + c, csub(d, q));
  }
  return true;
}

bool add_scalar(u64* out, const u64* a, u64 k, std::size_t n, u64 qs) {
  if (!ifma_enabled() || qs >= (u64(1) << 63) || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(qs)), kv = _mm512_set1_epi64(static_cast<long long>(k));
  for (std::size_t c = 0; c < n; c += 8)
    _mm512_storeu_si512(out + c, csub(_mm512_add_epi64(_mm512_loadu_si512(a + c), kv), q));
  return true;
}

bool mul_scalar(u64* out, const u64* a, u64 w, u64 wp, std::size_t n, u64 qs) {
  if (!ifma_enabled() || n % 8) return false;
  const __m512i q = _mm512_set1_epi64(static_cast<long long>(qs));
  if (qs < (u64(1) << 50)) {
    const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w));
    const __m512i w52 = _mm512_set1_epi64(static_cast<long long>(static_cast<u64>((static_cast<u128>(w) << 52) / qs)));
    for (std::size_t c = 0; c < n; c += 8)
      _mm512_storeu_si512(out + c, csub(mul_lazy(_mm512_loadu_si512(a + c), wv, w52, q), q));
    return true;
  }
  if (!cpu_has_avx512dq() || qs >= (u64(1) << 62)) return false;
  const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w)), wpv = _mm512_set1_epi64(static_cast<long long>(wp));
  for (std::size_t c = 0; c < n; c += 8)
    _mm512_storeu_si512(out + c, csub(mul_lazy64(_mm512_loadu_si512(a + c), wv, wpv, q), q));
  return true;
}

}  // namespace ifma
}  // namespace medtwin
#else
// Built without IFMA support (MEDTWIN_IFMA=OFF or a compiler without it): every kernel declines,
// and the callers take the portable 64-bit path.
namespace medtwin {
namespace ifma {
bool conv_small(const u64* const*, const u64*, const u64*, std::size_t, u64, u64*, std::size_t) { return false; }
bool conv_large(const u64* const*, const u64*, const u64*, std::size_t, u64, u64*, std::size_t) { return false; }
bool conv_wide(const u64* const*, const u64*, std::size_t, u64, u64*, std::size_t) { return false; }
bool mul_vec(u64*, const u64*, const u64*, std::size_t, u64, u64, u64) { return false; }
bool center_mod(u64*, const u64*, std::size_t, u64, u64) { return false; }
bool reduce52_sub(u64*, const u64*, std::size_t, u64, u64) { return false; }
bool conv_large52(const u64* const*, const u64*, std::size_t, u64, u64*, std::size_t) { return false; }
bool inner_wide(const u64* const*, const u64* const*, const u64* const*, std::size_t, u64, u64*, u64*, std::size_t) {
  return false;
}
bool tensor_tower(const u64*, const u64*, const u64*, const u64*, u64*, u64*, u64*, std::size_t, u64, u64, u64, bool) {
  return false;
}
bool inner_mont(const u64* const*, const u64* const*, const u64* const*, std::size_t, u64, u64, u64*, u64*, std::size_t,
                unsigned) {
  return false;
}
bool cpu_has_vbmi() { return false; }
bool add_vec(u64*, const u64*, const u64*, std::size_t, u64) { return false; }
bool sub_vec(u64*, const u64*, const u64*, std::size_t, u64) { return false; }
bool add_scalar(u64*, const u64*, u64, std::size_t, u64) { return false; }
bool mul_scalar(u64*, const u64*, u64, u64, std::size_t, u64) { return false; }
}  // namespace ifma
}  // namespace medtwin
#endif
