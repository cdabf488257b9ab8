#include "medtwin/rns.h"

#include "medtwin/rns_ifma.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

namespace medtwin {

u64* scratch(std::size_t slot, std::size_t words) {
  thread_local std::vector<std::vector<u64>> pool;
  if (pool.size() <= slot) pool.resize(slot + 1);
  if (pool[slot].size() < words) pool[slot].resize(words);
  return pool[slot].data();
}

void drop_towers(Ciphertext& ct, std::uint32_t k) {
  if (k == 0) return;
  if (k >= ct.towers) throw std::invalid_argument("cannot drop every tower of a ciphertext");
  const std::uint32_t T = ct.towers - k;
  const std::size_t n = ct.n;
  for (std::uint32_t e = 1; e < ct.elems; ++e)
    std::memmove(ct.data.data() + std::size_t(e) * T * n, ct.data.data() + std::size_t(e) * ct.towers * n, 8 * T * n);
  ct.towers = T;
  ct.data.resize(std::size_t(ct.elems) * T * n);
  ct.level += k;
}

void rescale_inplace(const Context& ctx, Ciphertext& ct) {
  if (ct.towers < 2) throw std::invalid_argument("cannot rescale a ciphertext with one tower");
  const std::uint32_t l = ct.towers - 1, n = ct.n;
  const u64 ql = ctx.modulus(l), half = ql >> 1;
  u64* x = scratch(0, std::size_t(ct.elems) * n);
  for (std::uint32_t e = 0; e < ct.elems; ++e) {
    std::memcpy(x + std::size_t(e) * n, ct.poly(e, l), 8 * std::size_t(n));
  }
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(ct.elems) * n))
  for (std::int64_t e = 0; e < ct.elems; ++e) ctx.ntt(l).inverse(x + std::size_t(e) * n);
  const std::int64_t jobs = std::int64_t(ct.elems) * l;
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(jobs) * n))
  for (std::int64_t jb = 0; jb < jobs; ++jb) {
    const std::uint32_t e = static_cast<std::uint32_t>(jb / l), i = static_cast<std::uint32_t>(jb % l);
    const Modulus& mi = ctx.mod(i);
    const u64 qi = mi.q, qlmod = ql % qi;
    u64* t = scratch(1, n);
    const u64* xe = x + std::size_t(e) * n;
    if (ql < 2 * qi) {  // the usual case (moduli of similar size): one conditional subtraction
      for (std::uint32_t c = 0; c < n; ++c) {
        u64 v = xe[c];
        u64 r = v >= qi ? v - qi : v;
        u64 adj = v > half ? qlmod : 0;
        t[c] = r >= adj ? r - adj : r + qi - adj;
      }
    } else {
      for (std::uint32_t c = 0; c < n; ++c) {
        u64 v = xe[c];
        u64 r = barrett128(v, mi);
        if (v > half) r = submod(r, qlmod, qi);
        t[c] = r;
      }
    }
    ctx.ntt(i).forward(t);
    const u64 w = ctx.rescale_inv(l, i), wp = ctx.rescale_inv_p(l, i);
    u64* c = ct.poly(e, i);
    for (std::uint32_t k = 0; k < n; ++k) c[k] = mul_shoup(c[k] + qi - t[k], w, wp, qi);
  }
  drop_towers(ct, 1);
  ct.noise_deg = ct.noise_deg > 0 ? ct.noise_deg - 1 : 0;
  ct.scale /= std::ldexp(1.0, static_cast<int>(ctx.params().scaling_mod_size));
}

void modup(const Context& ctx, const u64* d, std::uint32_t T, u64* ext) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), a = ctx.params().alpha();
  const std::uint32_t beta = ctx.num_digits(T), TK = T + K;
  u64* y = scratch(2, std::size_t(T) * n);
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(T) * n))
  for (std::int64_t i = 0; i < T; ++i) {
    const ModUpTable& tab = ctx.modup(T, static_cast<std::uint32_t>(i) / a);
    u64* yi = y + std::size_t(i) * n;
    std::memcpy(yi, d + std::size_t(i) * n, 8 * std::size_t(n));
    ctx.ntt(i).inverse(yi);
    const u64 w = tab.qhat_inv[i - tab.begin], wp = tab.qhat_inv_p[i - tab.begin], q = ctx.modulus(i);
    for (std::uint32_t c = 0; c < n; ++c) yi[c] = mul_shoup(yi[c], w, wp, q);
  }
  const std::int64_t jobs = std::int64_t(beta) * TK;
