#include "medtwin/keyswitch.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "medtwin/rns.h"
#include "medtwin/rns_ifma.h"

namespace medtwin {

u64 rotation_index(std::uint32_t n, std::int64_t r) {
  const std::int64_t h = n / 2;
  std::int64_t e = ((r % h) + h) % h;
  return powmod(5, static_cast<u64>(e), 2 * u64(n));
}

void apply_automorphism(const std::vector<std::uint32_t>& perm, const u64* in, u64* out) {
  const std::size_t n = perm.size();
  for (std::size_t j = 0; j < n; ++j) out[j] = in[perm[j]];
}

void prepare_switch_key(const Context& ctx, SwitchKey& key) {
  const std::uint32_t n = key.n;
  if (!key.mont_tower.empty()) throw std::logic_error("switch key prepared twice");
  key.mont_tower.assign(key.towers, -1);
  key.mont_inv.assign(key.towers, 0);
  key.mont_count = 0;
  if (!cpu_has_ifma()) return;
  for (std::uint32_t t = 0; t < key.towers; ++t) {  // key tower t: Q towers then P towers, as in the context
    const u64 q = ctx.modulus(t);
    if (q < (u64(1) << 50)) {
      key.mont_tower[t] = static_cast<std::int32_t>(key.mont_count++);
      // 2^-52 mod q = (2^52 mod q)^(q-2) mod q (q prime)
      const Modulus& m = ctx.mod(t);
      u64 base = static_cast<u64>((u128(1) << 52) % q), r = 1;
      for (u64 e = q - 2; e; e >>= 1, base = mulmod(base, base, m))
        if (e & 1) r = mulmod(r, base, m);
      key.mont_inv[t] = r;
    }
  }
  const std::int64_t jobs = std::int64_t(key.digits) * key.towers;
#pragma omp parallel for schedule(dynamic) if (medtwin::parallel_worth(std::size_t(jobs) * n))
  for (std::int64_t jb = 0; jb < jobs; ++jb) {
    const std::uint32_t j = static_cast<std::uint32_t>(jb / key.towers), t = static_cast<std::uint32_t>(jb % key.towers);
    if (key.mont_tower[t] < 0) continue;
    const u64 q = ctx.modulus(t);
    u64* sa = key.a.data() + (std::size_t(j) * key.towers + t) * n;
    u64* sb = key.b.data() + (std::size_t(j) * key.towers + t) * n;
    // in place: x -> x 2^52 mod q (Shoup multiplication by 2^52 mod q)
    const u64 r = static_cast<u64>((u128(1) << 52) % q), rp = shoup(r, q);
    for (std::uint32_t c = 0; c < n; ++c) {
      sa[c] = mul_shoup(sa[c], r, rp, q);
      sb[c] = mul_shoup(sb[c], r, rp, q);
    }
  }
}

namespace {
// acc0[m] = sum_j e[j] * b_j, acc1[m] = sum_j e[j] * a_j for one tower m (context index idx).
void inner_tower(const Context& ctx, const SwitchKey& key, std::uint32_t beta, std::uint32_t idx, const u64* const* e,
                 u64* o0, u64* o1) {
  const std::uint32_t n = ctx.n();
  const Modulus& mm = ctx.mod(idx);
  const u64* b[64];
  const u64* a[64];
  for (std::uint32_t j = 0; j < beta; ++j) {
    b[j] = key.b_poly(j, idx);
    a[j] = key.a_poly(j, idx);
  }
  const bool mont = !key.mont_tower.empty() && key.mont_tower[idx] >= 0;
  if (mont && ifma::inner_mont(e, b, a, beta, mm.q, ctx.mont_neg_inv(idx), o0, o1, n)) return;
  if (!mont && ifma::inner_wide(e, b, a, beta, mm.q, o0, o1, n)) return;
  // accumulate beta products in 128 bits, reduce once (beta * 2^122 < 2^128 for beta <= 32)
  for (std::uint32_t c = 0; c < n; ++c) {
    u128 s0 = 0, s1 = 0;
    for (std::uint32_t j = 0; j < beta; ++j) {
      s0 += static_cast<u128>(e[j][c]) * b[j][c];
      s1 += static_cast<u128>(e[j][c]) * a[j][c];
    }
    o0[c] = barrett128(s0, mm);
    o1[c] = barrett128(s1, mm);
  }
  if (mont) {  // the key is in Montgomery form (x 2^52): undo it (IFMA switched off at run time)
    const u64 r = key.mont_inv[idx], rp = shoup(r, mm.q);
    for (std::uint32_t c = 0; c < n; ++c) {
      o0[c] = mul_shoup(o0[c], r, rp, mm.q);
      o1[c] = mul_shoup(o1[c], r, rp, mm.q);
    }
  }
}
}  // namespace

void key_inner(const Context& ctx, const u64* ext, std::uint32_t T, const SwitchKey& key, u64* acc0, u64* acc1) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), TK = T + K, L1 = ctx.num_q();
  const std::uint32_t beta = ctx.num_digits(T);
  if (key.towers != L1 + K || key.digits < beta) throw std::invalid_argument("key does not match the context");
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(TK) * n))
  for (std::int64_t m = 0; m < TK; ++m) {
    const std::uint32_t idx = m < T ? static_cast<std::uint32_t>(m) : L1 + static_cast<std::uint32_t>(m - T);
    const u64* e[64];
    for (std::uint32_t j = 0; j < beta; ++j) e[j] = ext + (std::size_t(j) * TK + m) * n;
    inner_tower(ctx, key, beta, idx, e, acc0 + std::size_t(m) * n, acc1 + std::size_t(m) * n);
  }
}

