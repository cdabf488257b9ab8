#include "medtwin/rns.h"

#include "medtwin/rns_ifma.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace medtwin {

u64* scratch(std::size_t slot, std::size_t words) {
  thread_local std::vector<HugeVec> pool;
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

void copy_towers(const Ciphertext& ct, std::uint32_t T, Ciphertext& out) {
  if (T == 0 || T > ct.towers) throw std::invalid_argument("copy_towers: tower count out of range");
  if (&ct == &out) throw std::invalid_argument("copy_towers: output aliases the input");
  out.n = ct.n;
  out.resize(ct.elems, T);
  out.slots = ct.slots; out.level = ct.level + (ct.towers - T); out.hops = ct.hops; out.noise_deg = ct.noise_deg;
  out.scale = ct.scale; out.scheme_id = ct.scheme_id; out.encoding = ct.encoding; out.header = ct.header;
  out.key_tag = ct.key_tag;
  for (std::uint32_t e = 0; e < ct.elems; ++e)
    std::memcpy(out.poly(e, 0), ct.poly(e, 0), 8 * std::size_t(T) * ct.n);
}

namespace {
void rescale_core(const Context& ctx, const Ciphertext& in, const u64* k, const Ciphertext* y, Ciphertext& out);
}  // namespace

void rescale(const Context& ctx, const Ciphertext& in, Ciphertext& out) { rescale_scaled(ctx, in, nullptr, out); }

void rescale_scaled(const Context& ctx, const Ciphertext& in, const u64* k, Ciphertext& out) {
  rescale_core(ctx, in, k, nullptr, out);
}

void rescale_add(const Context& ctx, const Ciphertext& in, const u64* k, const Ciphertext& y, Ciphertext& out) {
  if (&y == &out) throw std::invalid_argument("rescale_add: the addend and the output must differ");
  rescale_core(ctx, in, k, &y, out);
}

void centre_tower(const Context& ctx, const u64* x, u64 ql, std::uint32_t i, u64* t) {
  const Modulus& mi = ctx.mod(i);
  const u64 qi = mi.q, half = ql >> 1;
  const std::uint32_t n = ctx.n();
  if (ifma::center_mod(t, x, n, qi, ql)) return;
  // branch-free: the sign test is data-dependent and unpredictable
  const u64 adj = qi - ql % qi;  // adding it subtracts ql (mod qi)
  if (ql < 2 * qi) {  // the usual case (moduli of similar size): one conditional subtraction
    for (std::uint32_t c = 0; c < n; ++c) {
      u64 v = x[c];
      u64 r = v >= qi ? v - qi : v;
      r += (v > half) ? adj : 0;
      t[c] = r >= qi ? r - qi : r;
    }
  } else {
    for (std::uint32_t c = 0; c < n; ++c) {
      u64 v = x[c];
      u64 r = barrett128(v, mi) + ((v > half) ? adj : 0);
      t[c] = r >= qi ? r - qi : r;
    }
  }
}

namespace {
void rescale_core(const Context& ctx, const Ciphertext& in, const u64* k, const Ciphertext* y, Ciphertext& out) {
  if (in.towers < 2) throw std::invalid_argument("cannot rescale a ciphertext with one tower");
  if (&in == &out) throw std::invalid_argument("rescale: input and output must differ");
  const std::uint32_t l = in.towers - 1, n = in.n, E = in.elems;
  const u64 ql = ctx.modulus(l);
  // with k: the rescale of the product k * in (noise degree + 1, scale * 2^p), i.e. in's own
  const std::uint32_t deg = in.noise_deg + (k ? 1 : 0);
  const std::uint32_t out_deg = deg > 0 ? deg - 1 : 0;
  if (y) {  // the checks of add_to(y, rescaled), which this op replaces
    if (y->n != n) throw std::invalid_argument("ciphertexts have different ring dimensions");
    if (y->key_tag != in.key_tag) throw std::invalid_argument("ciphertexts belong to different key pairs");
    if (y->noise_deg != out_deg) throw std::invalid_argument("ciphertexts have different noise-scale degrees (rescale first)");
    if (y->towers < l || y->elems != E)
      throw std::invalid_argument("rescale_add: the addend needs the rescaled value's elements and at least its towers");
  }
  out.n = n;
  out.resize(E, l);
  out.slots = in.slots; out.level = in.level + 1; out.hops = in.hops;
  out.noise_deg = out_deg;
  out.scale = k ? in.scale : in.scale / std::ldexp(1.0, static_cast<int>(ctx.params().scaling_mod_size));
  out.scheme_id = in.scheme_id; out.encoding = in.encoding; out.header = in.header; out.key_tag = in.key_tag;
  if (y) copy_meta_aligned(*y, l, out);  // add_to(y, .) gives the sum y's metadata
  u64* x = scratch(0, std::size_t(E) * n);
  const std::int64_t jobs = std::int64_t(E) * l;
#pragma omp parallel if (medtwin::parallel_worth(std::size_t(jobs) * n))
  {
#pragma omp for schedule(static)
    for (std::int64_t e = 0; e < E; ++e) {
      u64* xe = x + std::size_t(e) * n;
      ctx.ntt(l).inverse_mul_from(in.poly(static_cast<std::uint32_t>(e), l), xe, k ? k[l] : 1);
    }
#pragma omp for schedule(static)
    for (std::int64_t jb = 0; jb < jobs; ++jb) {
      const std::uint32_t e = static_cast<std::uint32_t>(jb / l), i = static_cast<std::uint32_t>(jb % l);
      const u64 qi = ctx.modulus(i);
      u64* t = scratch(1, n);
      const u64* xe = x + std::size_t(e) * n;
      const u64* add = y ? y->poly(e, i) : nullptr;
      if (ctx.ntt(i).forward_centred_sub_mul(t, xe, ql, in.poly(e, i), ctx.rescale_inv(l, i), out.poly(e, i),
                                             k ? k[i] : 1, add))
        continue;
      const u64* xi = in.poly(e, i);
      if (k) {  // the product's tower, in the output (forward_sub_mul's out may alias its x)
        mul_scalar_vec(out.poly(e, i), xi, k[i], n, qi);
        xi = out.poly(e, i);
      }
      centre_tower(ctx, xe, ql, i, t);
      ctx.ntt(i).forward_sub_mul(t, xi, ctx.rescale_inv(l, i), out.poly(e, i), add);
    }
  }
}
}  // namespace

bool rescale_sum(const Context& ctx, const Ciphertext& y, const std::vector<const Ciphertext*>& xs,
                 const std::vector<const u64*>& ks, Ciphertext& out) {
  const std::size_t m = xs.size();
  if (m < 2 || m > 64 || ks.size() != m || &y == &out) return false;
  const Ciphertext& x0 = *xs[0];
  const std::uint32_t T = x0.towers, n = x0.n, E = x0.elems;
  if (T < 2 || y.n != n || y.elems != E || y.towers + 1 < T || n % 8) return false;
  const std::uint32_t l = T - 1;
  const u64 ql = ctx.modulus(l), half = ql >> 1;
  // U = sum_t (centred(w_t) + ql) < m * 1.5 ql must stay below 2^52 (the vector reduction)
  if (static_cast<u128>(ql + half + 1) * m >= (u128(1) << 52)) return false;
  for (std::size_t t = 0; t < m; ++t) {
    const Ciphertext& x = *xs[t];
    if (&x == &out || x.towers != T || x.n != n || x.elems != E || x.key_tag != y.key_tag) return false;
    const std::uint32_t deg = x.noise_deg + (ks[t] ? 1 : 0);
    if ((deg > 0 ? deg - 1 : 0) != y.noise_deg) return false;
  }
  // the metadata each rescale_add of the chain gives: y's, its level aligned to the l towers
  Ciphertext r;
  copy_meta_aligned(y, l, r);
  r.resize(E, l);
  u64* U = scratch(13, std::size_t(E) * n);
  const std::int64_t jobs = std::int64_t(E) * l;
#pragma omp parallel if (medtwin::parallel_worth(std::size_t(jobs) * n))
  {
    // per element: each term's dropped tower back to coefficients (times its constant), summed
    // as centred(w) + ql (exact integers below 2^52)
#pragma omp for schedule(static)
    for (std::int64_t e = 0; e < E; ++e) {
      u64* ue = U + std::size_t(e) * n;
      u64* w = scratch(14, n);
      for (std::size_t t = 0; t < m; ++t) {
        ctx.ntt(l).inverse_mul_from(xs[t]->poly(static_cast<std::uint32_t>(e), l), w, ks[t] ? ks[t][l] : 1);
        if (t == 0)
          for (std::uint32_t c = 0; c < n; ++c) ue[c] = w[c] + (w[c] <= half ? ql : 0);
        else
          for (std::uint32_t c = 0; c < n; ++c) ue[c] += w[c] + (w[c] <= half ? ql : 0);
      }
    }
    // per tower: S = sum_t x_t k_t (exact accumulation), W = U - m ql mod q_i, one NTT:
    // out = (S - NTT(W)) q_l^-1 + y
#pragma omp for schedule(static)
    for (std::int64_t jb = 0; jb < jobs; ++jb) {
      const std::uint32_t e = static_cast<std::uint32_t>(jb / l), i = static_cast<std::uint32_t>(jb % l);
      const Modulus& mi = ctx.mod(i);
      const u64 q = mi.q;
      const u64* ins[64];
      u64 kk[64], kk52[64];
      u64* o = r.poly(e, i);
      const bool small = q < (u64(1) << 50);
      for (std::size_t t = 0; t < m; ++t) {
        ins[t] = xs[t]->poly(e, i);
        kk[t] = ks[t] ? ks[t][i] : 1;
        kk52[t] = small ? static_cast<u64>((static_cast<u128>(kk[t]) << 52) / q) : 0;
      }
      if (!(small && ifma::conv_small(ins, kk, kk52, m, q, o, n))) {
        for (std::uint32_t c = 0; c < n; ++c) {
          u128 s = 0;  // at most 64 products of residues below 2^60: below 2^126
          for (std::size_t t = 0; t < m; ++t) s += static_cast<u128>(ins[t][c]) * kk[t];
          o[c] = barrett128(s, mi);
        }
      }
      u64* wv = scratch(1, n);
      const u64* ue = U + std::size_t(e) * n;
      const u64 sub = mulmod(static_cast<u64>(m) % q, ql % q, mi);
      if (!ifma::reduce52_sub(wv, ue, n, q, sub))
        for (std::uint32_t c = 0; c < n; ++c) {
          const u64 v = ue[c] % q;
          wv[c] = v >= sub ? v - sub : v + q - sub;
        }
      ctx.ntt(i).forward_sub_mul(wv, o, ctx.rescale_inv(l, i), o, y.poly(e, i));
    }
  }
  out = std::move(r);
  return true;
}

void rescale_inplace(const Context& ctx, Ciphertext& ct) {
  Ciphertext r;
  rescale(ctx, ct, r);
  ct = std::move(r);
}

u64* modup_prepare(const Context& ctx, const u64* d, std::uint32_t T) {
  const std::uint32_t n = ctx.n(), a = ctx.params().alpha();
  u64* y = scratch(2, std::size_t(T) * n);
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(T) * n))
  for (std::int64_t i = 0; i < T; ++i) {
    const ModUpTable& tab = ctx.modup(T, static_cast<std::uint32_t>(i) / a);
    u64* yi = y + std::size_t(i) * n;
    ctx.ntt(i).inverse_mul_from(d + std::size_t(i) * n, yi, tab.qhat_inv[i - tab.begin]);
  }
  return y;
}

