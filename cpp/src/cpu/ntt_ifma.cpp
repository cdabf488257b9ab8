// AVX-512 IFMA NTT for moduli below 2^50 (52-bit Shoup multiplication with vpmadd52luq/huq).
// Compiled with -mavx512f -mavx512ifma; called only when cpuid reports IFMA (see modarith.cpp).
#include "medtwin/ntt.h"

#if defined(MEDTWIN_HAVE_IFMA)
#include <immintrin.h>

namespace medtwin {
namespace ifma {
namespace {
const __m512i kMask52 = _mm512_set1_epi64((1LL << 52) - 1);
const __m512i kZero = _mm512_setzero_si512();

// a * w mod q in [0, 2q) for a < 2^52, w < q < 2^50, wp = floor(w * 2^52 / q).
inline __m512i mul_lazy(__m512i a, __m512i w, __m512i wp, __m512i q) {
  __m512i hi = _mm512_madd52hi_epu64(kZero, a, wp);
  __m512i r = _mm512_sub_epi64(_mm512_madd52lo_epu64(kZero, a, w), _mm512_madd52lo_epu64(kZero, hi, q));
  return _mm512_and_si512(r, kMask52);
}
inline __m512i csub(__m512i x, __m512i m) {  // x >= m ? x - m : x
  return _mm512_min_epu64(x, _mm512_sub_epi64(x, m));
}
inline u64 mul_lazy_s(u64 a, u64 w, u64 wp, u64 q) {
  u64 hi = static_cast<u64>((static_cast<u128>(a) * wp) >> 52);
  return (a * w - hi * q) & ((u64(1) << 52) - 1);
}
}  // namespace

bool forward(const NTTTables& tb, u64* a) {
  const std::size_t n = tb.n();
  const u64 qs = tb.q();
  if (qs >= (u64(1) << 50) || tb.w52.empty() || n < 16) return false;
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs);
  std::size_t t = n;
  for (std::size_t m = 1; m < n; m <<= 1) {
    t >>= 1;
    if (t >= 8) {
      for (std::size_t i = 0; i < m; ++i) {
        const __m512i W = _mm512_set1_epi64(tb.w[m + i]), Wp = _mm512_set1_epi64(tb.w52[m + i]);
        u64* x = a + 2 * i * t;
        u64* y = x + t;
        for (std::size_t j = 0; j < t; j += 8) {
          __m512i u = csub(_mm512_loadu_si512(x + j), q2);
          __m512i v = mul_lazy(_mm512_loadu_si512(y + j), W, Wp, q);
          _mm512_storeu_si512(x + j, _mm512_add_epi64(u, v));
          _mm512_storeu_si512(y + j, _mm512_sub_epi64(_mm512_add_epi64(u, q2), v));
        }
      }
    } else {
      const u64 q2s = 2 * qs;
      for (std::size_t i = 0; i < m; ++i) {
        const u64 W = tb.w[m + i], Wp = tb.w52[m + i];
        u64* x = a + 2 * i * t;
        u64* y = x + t;
        for (std::size_t j = 0; j < t; ++j) {
          u64 u = x[j];
          u -= (u >= q2s) ? q2s : 0;
          u64 v = mul_lazy_s(y[j], W, Wp, qs);
          x[j] = u + v;
          y[j] = u - v + q2s;
        }
      }
    }
  }
  for (std::size_t j = 0; j < n; j += 8) {
    __m512i v = _mm512_loadu_si512(a + j);
    _mm512_storeu_si512(a + j, csub(csub(v, q2), q));
  }
  return true;
}

bool inverse(const NTTTables& tb, u64* a) {
  const std::size_t n = tb.n();
  const u64 qs = tb.q();
  if (qs >= (u64(1) << 50) || tb.iw52.empty() || n < 16) return false;
  const __m512i q = _mm512_set1_epi64(qs), q2 = _mm512_set1_epi64(2 * qs);
  const u64 q2s = 2 * qs;
  std::size_t t = 1;
  for (std::size_t m = n; m > 1; m >>= 1) {
    std::size_t h = m >> 1;
    if (t >= 8) {
      for (std::size_t i = 0; i < h; ++i) {
        const __m512i W = _mm512_set1_epi64(tb.iw[h + i]), Wp = _mm512_set1_epi64(tb.iw52[h + i]);
        u64* x = a + 2 * i * t;
        u64* y = x + t;
        for (std::size_t j = 0; j < t; j += 8) {
          __m512i u = _mm512_loadu_si512(x + j), v = _mm512_loadu_si512(y + j);
          _mm512_storeu_si512(x + j, csub(_mm512_add_epi64(u, v), q2));
          _mm512_storeu_si512(y + j, mul_lazy(_mm512_sub_epi64(_mm512_add_epi64(u, q2), v), W, Wp, q));
        }
      }
    } else {
      for (std::size_t i = 0; i < h; ++i) {
        const u64 W = tb.iw[h + i], Wp = tb.iw52[h + i];
        u64* x = a + 2 * i * t;
        u64* y = x + t;
        for (std::size_t j = 0; j < t; ++j) {
          u64 u = x[j], v = y[j];
          u64 s = u + v;
          s -= (s >= q2s) ? q2s : 0;
          x[j] = s;
          y[j] = mul_lazy_s(u - v + q2s, W, Wp, qs);
        }
      }
    }
    t <<= 1;
  }
  const __m512i NI = _mm512_set1_epi64(tb.ninv), NIp = _mm512_set1_epi64(tb.ninv52);
  for (std::size_t j = 0; j < n; j += 8) {
    __m512i v = mul_lazy(_mm512_loadu_si512(a + j), NI, NIp, q);
    _mm512_storeu_si512(a + j, csub(v, q));
  }
  return true;
}

}  // namespace ifma
}  // namespace medtwin
#else
namespace medtwin {
namespace ifma {
bool forward(const NTTTables&, u64*) { return false; }
bool inverse(const NTTTables&, u64*) { return false; }
}  // namespace ifma
}  // namespace medtwin
#endif