void modup_inner(const Context& ctx, const u64* d, std::uint32_t T, const SwitchKey& key, u64* acc0, u64* acc1) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), TK = T + K, L1 = ctx.num_q();
  const std::uint32_t beta = ctx.num_digits(T);
  if (key.towers != L1 + K || key.digits < beta) throw std::invalid_argument("key does not match the context");
  const u64* y = modup_prepare(ctx, d, T);
  const ModUpTable* tabs[64];
  for (std::uint32_t j = 0; j < beta; ++j) tabs[j] = &ctx.modup(T, j);
  // Basis conversion of every digit to every other modulus, blocked over coefficients so that
  // each digit's INTT towers are read once (not once per target): into x[j][m].
  u64* x = scratch(3, std::size_t(beta) * TK * n);
  const bool par = medtwin::parallel_worth(std::size_t(TK) * n);
#pragma omp parallel if (par)
  {
    modup_conv_blocks(ctx, tabs, beta, y, T, x);
    // Per target tower: NTT of its converted digits (in L2), then the inner product with the key.
    // P towers first (the costliest jobs), so that dynamic scheduling ends balanced.
#pragma omp for schedule(dynamic)
    for (std::int64_t jb = 0; jb < TK; ++jb) {
      const std::uint32_t m = jb < K ? T + static_cast<std::uint32_t>(jb) : static_cast<std::uint32_t>(jb - K);
      const std::uint32_t idx = m < T ? m : L1 + (m - T);
      const u64* e[64];
      for (std::uint32_t j = 0; j < beta; ++j) {
        if (m < T && m >= tabs[j]->begin && m < tabs[j]->end) {
          e[j] = d + std::size_t(m) * n;  // the digit's own tower: D_j = d
        } else {
          u64* out = x + (std::size_t(j) * TK + m) * n;
          ctx.ntt(idx).forward(out);
          e[j] = out;
        }
      }
      inner_tower(ctx, key, beta, idx, e, acc0 + std::size_t(m) * n, acc1 + std::size_t(m) * n);
    }
  }
}

namespace {
void check_keys(const Context& ctx, std::uint32_t T) {
  if (ctx.num_p() == 0) throw std::invalid_argument("the context has no P moduli (no evaluation key loaded)");
  if (ctx.num_digits(T) > 32) throw std::invalid_argument("more than 32 key-switching digits");
}
}  // namespace