void modup_conv(const Context& ctx, const ModUpTable& tab, const u64* y, std::uint32_t idx, u64* out, std::size_t c0,
                std::size_t len) {
  const std::uint32_t n = ctx.n();
  std::size_t ti = 0;
  while (tab.targets[ti] != idx) ++ti;
  const std::uint32_t w = tab.end - tab.begin;
  const u64* qm = tab.qhat_mod.data() + ti * w;
  const Modulus& mm = ctx.mod(idx);
  const u64* ins[64];
  for (std::uint32_t i = 0; i < w; ++i) ins[i] = y + std::size_t(tab.begin + i) * n + c0;
  out += c0;
  bool small_in = true;  // every input modulus below 2^50 (inputs then fit the 52-bit products)
  for (std::uint32_t i = tab.begin; i < tab.end; ++i) small_in = small_in && ctx.modulus(i) < (u64(1) << 50);
  // 52-bit kernels need inputs below 2^52 too: a wide source tower (e.g. a 60-bit q0) into a small
  // target takes the 64-bit Shoup kernel, which accepts any input below 2^64.
  const bool done = (mm.q < (u64(1) << 50) && small_in)
                        ? ifma::conv_small(ins, qm, tab.qhat_mod52.data() + ti * w, w, mm.q, out, len)
                        : (small_in && ifma::conv_large52(ins, qm, w, mm.q, out, len)) ||
                              ifma::conv_large(ins, qm, tab.qhat_mod64.data() + ti * w, w, mm.q, out, len);
  if (!done) {
    for (std::size_t c = 0; c < len; ++c) {
      u128 s = 0;
      for (std::uint32_t i = 0; i < w; ++i) s += static_cast<u128>(ins[i][c]) * qm[i];
      out[c] = barrett128(s, mm);
    }
  }
}

