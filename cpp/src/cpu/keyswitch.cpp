#include "medtwin/keyswitch.h"

#include <algorithm>
#include <cmath>
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

namespace {
// The n values of p (each below 2^w) packed at w bits per value from the start of p, in place:
// value c is bits [w c, w c + w) of the little-endian byte string (see packed_value).
void pack_poly(u64* p, std::uint32_t n, unsigned w) {
  unsigned char* out = reinterpret_cast<unsigned char*>(p);
  u128 acc = 0;  // bits not yet written
  unsigned have = 0;
  std::size_t pos = 0;
  for (std::uint32_t c = 0; c < n; ++c) {
    acc |= u128(p[c]) << have;  // p[c] is read before the bytes written so far can reach it
    have += w;
    while (have >= 8) {
      out[pos++] = static_cast<unsigned char>(acc);
      acc >>= 8;
      have -= 8;
    }
  }
  if (have) out[pos++] = static_cast<unsigned char>(acc);
}
}  // namespace

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
  // The Montgomery towers packed at the width of their modulus (values < q): the inner product
  // waits on the key's stream from memory, and reads 41 of every 64 bits for a 41-bit modulus.
  // Measured at N = 2^16, depth 20 (41-bit towers): one tower's inner product over three digits,
  // keys from memory, 250-290 -> 190-200 us; HMult+relin 23.9 -> 23.3 ms, HMult+rescale 25.2 ->
  // 23.9 ms, rotation 24.3 -> 23.2 ms (medians of six fresh processes, builds alternating).
  // The key's memory is not reduced: each polynomial keeps its n-word slot.
  key.pack_bits.assign(key.towers, 0);
  if (ifma::cpu_has_vbmi() && n % 8 == 0 && n >= 64)
    for (std::uint32_t t = 0; t < key.towers; ++t)
      if (key.mont_tower[t] >= 0) {
        unsigned w = 0;
        while (w < 64 && (ctx.modulus(t) - 1) >> w) ++w;
        if (w <= 56) key.pack_bits[t] = static_cast<std::uint8_t>(w);
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
    if (key.pack_bits[t]) {
      pack_poly(sa, n, key.pack_bits[t]);
      pack_poly(sb, n, key.pack_bits[t]);
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
  const unsigned w = key.pack_bits.empty() ? 0 : key.pack_bits[idx];
  if (mont && ifma::inner_mont(e, b, a, beta, mm.q, ctx.mont_neg_inv(idx), o0, o1, n, w)) return;
  if (!mont && ifma::inner_wide(e, b, a, beta, mm.q, o0, o1, n)) return;
  // accumulate beta products in 128 bits, reduce once (beta * 2^122 < 2^128 for beta <= 32)
  for (std::uint32_t c = 0; c < n; ++c) {
    u128 s0 = 0, s1 = 0;
    for (std::uint32_t j = 0; j < beta; ++j) {
      const u64 kb = w ? packed_value(b[j], w, c) : b[j][c], ka = w ? packed_value(a[j], w, c) : a[j][c];
      s0 += static_cast<u128>(e[j][c]) * kb;
      s1 += static_cast<u128>(e[j][c]) * ka;
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

namespace {
void check_keys(const Context& ctx, std::uint32_t T) {
  if (ctx.num_p() == 0) throw std::invalid_argument("the context has no P moduli (no evaluation key loaded)");
  if (ctx.num_digits(T) > 32) throw std::invalid_argument("more than 32 key-switching digits");
}
// The key has the context's Q and P towers and the digits a T-tower key switch uses.
void check_key(const Context& ctx, const SwitchKey& key, std::uint32_t T) {
  if (key.towers != ctx.num_q() + ctx.num_p() || key.digits < ctx.num_digits(T))
    throw std::invalid_argument("key does not match the context");
}
}  // namespace

namespace {
// Where a key switch's result goes (keyswitch_fused): out_e = c_e + ModDown(acc_e) (c_e null: no
// addend; out_e may alias c_e), or with rescale the rescale of that (+ y_e, T - 1 towers).
// perm (a rotation): the P towers are permuted before ModDown's INTT and the Q towers of the
// accumulators and c_e read permuted (out then aliases no input).
struct KsOut {
  const u64* c[2] = {nullptr, nullptr};
  u64* out[2] = {nullptr, nullptr};
  const u64* y[2] = {nullptr, nullptr};
  const std::uint32_t* perm = nullptr;
  // hoisting: ModUp's output (modup(): every digit extended and transformed), shared by several
  // key switches of one d; the key switch then starts at the inner product
  const u64* ext = nullptr;
  bool rescale = false;
  u64 factor = 1;  // with rescale and no y: the result times factor (mod q_i)
};

// Hybrid key switch of d (T towers, evaluation form) with ModDown fused into the inner product
// per Q tower. The P towers (and the last Q tower) go first; after ModDown's P -> Q conversion,
// each remaining Q tower's job forms its two accumulator towers in per-thread memory (L2) and
// finishes them at once (ModDown, and the rescale), so the accumulators' Q towers are never
// written to and read back from a T-tower buffer. Same towers as ModUp, the inner product and
// ModDown as separate passes over all towers (and the rescale): the same products and
// reductions, in another order of towers.
// The rescale: separately, ModDown forms v_i = (acc_i - NTT(z_i)) P^-1 + c_i on every Q tower,
// and the rescale transforms tower l back and forms (v_i - NTT(w_i)) q_l^-1, w_i = the centred
// tower l mod q_i. The transforms are linear mod q_i, so
//   out_i = (acc_i - NTT(z_i + w_i P)) (P^-1 q_l^-1) + c_i q_l^-1 (+ y_i):
// tower l's ModDown output is formed and transformed back first, then each other tower adds
// w_i P to its conversion output in the NTT's first pass and takes one transform
// (NTTTables::forward_centred_add_sub_mul), or, where that vector path does not apply, the two
// steps on that tower.
void keyswitch_fused(const Context& ctx, const u64* d, std::uint32_t T, const SwitchKey& key, const KsOut& o) {
  const std::uint32_t n = ctx.n(), K = ctx.num_p(), TK = T + K, L1 = ctx.num_q();
  const std::uint32_t beta = ctx.num_digits(T);
  check_key(ctx, key, T);
  if (K > 64) throw std::invalid_argument("more than 64 P moduli");
  if (o.rescale && T < 2) throw std::invalid_argument("cannot rescale a ciphertext with one tower");
  const std::uint32_t l = T - 1;
  const u64 ql = ctx.modulus(l);
  const bool hoisted = o.ext != nullptr;
  const u64* y = hoisted ? nullptr : modup_prepare(ctx, d, T);
  const ModUpTable* tabs[64];
  for (std::uint32_t j = 0; j < beta; ++j) tabs[j] = &ctx.modup(T, j);
  u64* x = hoisted ? nullptr : scratch(3, std::size_t(beta) * TK * n);
  u64* accs[2] = {scratch(4, std::size_t(TK) * n), scratch(5, std::size_t(TK) * n)};  // P towers and tower l
  u64* z = scratch(10, std::size_t(2) * T * n);
  u64* xl = o.rescale ? scratch(11, std::size_t(2) * n) : nullptr;
  // the inner product of extended tower m into o0, o1 (the digits' NTTs first, in place in x)
  auto inner = [&](std::uint32_t m, u64* o0, u64* o1) {
    const std::uint32_t idx = m < T ? m : L1 + (m - T);
    const u64* e[64];
    for (std::uint32_t j = 0; j < beta; ++j) {
      if (hoisted) {
        e[j] = o.ext + (std::size_t(j) * TK + m) * n;
      } else if (m < T && m >= tabs[j]->begin && m < tabs[j]->end) {
        e[j] = d + std::size_t(m) * n;  // the digit's own tower: D_j = d
      } else {
        u64* t = x + (std::size_t(j) * TK + m) * n;
        ctx.ntt(idx).forward(t);
        e[j] = t;
      }
    }
    inner_tower(ctx, key, beta, idx, e, o0, o1);
  };
  const bool par = medtwin::parallel_worth(std::size_t(TK) * n);
#pragma omp parallel if (par)
  {
    if (!hoisted) modup_conv_blocks(ctx, tabs, beta, y, T, x);
    // the P towers and tower l into the accumulator buffers (the costliest jobs, dynamic)
#pragma omp for schedule(dynamic)
    for (std::int64_t jb = 0; jb <= K; ++jb) {
      const std::uint32_t m = jb < K ? T + static_cast<std::uint32_t>(jb) : l;
      inner(m, accs[0] + std::size_t(m) * n, accs[1] + std::size_t(m) * n);
    }
    // (sigma_k on the P towers, as OpenFHE 1.6.1 does,) then the scaled INTT of the P towers
#pragma omp for schedule(static)
    for (std::int64_t jb = 0; jb < std::int64_t(2) * K; ++jb) {
      const std::uint32_t e = static_cast<std::uint32_t>(jb / K), k = static_cast<std::uint32_t>(jb % K);
      u64* p = accs[e] + std::size_t(T + k) * n;
      if (o.perm) {
        u64* tmp = scratch(6, n);
        for (std::uint32_t j = 0; j < n; ++j) tmp[j] = p[o.perm[j]];
        std::memcpy(p, tmp, 8 * std::size_t(n));
      }
      ctx.ntt(L1 + k).inverse_mul(p, ctx.phat_inv()[k]);
    }
    moddown_conv_blocks(ctx, accs, 2, T, z);
    if (o.rescale) {  // tower l: ModDown's output, then back to coefficients (the rescale's term)
#pragma omp for schedule(static)
      for (std::int64_t e = 0; e < 2; ++e) {
        u64* xe = xl + std::size_t(e) * n;
        ctx.ntt(l).forward_sub_mul(z + (std::size_t(e) * T + l) * n, accs[e] + std::size_t(l) * n, ctx.pinv_mod_q(l),
                                   xe, o.c[e] + std::size_t(l) * n);
        ctx.ntt(l).inverse(xe);
      }
    }
    const std::int64_t nq = o.rescale ? l : T;
#pragma omp for schedule(dynamic)
    for (std::int64_t jb = 0; jb < nq; ++jb) {
      const std::uint32_t i = static_cast<std::uint32_t>(jb);
      u64* as[2];
      if (i == l) {  // (without the rescale) formed with the P towers
        as[0] = accs[0] + std::size_t(l) * n;
        as[1] = accs[1] + std::size_t(l) * n;
      } else {
        as[0] = scratch(12, std::size_t(2) * n);
        as[1] = as[0] + n;
        inner(i, as[0], as[1]);
      }
      const Modulus& mi = ctx.mod(i);
      for (std::uint32_t e = 0; e < 2; ++e) {
        u64* zi = z + (std::size_t(e) * T + i) * n;
        const u64* ci = o.c[e] ? o.c[e] + std::size_t(i) * n : nullptr;
        u64* out = o.out[e] + std::size_t(i) * n;
        if (!o.rescale) {
          ctx.ntt(i).forward_sub_mul(zi, as[e], ctx.pinv_mod_q(i), out, ci, o.perm);
          continue;
        }
        const u64* xe = xl + std::size_t(e) * n;
        const u64* yi = o.y[e] ? o.y[e] + std::size_t(i) * n : nullptr;
        const u64 rinv = mulmod(ctx.rescale_inv(l, i), o.factor % mi.q, mi);
        if (ctx.ntt(i).forward_centred_add_sub_mul(zi, xe, ql, ctx.p_mod_q(i), as[e], mulmod(ctx.pinv_mod_q(i), rinv, mi),
                                                   out, ci, rinv, yi))
          continue;
        // the two steps on this tower: ModDown into out, then the rescale from it
        ctx.ntt(i).forward_sub_mul(zi, as[e], ctx.pinv_mod_q(i), out, ci);
        u64* t = scratch(1, n);
        centre_tower(ctx, xe, ql, i, t);
        ctx.ntt(i).forward_sub_mul(t, out, rinv, out, yi);
      }
    }
  }
}
}  // namespace

namespace {
// (c0, c1) += ModDown(ModUp(d2) . key) in place: the key switch of relinearisation, shared by
// relinearize_inplace and mul_relin.
void relin_into(const Context& ctx, const u64* d2, std::uint32_t T, const SwitchKey& key, u64* c0, u64* c1) {
  check_keys(ctx, T);
  KsOut o;
  o.c[0] = c0; o.c[1] = c1; o.out[0] = c0; o.out[1] = c1;
  keyswitch_fused(ctx, d2, T, key, o);
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
                       Ciphertext& out, const Ciphertext* y, u64 factor) {
  const std::uint32_t T = std::min(a.towers, b.towers), n = a.n;
  if (factor == 0 || factor >= (u64(1) << 32) || (y && factor != 1))
    throw std::invalid_argument("mul_relin_rescale: factor must be in [1, 2^32) and 1 with an addend");
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
  out.n = n;
  out.resize(2, l);
  // metadata: mul_relin's, then the rescale's (rescale_core), or y's for the sum
  out.slots = prod.slots; out.level = prod.level + 1; out.hops = prod.hops; out.noise_deg = out_deg;
  out.scale = prod.scale / std::ldexp(1.0, static_cast<int>(ctx.params().scaling_mod_size));
  out.scheme_id = prod.scheme_id; out.encoding = prod.encoding; out.header = prod.header; out.key_tag = prod.key_tag;
  if (y) copy_meta_aligned(*y, l, out);
  KsOut o;
  o.c[0] = prod.poly(0, 0); o.c[1] = prod.poly(1, 0); o.out[0] = out.poly(0, 0); o.out[1] = out.poly(1, 0);
  if (y) { o.y[0] = y->poly(0, 0); o.y[1] = y->poly(1, 0); }
  o.rescale = true;
  o.factor = factor;
  keyswitch_fused(ctx, d2, T, key, o);
}

namespace {
// The rotation of in by automorphism k into out (another object); ext: ModUp's output shared by
// a hoisted group (null: this key switch runs its own ModUp).
void rotation(const Context& ctx, const Ciphertext& in, u64 k, const SwitchKey& key, Ciphertext& out, const u64* ext) {
  copy_meta(in, out);
  out.resize(2, in.towers);
  KsOut o;
  o.c[0] = in.poly(0, 0); o.out[0] = out.poly(0, 0); o.out[1] = out.poly(1, 0);
  o.perm = ctx.automorphism(k).data();
  o.ext = ext;
  keyswitch_fused(ctx, in.poly(1, 0), in.towers, key, o);
}
}  // namespace

void rotate(const Context& ctx, const Ciphertext& in, u64 k, const SwitchKey& key, Ciphertext& out) {
  if (in.elems != 2) throw std::invalid_argument("rotation needs a two-element ciphertext");
  check_keys(ctx, in.towers);
  if (&out == &in) throw std::invalid_argument("rotate: the output aliases the input");
  rotation(ctx, in, k, key, out, nullptr);
}

void rotate_hoisted(const Context& ctx, const Ciphertext& in, const std::vector<u64>& ks,
                    const std::vector<const SwitchKey*>& keys, std::vector<Ciphertext>& outs) {
  if (in.elems != 2) throw std::invalid_argument("rotation needs a two-element ciphertext");
  if (ks.size() != keys.size()) throw std::invalid_argument("one key per rotation is needed");
  const std::uint32_t T = in.towers, n = in.n, K = ctx.num_p(), TK = T + K;
  check_keys(ctx, T);
  for (const SwitchKey* key : keys) check_key(ctx, *key, T);  // before any work, not midway
  for (const Ciphertext& o : outs)
    if (&o == &in) throw std::invalid_argument("rotate_hoisted: an output aliases the input");
  outs.clear();
  if (ks.empty()) return;  // (no ModUp for no rotation)
  const std::uint32_t beta = ctx.num_digits(T);
  u64* ext = scratch(3, std::size_t(beta) * TK * n);
  modup(ctx, in.poly(1, 0), T, ext);  // once for every rotation
  outs.resize(ks.size());
  for (std::size_t r = 0; r < ks.size(); ++r) rotation(ctx, in, ks[r], *keys[r], outs[r], ext);
}

}  // namespace medtwin
