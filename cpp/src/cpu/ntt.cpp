#include "medtwin/ntt.h"

#include <cstring>
#include <stdexcept>

namespace medtwin {

NTTTables::NTTTables(std::size_t n, u64 q, u64 psi) : n_(n), q_(q), psi_(psi), mod_(q) {
  if (n < 2 || (n & (n - 1))) throw std::invalid_argument("NTT size must be a power of two");
  if (q >= (u64(1) << 62)) throw std::invalid_argument("NTT modulus must be below 2^62");
  logn_ = 0;
  while ((std::size_t(1) << logn_) < n) ++logn_;
  if (powmod(psi, n, q) != q - 1) throw std::invalid_argument("root is not a primitive 2N-th root of unity");
  u64 ipsi = invmod(psi, q);
  w.resize(n); wp.resize(n); iw.resize(n); iwp.resize(n);
  u64 pw = 1, ipw = 1;
  std::vector<u64> pows(n), ipows(n);
  for (std::size_t i = 0; i < n; ++i) { pows[i] = pw; ipows[i] = ipw; pw = mulmod(pw, psi, mod_); ipw = mulmod(ipw, ipsi, mod_); }
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t r = bitrev(i, logn_);
    w[i] = pows[r]; wp[i] = shoup(w[i], q);
    iw[i] = ipows[r]; iwp[i] = shoup(iw[i], q);
  }
  ninv = invmod(static_cast<u64>(n % q), q);
  ninvp = shoup(ninv, q);
  if (q < (u64(1) << 50)) {
    w52.resize(n); iw52.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      w52[i] = static_cast<u64>((static_cast<u128>(w[i]) << 52) / q);
      iw52[i] = static_cast<u64>((static_cast<u128>(iw[i]) << 52) / q);
    }
    ninv52 = static_cast<u64>((static_cast<u128>(ninv) << 52) / q);
  }
}

namespace {
NTTEpilogue make_epilogue(const NTTTables& t, u64 mult) {
  NTTEpilogue ep;
  ep.w = mult;
  ep.w_shoup = shoup(mult, t.q());
  if (t.q() < (u64(1) << 50)) ep.w52 = static_cast<u64>((static_cast<u128>(mult) << 52) / t.q());
  return ep;
}
}  // namespace

void NTTTables::forward(u64* a) const { forward_sub_mul(a, nullptr, 0, nullptr, nullptr); }

void NTTTables::forward_sub_mul(u64* a, const u64* x, u64 mult, u64* out, const u64* add,
                                const std::uint32_t* perm) const {
  NTTEpilogue ep;
  if (x) {
    ep = make_epilogue(*this, mult);
    ep.x = x; ep.out = out; ep.add = add; ep.perm = perm;
  }
  if (ifma_enabled() && ifma::forward(*this, a, x ? &ep : nullptr)) return;
  const u64 q = q_, q2 = 2 * q_;
  std::size_t t = n_;
  for (std::size_t m = 1; m < n_; m <<= 1) {
    t >>= 1;
    for (std::size_t i = 0; i < m; ++i) {
      const u64 W = w[m + i], Wp = wp[m + i];
      u64* px = a + 2 * i * t;
      u64* py = px + t;
      for (std::size_t j = 0; j < t; ++j) {
        u64 u = px[j];
        u -= (u >= q2) ? q2 : 0;
        u64 v = mul_shoup_lazy(py[j], W, Wp, q);
        px[j] = u + v;
        py[j] = u - v + q2;
      }
    }
  }
  if (!x) {
    for (std::size_t j = 0; j < n_; ++j) {
      u64 v = a[j];
      v -= (v >= q2) ? q2 : 0;
      v -= (v >= q) ? q : 0;
      a[j] = v;
    }
    return;
  }
  for (std::size_t j = 0; j < n_; ++j) {
    u64 v = a[j];
    v -= (v >= q2) ? q2 : 0;
    v -= (v >= q) ? q : 0;
    const std::size_t s = perm ? perm[j] : j;
    u64 r = mul_shoup(x[s] + q - v, ep.w, ep.w_shoup, q);
    if (add) r = addmod(r, add[s], q);
    out[j] = r;
  }
}

void NTTTables::inverse(u64* a) const { inverse_mul(a, 1); }

bool NTTTables::forward_centred_sub_mul(u64* a, const u64* src, u64 ql, const u64* x, u64 mult, u64* out,
                                        u64 xw, const u64* add) const {
  if (!ifma_enabled() || ql >= 2 * q_) return false;
  NTTEpilogue ep = make_epilogue(*this, mult);
  ep.x = x; ep.out = out; ep.centre_src = src; ep.centre_ql = ql; ep.add = add;
  if (xw != 1) {
    const NTTEpilogue m = make_epilogue(*this, xw);
    ep.x_mul = true; ep.xw = m.w; ep.xw_shoup = m.w_shoup; ep.xw52 = m.w52;
  }
  return ifma::forward(*this, a, &ep);
}

bool NTTTables::centred_vector_path(u64 ql) const {
  // the IFMA forward's centring prologue: 52-bit products, a radix-4 first pass over n/2 > 2048
  return ifma_enabled() && ql < 2 * q_ && q_ < (u64(1) << 50) && !w52.empty() && n_ / 2 > 2048;
}

bool NTTTables::forward_centred_add_sub_mul(u64* a, const u64* src, u64 ql, u64 sm, const u64* x, u64 w, u64* out,
                                            const u64* add, u64 aw, const u64* add2) const {
  if (!centred_vector_path(ql)) return false;
  NTTEpilogue ep = make_epilogue(*this, w);
  ep.x = x; ep.out = out; ep.centre_src = src; ep.centre_ql = ql; ep.add = add; ep.add2 = add2;
  const NTTEpilogue s = make_epilogue(*this, sm % q_);
  ep.centre_mul = true; ep.cm = s.w; ep.cm52 = s.w52;
  const NTTEpilogue m = make_epilogue(*this, aw % q_);
  ep.add_mul = true; ep.aw = m.w; ep.aw_shoup = m.w_shoup; ep.aw52 = m.w52;
  return ifma::forward(*this, a, &ep);
}

void NTTTables::inverse_mul(u64* a, u64 mult) const { inverse_mul_from(a, a, mult); }

void NTTTables::inverse_mul_from(const u64* src, u64* a, u64 mult) const {
  NTTEpilogue ep;
  const bool scaled = mult != 1;
  if (scaled) ep = make_epilogue(*this, mulmod(ninv, mult % q_, mod_));
  if (ifma_enabled() && ifma::inverse(*this, a, scaled ? &ep : nullptr, src)) return;
  if (src != a) std::memcpy(a, src, 8 * n_);
  const u64 q = q_, q2 = 2 * q_;
  std::size_t t = 1;
  for (std::size_t m = n_; m > 1; m >>= 1) {
    std::size_t h = m >> 1;
    for (std::size_t i = 0; i < h; ++i) {
      const u64 W = iw[h + i], Wp = iwp[h + i];
      u64* x = a + 2 * i * t;
      u64* y = x + t;
      for (std::size_t j = 0; j < t; ++j) {
        u64 u = x[j], v = y[j];
        u64 s = u + v;
        s -= (s >= q2) ? q2 : 0;
        x[j] = s;
        y[j] = mul_shoup_lazy(u - v + q2, W, Wp, q);
      }
    }
    t <<= 1;
  }
  const u64 c = scaled ? ep.w : ninv, cp = scaled ? ep.w_shoup : ninvp;
  for (std::size_t j = 0; j < n_; ++j) a[j] = mul_shoup(a[j], c, cp, q);
}

}  // namespace medtwin