void modup_target(const Context& ctx, const ModUpTable& tab, const u64* y, std::uint32_t idx, u64* out) {
  modup_conv(ctx, tab, y, idx, out, 0, ctx.n());
  ctx.ntt(idx).forward(out);
}

void modup_conv_blocks(const Context& ctx, const ModUpTable* const* tabs, std::uint32_t beta, const u64* y,
                       std::uint32_t T, u64* x) {
  const std::uint32_t n = ctx.n(), TK = T + ctx.num_p(), L1 = ctx.num_q();
  const std::int64_t blocks = static_cast<std::int64_t>((n + kConvBlock - 1) / kConvBlock);
#pragma omp for schedule(static)
  for (std::int64_t bl = 0; bl < blocks; ++bl) {
    const std::size_t c0 = std::size_t(bl) * kConvBlock, len = std::min<std::size_t>(kConvBlock, n - c0);
    for (std::uint32_t j = 0; j < beta; ++j)
      for (std::uint32_t m = 0; m < TK; ++m) {
        if (m < T && m >= tabs[j]->begin && m < tabs[j]->end) continue;  // the digit's own towers
        modup_conv(ctx, *tabs[j], y, m < T ? m : L1 + (m - T), x + (std::size_t(j) * TK + m) * n, c0, len);
      }
  }
}