namespace {
// (c0, c1) += ModDown(ModUp(d2) . key) in place: the key switch of relinearisation, shared by
// relinearize_inplace and mul_relin. MEDTWIN_PROFILE=1 prints its two phases.
void relin_into(const Context& ctx, const u64* d2, std::uint32_t T, const SwitchKey& key, u64* c0, u64* c1) {
  const std::size_t TK = std::size_t(T) + ctx.num_p(), n = ctx.n();
  check_keys(ctx, T);
  u64* acc0 = scratch(4, TK * n);
  u64* acc1 = scratch(5, TK * n);
  static const bool prof = std::getenv("MEDTWIN_PROFILE") != nullptr;
  auto ms = []() { timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6; };
  const double t0 = prof ? ms() : 0.0;
  modup_inner(ctx, d2, T, key, acc0, acc1);
  const double t1 = prof ? ms() : 0.0;
  moddown2(ctx, T, acc0, c0, c0, acc1, c1, c1);
  if (prof) std::fprintf(stderr, "relin T=%u wall-ms modup+inner %.2f moddown %.2f\n", T, t1 - t0, ms() - t1);
}
}  // namespace

void relinearize_inplace(const Context& ctx, Ciphertext& ct, const SwitchKey& key) {
  if (ct.elems != 3) throw std::invalid_argument("relinearisation needs a three-element ciphertext");
  const std::uint32_t T = ct.towers;
  relin_into(ctx, ct.poly(2, 0), T, key, ct.poly(0, 0), ct.poly(1, 0));
  ct.elems = 2;
  ct.data.resize(std::size_t(2) * T * ct.n);
}

void mul_relin(const Context& ctx, const Ciphertext& a, const Ciphertext& b, const SwitchKey& key, Ciphertext& out) {
  const std::uint32_t T = std::min(a.towers, b.towers);
  check_keys(ctx, T);  // before the tensor product: no work for a context without evaluation keys
  u64* d2 = scratch(7, std::size_t(T) * a.n);
  tensor_split(ctx, a, b, out, d2);
  relin_into(ctx, d2, T, key, out.poly(0, 0), out.poly(1, 0));
}

void mul_relin_rescale(const Context& ctx, const Ciphertext& a, const Ciphertext& b, const SwitchKey& key,
                       Ciphertext& out, const Ciphertext* y) {
  const std::uint32_t T = std::min(a.towers, b.towers), n = a.n;
  check_keys(ctx, T);
  if (T < 2) throw std::invalid_argument("cannot rescale a ciphertext with one tower");
  if (&out == &a || &out == &b || &out == y) throw std::invalid_argument("mul_relin_rescale: the output aliases an input");
  if (y && (y->n != n || y->towers + 1 < T || y->elems != 2)) {
    // an addend the fused form does not take (below the level, three elements): add_to aligns
    // the levels or refuses, as the separate ops do
    Ciphertext t;
    mul_relin_rescale(ctx, a, b, key, t, nullptr);
    add_to(ctx, *y, t, out);
    return;
  }
  // the product's c0, c1 in per-thread memory (the result has one tower fewer, written once)
  thread_local Ciphertext prod;
  u64* d2 = scratch(7, std::size_t(T) * n);
  tensor_split(ctx, a, b, prod, d2);
  const std::uint32_t l = T - 1, out_deg = prod.noise_deg > 0 ? prod.noise_deg - 1 : 0;
  if (y) {  // the checks of add_to(y, rescaled), which this op replaces (as rescale_add)
    if (y->key_tag != prod.key_tag) throw std::invalid_argument("ciphertexts belong to different key pairs");
    if (y->noise_deg != out_deg)
      throw std::invalid_argument("ciphertexts have different noise-scale degrees (rescale first)");
  }
  u64* acc0 = scratch(4, std::size_t(T + ctx.num_p()) * n);
  u64* acc1 = scratch(5, std::size_t(T + ctx.num_p()) * n);
  modup_inner(ctx, d2, T, key, acc0, acc1);
  out.n = n;
  out.resize(2, l);
  // metadata: mul_relin's, then the rescale's (rescale_core), or y's for the sum
  out.slots = prod.slots; out.level = prod.level + 1; out.hops = prod.hops; out.noise_deg = out_deg;
  out.scale = prod.scale / std::ldexp(1.0, static_cast<int>(ctx.params().scaling_mod_size));
  out.scheme_id = prod.scheme_id; out.encoding = prod.encoding; out.header = prod.header; out.key_tag = prod.key_tag;
  if (y) {
    out.slots = y->slots; out.level = y->level + (y->towers - l); out.hops = y->hops; out.noise_deg = y->noise_deg;
    out.scale = y->scale; out.scheme_id = y->scheme_id; out.encoding = y->encoding; out.header = y->header;
    out.key_tag = y->key_tag;
  }
  moddown_rescale2(ctx, T, acc0, acc1, prod.poly(0, 0), prod.poly(1, 0), out.poly(0, 0), out.poly(1, 0),
                   y ? y->poly(0, 0) : nullptr, y ? y->poly(1, 0) : nullptr);
}

