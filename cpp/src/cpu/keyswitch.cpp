#include "medtwin/keyswitch.h"

#include <chrono>
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
  if (!cpu_has_ifma()) return;
  const std::uint32_t n = key.n, L1 = ctx.num_q();
  key.mont_tower.assign(key.towers, -1);
  key.mont_count = 0;
  for (std::uint32_t t = 0; t < key.towers; ++t) {
    const std::size_t idx = t;  // key tower t: Q towers then P towers, as in the context
    if (ctx.modulus(idx) < (u64(1) << 50)) key.mont_tower[t] = static_cast<std::int32_t>(key.mont_count++);
  }
  (void)L1;
  key.a_mont.resize(std::size_t(key.digits) * key.mont_count * n);
  key.b_mont.resize(std::size_t(key.digits) * key.mont_count * n);
  for (std::uint32_t j = 0; j < key.digits; ++j) {
    for (std::uint32_t t = 0; t < key.towers; ++t) {
      const std::int32_t mt = key.mont_tower[t];
      if (mt < 0) continue;
      const u64 q = ctx.modulus(t);
      const u64* sa = key.a_poly(j, t);
      const u64* sb = key.b_poly(j, t);
      u64* da = key.a_mont.data() + (std::size_t(j) * key.mont_count + mt) * n;
      u64* db = key.b_mont.data() + (std::size_t(j) * key.mont_count + mt) * n;
      for (std::uint32_t c = 0; c < n; ++c) {
        da[c] = static_cast<u64>((static_cast<u128>(sa[c]) << 52) % q);
        db[c] = static_cast<u64>((static_cast<u128>(sb[c]) << 52) % q);
      }
    }
  }
}

void key_inner(const Context& ctx, const u64* ext, std::uint32_t T, const SwitchKey& key, u64* acc0, u64* acc1) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), TK = T + K, L1 = ctx.num_q();
  const std::uint32_t beta = ctx.num_digits(T);
  if (key.towers != L1 + K || key.digits < beta) throw std::invalid_argument("key does not match the context");
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(TK) * n))
  for (std::int64_t m = 0; m < TK; ++m) {
    const std::uint32_t idx = m < T ? static_cast<std::uint32_t>(m) : L1 + static_cast<std::uint32_t>(m - T);
    const Modulus& mm = ctx.mod(idx);
    u64* o0 = acc0 + std::size_t(m) * n;
    u64* o1 = acc1 + std::size_t(m) * n;
    // accumulate beta products in 128 bits, reduce once (beta * 2^122 < 2^128 for beta <= 32)
    const u64* e[64];
    const u64* b[64];
    const u64* a[64];
    for (std::uint32_t j = 0; j < beta; ++j) {
      e[j] = ext + (std::size_t(j) * TK + m) * n;
      b[j] = key.b_poly(j, idx);
      a[j] = key.a_poly(j, idx);
    }
    if (!key.mont_tower.empty() && key.mont_tower[idx] >= 0) {
      const u64* bm[64];
      const u64* am[64];
      const std::size_t mt = static_cast<std::size_t>(key.mont_tower[idx]);
      for (std::uint32_t j = 0; j < beta; ++j) {
        bm[j] = key.b_mont.data() + (std::size_t(j) * key.mont_count + mt) * n;
        am[j] = key.a_mont.data() + (std::size_t(j) * key.mont_count + mt) * n;
      }
      if (ifma::inner_mont(e, bm, am, beta, mm.q, ctx.mont_neg_inv(idx), o0, o1, n)) continue;
    }
    for (std::uint32_t c = 0; c < n; ++c) {
      u128 s0 = 0, s1 = 0;
      for (std::uint32_t j = 0; j < beta; ++j) {
        s0 += static_cast<u128>(e[j][c]) * b[j][c];
        s1 += static_cast<u128>(e[j][c]) * a[j][c];
      }
      o0[c] = barrett128(s0, mm);
      o1[c] = barrett128(s1, mm);
    }
  }
}