void modup(const Context& ctx, const u64* d, std::uint32_t T, u64* ext) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), L1 = ctx.num_q();
  const std::uint32_t beta = ctx.num_digits(T), TK = T + K;
  const u64* y = modup_prepare(ctx, d, T);
  const ModUpTable* tabs[64];
  for (std::uint32_t j = 0; j < beta; ++j) tabs[j] = &ctx.modup(T, j);
  const std::int64_t jobs = std::int64_t(beta) * TK;
#pragma omp parallel if (medtwin::parallel_worth(std::size_t(jobs) * n))
  {
    // conversion blocked over coefficients (each digit's towers read once), then one NTT per tower
    modup_conv_blocks(ctx, tabs, beta, y, T, ext);
#pragma omp for schedule(dynamic)
    for (std::int64_t jb = 0; jb < jobs; ++jb) {
      const std::uint32_t j = static_cast<std::uint32_t>(jb / TK), m = static_cast<std::uint32_t>(jb % TK);
      u64* out = ext + (std::size_t(j) * TK + m) * n;
      if (m < T && m >= tabs[j]->begin && m < tabs[j]->end)
        std::memcpy(out, d + std::size_t(m) * n, 8 * std::size_t(n));
      else
        ctx.ntt(m < T ? m : L1 + (m - T)).forward(out);
    }
  }
}

namespace {
// [sum_k y_k [P/p_k]_(q_i)]_(q_i) on coefficients [c0, c0 + len), y_k = acc's P towers after the
// scaled INTT.
void moddown_conv(const Context& ctx, const u64* acc, std::uint32_t T, std::uint32_t i, u64* out, std::size_t c0,
                  std::size_t len) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p();
  const Modulus& mi = ctx.mod(i);
  u64 coef[64];
  const u64* ins[64];
  for (std::uint32_t k = 0; k < K; ++k) {
    coef[k] = ctx.phat_mod_q(k, i);
    ins[k] = acc + std::size_t(T + k) * n + c0;
  }
  out += c0;
  if (!ifma::conv_wide(ins, coef, K, mi.q, out, len)) {
    for (std::size_t c = 0; c < len; ++c) {
      u128 s = 0;
      for (std::uint32_t k = 0; k < K; ++k) s += static_cast<u128>(ins[k][c]) * coef[k];
      out[c] = barrett128(s, mi);
    }
  }
}
}  // namespace

void moddown_conv_blocks(const Context& ctx, u64* const* accs, std::uint32_t E, std::uint32_t T, u64* z) {
  const std::uint32_t n = ctx.n();
  const std::int64_t blocks = static_cast<std::int64_t>((n + kConvBlock - 1) / kConvBlock);
#pragma omp for schedule(static)
  for (std::int64_t bl = 0; bl < blocks; ++bl) {
    const std::size_t c0 = std::size_t(bl) * kConvBlock, len = std::min<std::size_t>(kConvBlock, n - c0);
    for (std::uint32_t e = 0; e < E; ++e)
      for (std::uint32_t i = 0; i < T; ++i) moddown_conv(ctx, accs[e], T, i, z + (std::size_t(e) * T + i) * n, c0, len);
  }
}

}  // namespace medtwin