namespace {
void finish_rotation(const Context& ctx, const Ciphertext& in, u64 k, u64* acc0, u64* acc1, Ciphertext& out) {
  const std::uint32_t T = in.towers, n = in.n, K = ctx.num_p();
  const auto& perm = ctx.automorphism(k);
  // sigma_k on the P towers before ModDown (as OpenFHE 1.6.1 does); the Q towers of the
  // accumulators and c0 are read permuted inside ModDown's last pass instead of copied here.
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(2 * K) * n))
  for (std::int64_t jb = 0; jb < std::int64_t(2) * K; ++jb) {
    u64* p = (jb < K ? acc0 : acc1) + std::size_t(T + jb % K) * n;
    u64* tmp = scratch(6, n);
    apply_automorphism(perm, p, tmp);
    std::memcpy(p, tmp, 8 * std::size_t(n));
  }
  out.n = in.n;
  out.resize(2, T);
  out.slots = in.slots; out.level = in.level; out.hops = in.hops; out.noise_deg = in.noise_deg;
  out.scale = in.scale; out.scheme_id = in.scheme_id; out.encoding = in.encoding;
  out.header = in.header; out.key_tag = in.key_tag;
  moddown2(ctx, T, acc0, out.poly(0, 0), in.poly(0, 0), acc1, out.poly(1, 0), nullptr, perm.data());
}
}  // namespace

void rotate(const Context& ctx, const Ciphertext& in, u64 k, const SwitchKey& key, Ciphertext& out) {
  if (in.elems != 2) throw std::invalid_argument("rotation needs a two-element ciphertext");
  const std::uint32_t T = in.towers, n = in.n, K = ctx.num_p(), TK = T + K;
  check_keys(ctx, T);
  u64* acc0 = scratch(4, std::size_t(TK) * n);
  u64* acc1 = scratch(5, std::size_t(TK) * n);
  modup_inner(ctx, in.poly(1, 0), T, key, acc0, acc1);
  finish_rotation(ctx, in, k, acc0, acc1, out);
}

void rotate_hoisted(const Context& ctx, const Ciphertext& in, const std::vector<u64>& ks,
                    const std::vector<const SwitchKey*>& keys, std::vector<Ciphertext>& outs) {
  if (in.elems != 2) throw std::invalid_argument("rotation needs a two-element ciphertext");
  if (ks.size() != keys.size()) throw std::invalid_argument("one key per rotation is needed");
  const std::uint32_t T = in.towers, n = in.n, K = ctx.num_p(), TK = T + K;
  check_keys(ctx, T);
  const std::uint32_t beta = ctx.num_digits(T);
  u64* ext = scratch(3, std::size_t(beta) * TK * n);
  u64* acc0 = scratch(4, std::size_t(TK) * n);
  u64* acc1 = scratch(5, std::size_t(TK) * n);
  modup(ctx, in.poly(1, 0), T, ext);
  outs.resize(ks.size());
  for (std::size_t r = 0; r < ks.size(); ++r) {
    key_inner(ctx, ext, T, *keys[r], acc0, acc1);
    finish_rotation(ctx, in, ks[r], acc0, acc1, outs[r]);
  }
}

}  // namespace medtwin