namespace {
void check_keys(const Context& ctx, std::uint32_t T) {
  if (ctx.num_p() == 0) throw std::invalid_argument("the context has no P moduli (no evaluation key loaded)");
  if (ctx.num_digits(T) > 32) throw std::invalid_argument("more than 32 key-switching digits");
}
}  // namespace

void relinearize_inplace(const Context& ctx, Ciphertext& ct, const SwitchKey& key) {
  if (ct.elems != 3) throw std::invalid_argument("relinearisation needs a three-element ciphertext");
  const std::uint32_t T = ct.towers, n = ct.n, K = ctx.num_p(), TK = T + K;
  check_keys(ctx, T);
  const std::uint32_t beta = ctx.num_digits(T);
  u64* ext = scratch(3, std::size_t(beta) * TK * n);
  u64* acc0 = scratch(4, std::size_t(TK) * n);
  u64* acc1 = scratch(5, std::size_t(TK) * n);
  static const bool prof = std::getenv("MEDTWIN_PROFILE") != nullptr;
  auto cpu = []() { timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6; };
  double t0 = cpu();
  modup(ctx, ct.poly(2, 0), T, ext);
  double t1 = cpu();
  key_inner(ctx, ext, T, key, acc0, acc1);
  double t2 = cpu();
  moddown2(ctx, T, acc0, ct.poly(0, 0), ct.poly(0, 0), acc1, ct.poly(1, 0), ct.poly(1, 0));
  double t3 = cpu();
  if (prof) {
    auto ms = [](double a, double b) { return b - a; };
    std::fprintf(stderr, "relin T=%u wall-ms modup %.2f inner %.2f moddown %.2f\n", T, ms(t0, t1), ms(t1, t2), ms(t2, t3));
  }
  ct.elems = 2;
  ct.data.resize(std::size_t(2) * T * n);
}

namespace {
void finish_rotation(const Context& ctx, const Ciphertext& in, u64 k, u64* acc0, u64* acc1, Ciphertext& out) {
  const std::uint32_t T = in.towers, n = in.n, K = ctx.num_p(), TK = T + K;
  const auto& perm = ctx.automorphism(k);
  u64* p0 = scratch(6, std::size_t(TK) * n);
  u64* p1 = scratch(7, std::size_t(TK) * n);
  u64* c0 = scratch(8, std::size_t(T) * n);
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(TK) * n))
  for (std::int64_t m = 0; m < TK; ++m) {
    apply_automorphism(perm, acc0 + std::size_t(m) * n, p0 + std::size_t(m) * n);
    apply_automorphism(perm, acc1 + std::size_t(m) * n, p1 + std::size_t(m) * n);
    if (m < T) apply_automorphism(perm, in.poly(0, static_cast<std::uint32_t>(m)), c0 + std::size_t(m) * n);
  }
  out.n = in.n;
  out.resize(2, T);
  out.slots = in.slots; out.level = in.level; out.hops = in.hops; out.noise_deg = in.noise_deg;
  out.scale = in.scale; out.scheme_id = in.scheme_id; out.encoding = in.encoding;
  out.header = in.header; out.key_tag = in.key_tag;
  moddown2(ctx, T, p0, out.poly(0, 0), c0, p1, out.poly(1, 0), nullptr);
}
}  // namespace

void rotate(const Context& ctx, const Ciphertext& in, u64 k, const SwitchKey& key, Ciphertext& out) {
  if (in.elems != 2) throw std::invalid_argument("rotation needs a two-element ciphertext");
  const std::uint32_t T = in.towers, n = in.n, K = ctx.num_p(), TK = T + K;
  check_keys(ctx, T);
  const std::uint32_t beta = ctx.num_digits(T);
  u64* ext = scratch(3, std::size_t(beta) * TK * n);
  u64* acc0 = scratch(4, std::size_t(TK) * n);
  u64* acc1 = scratch(5, std::size_t(TK) * n);
  modup(ctx, in.poly(1, 0), T, ext);
  key_inner(ctx, ext, T, key, acc0, acc1);
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