#pragma omp parallel for schedule(dynamic) if (medtwin::parallel_worth(std::size_t(jobs) * n))
  for (std::int64_t jb = 0; jb < jobs; ++jb) {
    const std::uint32_t j = static_cast<std::uint32_t>(jb / TK), m = static_cast<std::uint32_t>(jb % TK);
    const ModUpTable& tab = ctx.modup(T, j);
    u64* out = ext + (std::size_t(j) * TK + m) * n;
    if (m < T && m >= tab.begin && m < tab.end) {
      std::memcpy(out, d + std::size_t(m) * n, 8 * std::size_t(n));
      continue;
    }
    const std::uint32_t idx = m < T ? m : ctx.num_q() + (m - T);
    std::size_t ti = 0;
    while (tab.targets[ti] != idx) ++ti;
    const std::uint32_t w = tab.end - tab.begin;
    const u64* qm = tab.qhat_mod.data() + ti * w;
    const Modulus& mm = ctx.mod(idx);
    const u64* ins[64];
    for (std::uint32_t i = 0; i < w; ++i) ins[i] = y + std::size_t(tab.begin + i) * n;
    const bool done = mm.q < (u64(1) << 50) ? ifma::conv_small(ins, qm, tab.qhat_mod52.data() + ti * w, w, mm.q, out, n)
                                            : ifma::conv_large(ins, qm, tab.qhat_mod64.data() + ti * w, w, mm.q, out, n);
    if (!done) {
      for (std::uint32_t c = 0; c < n; ++c) {
        u128 s = 0;
        for (std::uint32_t i = 0; i < w; ++i) s += static_cast<u128>(ins[i][c]) * qm[i];
        out[c] = barrett128(s, mm);
      }
    }
    ctx.ntt(idx).forward(out);
  }
}

void moddown(const Context& ctx, u64* acc, std::uint32_t T, u64* out, const u64* add) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), L1 = ctx.num_q();
  if (K > 64) throw std::invalid_argument("more than 64 P moduli");
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(K) * n))
  for (std::int64_t k = 0; k < K; ++k) {
    u64* yk = acc + std::size_t(T + k) * n;
    const std::uint32_t idx = L1 + static_cast<std::uint32_t>(k);
    ctx.ntt(idx).inverse(yk);
    const u64 w = ctx.phat_inv()[k], wp = ctx.phat_inv_p()[k], p = ctx.modulus(idx);
    for (std::uint32_t c = 0; c < n; ++c) yk[c] = mul_shoup(yk[c], w, wp, p);
  }
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(T) * n))
  for (std::int64_t i = 0; i < T; ++i) {
    u64* t = scratch(1, n);
    const Modulus& mi = ctx.mod(i);
    const u64 qi = mi.q;
    u64 coef[64], c52[64], ch[64], ch52[64];
    const u64* ins[64];
    for (std::uint32_t k = 0; k < K; ++k) {
      const std::size_t ix = std::size_t(k) * L1 + i;
      coef[k] = ctx.phat_mod_q(k, i);
      c52[k] = ctx.phat_mod_q52()[ix];
      ch[k] = ctx.phat_mod_q_hi()[ix];
      ch52[k] = ctx.phat_mod_q_hi52()[ix];
      ins[k] = acc + std::size_t(T + k) * n;
    }
    if (!ifma::conv_wide(ins, coef, c52, ch, ch52, K, qi, t, n)) {
      for (std::uint32_t c = 0; c < n; ++c) {
        u128 s = 0;
        for (std::uint32_t k = 0; k < K; ++k) s += static_cast<u128>(ins[k][c]) * coef[k];
        t[c] = barrett128(s, mi);
      }
    }
    ctx.ntt(i).forward(t);
    const u64 w = ctx.pinv_mod_q(i), wp = ctx.pinv_mod_q_p(i);
    const u64* ai = acc + std::size_t(i) * n;
    u64* oi = out + std::size_t(i) * n;
    if (add) {
      const u64* di = add + std::size_t(i) * n;
      for (std::uint32_t c = 0; c < n; ++c) oi[c] = addmod(mul_shoup(ai[c] + qi - t[c], w, wp, qi), di[c], qi);
    } else {
      for (std::uint32_t c = 0; c < n; ++c) oi[c] = mul_shoup(ai[c] + qi - t[c], w, wp, qi);
    }
  }
}

}  // namespace medtwin
