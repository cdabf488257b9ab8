#include "medtwin/ciphertext.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <list>
#include <map>
#include <unordered_map>
#include <unistd.h>
#include <vector>
#include <mutex>
#include <new>
#include <stdexcept>

#include "medtwin/rns.h"
#include "medtwin/rns_ifma.h"

namespace medtwin {

namespace {
// Free buffers of at least kPoolMin bytes, kept for reuse: found best-fit by size (a buffer up to
// 1.5x the request serves it, as ciphertexts shrink level by level) and evicted least recently
// released first once more than pool_cap() bytes are cached. Every pooled block's real size is
// tracked, since a block may serve a smaller request than it was made for. The pool is leaked on
// purpose: ciphertexts may be freed by static destructors after it would otherwise be gone.
// keep at most an eighth of physical memory in free buffers, between 256 MiB and 4 GiB (a
// cohort program at N = 2^16 has dozens of live 30-45 MB ciphertexts)
std::size_t pool_cap() {
  static const std::size_t cap = [] {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    std::size_t phys = pages > 0 && size > 0 ? std::size_t(pages) * std::size_t(size) : (std::size_t(8) << 30);
    return std::clamp(phys / 8, std::size_t(256) << 20, std::size_t(4) << 30);
  }();
  return cap;
}
constexpr std::size_t kPoolMin = std::size_t(1) << 20;   // pool only buffers >= 1 MiB
struct Pool {
  std::mutex mu;
  std::list<std::pair<std::size_t, void*>> lru;  // free blocks, oldest release first
  std::multimap<std::size_t, std::list<std::pair<std::size_t, void*>>::iterator> by_size;
  std::unordered_map<void*, std::size_t> live;   // pooled blocks in use -> their real size
  std::size_t cached = 0;
};
Pool& the_pool() {
  static Pool* p = new Pool;
  return *p;
}
std::size_t round64(std::size_t b) { return (b + 63) / 64 * 64; }
}  // namespace

void* pool_allocate(std::size_t bytes) {
  if (bytes < kPoolMin) {
    void* p = std::aligned_alloc(64, round64(bytes));
    if (!p) throw std::bad_alloc();
    return p;
  }
  Pool& P = the_pool();
  {
    std::lock_guard<std::mutex> g(P.mu);
    auto it = P.by_size.lower_bound(bytes);
    if (it != P.by_size.end() && it->first <= bytes + bytes / 2) {
      const std::size_t size = it->first;
      void* p = it->second->second;
      P.lru.erase(it->second);
      P.by_size.erase(it);
      P.cached -= size;
      P.live.emplace(p, size);
      return p;
    }
  }
  const std::size_t size = round64(bytes);
  void* p = std::aligned_alloc(64, size);
  if (!p) throw std::bad_alloc();
  std::lock_guard<std::mutex> g(P.mu);
  P.live.emplace(p, size);
  return p;
}

void pool_deallocate(void* p, std::size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kPoolMin) {
    std::free(p);
    return;
  }
  Pool& P = the_pool();
  std::vector<void*> evict;
  {
    std::lock_guard<std::mutex> g(P.mu);
    auto lv = P.live.find(p);
    const std::size_t size = lv != P.live.end() ? lv->second : round64(bytes);
    if (lv != P.live.end()) P.live.erase(lv);
    if (size > pool_cap()) {
      evict.push_back(p);
    } else {
      try {
        P.lru.emplace_back(size, p);
        P.by_size.emplace(size, std::prev(P.lru.end()));
        P.cached += size;
      } catch (...) {  // no memory for the bookkeeping: just free the block
        if (!P.lru.empty() && P.lru.back().second == p) P.lru.pop_back();
        evict.push_back(p);
      }
      while (P.cached > pool_cap() && !P.lru.empty()) {
        auto& old = P.lru.front();
        auto range = P.by_size.equal_range(old.first);
        for (auto it = range.first; it != range.second; ++it)
          if (it->second == P.lru.begin()) { P.by_size.erase(it); break; }
        P.cached -= old.first;
        evict.push_back(old.second);
        P.lru.pop_front();
      }
    }
  }
  for (void* q : evict) std::free(q);
}

std::size_t pool_cached_bytes() {
  Pool& P = the_pool();
  std::lock_guard<std::mutex> g(P.mu);
  return P.cached;
}

void pool_release() {
  Pool& P = the_pool();
  std::vector<void*> all;
  {
    std::lock_guard<std::mutex> g(P.mu);
    for (auto& kv : P.lru) all.push_back(kv.second);
    P.lru.clear();
    P.by_size.clear();
    P.cached = 0;
  }
  for (void* q : all) std::free(q);
}

namespace {
void check_pair(const Ciphertext& a, const Ciphertext& b) {
  if (a.n != b.n) throw std::invalid_argument("ciphertexts have different ring dimensions");
  if (a.key_tag != b.key_tag) throw std::invalid_argument("ciphertexts belong to different key pairs");
  if (a.noise_deg != b.noise_deg)
    throw std::invalid_argument("ciphertexts have different noise-scale degrees (rescale first)");
}
// round(x) mod q for |x| < 2^126; trunc_half: OpenFHE's EvalMult(ct, double) rounding,
// trunc(x + 0.5) (toward zero), which differs from round(x) for negative x.
u64 scaled_mod(long double x, u64 q, bool trunc_half = false) {
  // trunc_half: OpenFHE's constant multiplication adds 0.5 in double precision and truncates toward
  // zero; above 2^52 (or for negative values) that differs from exact x + 0.5, so do the same here
  // (x = c * 2^k is exact in double).
  long double v = trunc_half ? static_cast<long double>(std::trunc(static_cast<double>(x) + 0.5)) : std::roundl(x);
  if (!(std::fabs(v) < std::ldexp(1.0L, 126))) throw std::invalid_argument("constant times scale exceeds 2^126");
  __int128 z = static_cast<__int128>(v);
  __int128 r = z % static_cast<__int128>(q);
  if (r < 0) r += q;
  return static_cast<u64>(r);
}
}  // namespace

void align_levels(Ciphertext& a, Ciphertext& b) {
  if (a.towers > b.towers) drop_towers(a, a.towers - b.towers);
  if (b.towers > a.towers) drop_towers(b, b.towers - a.towers);
}

namespace {
template <class F>
void binary(const Context& ctx, Ciphertext& a, const Ciphertext& b, F f, bool sub) {
  check_pair(a, b);
  if (a.towers > b.towers) drop_towers(a, a.towers - b.towers);
  const std::uint32_t T = a.towers, n = a.n;
  const std::uint32_t E = std::max(a.elems, b.elems);
  if (a.elems < E) {  // widen a with zero elements
    a.data.resize(std::size_t(E) * T * n, 0);
    a.elems = E;
  }
  const std::int64_t jobs = std::int64_t(E) * T;
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(jobs) * a.n))
  for (std::int64_t jb = 0; jb < jobs; ++jb) {
    const std::uint32_t e = static_cast<std::uint32_t>(jb / T), t = static_cast<std::uint32_t>(jb % T);
    if (e >= b.elems) continue;
    f(a.poly(e, t), b.poly(e, t), n, ctx.modulus(t));
  }
  (void)sub;
}
}  // namespace

void add_inplace(const Context& ctx, Ciphertext& a, const Ciphertext& b) {
  binary(ctx, a, b, [](u64* x, const u64* y, std::size_t n, u64 q) { add_vec(x, x, y, n, q); }, false);
}
void sub_inplace(const Context& ctx, Ciphertext& a, const Ciphertext& b) {
  binary(ctx, a, b, [](u64* x, const u64* y, std::size_t n, u64 q) { sub_vec(x, x, y, n, q); }, true);
}
namespace {
// out(e, t) = f(out(e, t), a(e, t), t) for every element and tower. ``out`` may be ``a`` itself: the
// kernels are element-wise, so the in-place and out-of-place forms share one loop.
template <class F>
void each_tower(const Ciphertext& a, Ciphertext& out, F f) {
  const std::int64_t jobs = std::int64_t(a.elems) * a.towers;
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(jobs) * a.n))
  for (std::int64_t jb = 0; jb < jobs; ++jb) {
    const std::uint32_t e = static_cast<std::uint32_t>(jb / a.towers), t = static_cast<std::uint32_t>(jb % a.towers);
    f(out.poly(e, t), a.poly(e, t), t);
  }
}

void negate_core(const Context& ctx, const Ciphertext& a, Ciphertext& out) {
  each_tower(a, out, [&](u64* o, const u64* x, std::uint32_t t) { neg_vec(o, x, a.n, ctx.modulus(t)); });
}

void mul_const_core(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out) {
  const long double sf = std::ldexp(1.0L, static_cast<int>(ctx.params().scaling_mod_size));
  each_tower(a, out, [&](u64* o, const u64* x, std::uint32_t t) {
    const u64 q = ctx.modulus(t);
    mul_scalar_vec(o, x, scaled_mod(static_cast<long double>(c) * sf, q, true), a.n, q);
  });
  out.noise_deg = a.noise_deg + 1;
  out.scale = a.scale * static_cast<double>(sf);
}

}  // namespace

namespace {
std::vector<u64> const_towers(const Context& ctx, const Ciphertext& a, double c) {
  const long double sf = std::ldexp(1.0L, static_cast<int>(ctx.params().scaling_mod_size));
  std::vector<u64> k(a.towers);
  for (std::uint32_t t = 0; t < a.towers; ++t)  // the constants of mul_const_core, exactly
    k[t] = scaled_mod(static_cast<long double>(c) * sf, ctx.modulus(t), true);
  return k;
}
}  // namespace

void mul_const_rescale(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out) {
  rescale_scaled(ctx, a, const_towers(ctx, a, c).data(), out);
}

void mul_const_rescale_add(const Context& ctx, const Ciphertext& a, double c, const Ciphertext& y, Ciphertext& out) {
  rescale_add(ctx, a, const_towers(ctx, a, c).data(), y, out);
}

namespace {
void mul_plain_core(const Context& ctx, const Ciphertext& a, const u64* pt, double pt_scale, Ciphertext& out) {
  each_tower(a, out, [&](u64* o, const u64* x, std::uint32_t t) {
    const u64* p = pt + std::size_t(t) * a.n;
    if (!ifma::mul_vec(o, x, p, a.n, ctx.modulus(t), ctx.mont_neg_inv(t), ctx.mont_r2(t)))
      mul_vec(o, x, p, a.n, ctx.mod(t));
  });
  out.noise_deg = a.noise_deg + 1;
  out.scale = a.scale * pt_scale;
}
}  // namespace

void negate_inplace(const Context& ctx, Ciphertext& a) { negate_core(ctx, a, a); }
void mul_const_inplace(const Context& ctx, Ciphertext& a, double c) { mul_const_core(ctx, a, c, a); }

void add_const_inplace(const Context& ctx, Ciphertext& a, double c) {
  // OpenFHE (FIXEDMANUAL, GetElementForEvalAddOrSub): the constant is rounded at the scaling factor
  // 2^p, and for each noise degree above 1 multiplied in the towers by the ciphertext's last
  // modulus (the prime the next rescale divides by), i.e. round(c 2^p) q_last^(d-1) mod q_t, so that
  // the constant is exactly round(c 2^p) after the rescale. Checked against OpenFHE at degree 2
  // (round(c 2^(2p)), the naive choice, differs in every tower).
  // The rounding is OpenFHE's too: CryptoContext::EvalAdd subtracts |c| when c < 0, and |c| 2^p
  // is rounded as uint64(|c| 2^p + 0.5) in double precision. Between 2^52 and 2^53 that sum is a
  // tie, rounded to even: an odd |c| 2^p goes up by one (a 49-bit scale and |c| in [8, 16)).
  const long double sf = std::ldexp(1.0L, static_cast<int>(ctx.params().scaling_mod_size));
  const bool negative = c < 0;
  const std::uint32_t extra = a.noise_deg > 1 ? a.noise_deg - 1 : 0;
  const u64 q_last = ctx.modulus(a.towers - 1);
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(a.towers) * a.n))
  for (std::int64_t t = 0; t < a.towers; ++t) {
    const u64 q = ctx.modulus(t);
    u64 k = scaled_mod(std::fabs(static_cast<long double>(c)) * sf, q, true);
    if (negative && k != 0) k = q - k;
    const u64 f = q_last % q;
    for (std::uint32_t i = 0; i < extra; ++i) k = static_cast<u64>((static_cast<unsigned __int128>(k) * f) % q);
    add_scalar_vec(a.poly(0, t), a.poly(0, t), k, a.n, q);
  }
}

void mul_plain_inplace(const Context& ctx, Ciphertext& a, const u64* pt, double pt_scale) {
  mul_plain_core(ctx, a, pt, pt_scale, a);
}

void add_plain_inplace(const Context& ctx, Ciphertext& a, const u64* pt) {
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(a.towers) * a.n))
  for (std::int64_t t = 0; t < a.towers; ++t)
    add_vec(a.poly(0, t), a.poly(0, t), pt + std::size_t(t) * a.n, a.n, ctx.modulus(t));
}

namespace {
void copy_meta(const Ciphertext& a, Ciphertext& out) {
  out.n = a.n;
  out.slots = a.slots; out.level = a.level; out.hops = a.hops; out.noise_deg = a.noise_deg;
  out.scale = a.scale; out.scheme_id = a.scheme_id; out.encoding = a.encoding;
  out.header = a.header; out.key_tag = a.key_tag;
}
// out = a op b over the common towers; an element only one operand has is taken from it
// (negated for b under subtraction), as the in-place forms do after widening with zeros.
void binary_to(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out, bool subtract) {
  check_pair(a, b);
  if (&out == &a || &out == &b) throw std::invalid_argument("out-of-place operation: output aliases an input");
  const std::uint32_t T = std::min(a.towers, b.towers), n = a.n, E = std::max(a.elems, b.elems);
  copy_meta(a, out);
  out.level = a.level + (a.towers - T);
  out.resize(E, T);
  const std::int64_t jobs = std::int64_t(E) * T;
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(jobs) * n))
  for (std::int64_t jb = 0; jb < jobs; ++jb) {
    const std::uint32_t e = static_cast<std::uint32_t>(jb / T), t = static_cast<std::uint32_t>(jb % T);
    const u64 q = ctx.modulus(t);
    u64* o = out.poly(e, t);
    if (e < a.elems && e < b.elems) {
      if (subtract) sub_vec(o, a.poly(e, t), b.poly(e, t), n, q); else add_vec(o, a.poly(e, t), b.poly(e, t), n, q);
    } else if (e < a.elems) {
      std::memcpy(o, a.poly(e, t), 8 * std::size_t(n));
    } else if (subtract) {
      neg_vec(o, b.poly(e, t), n, q);
    } else {
      std::memcpy(o, b.poly(e, t), 8 * std::size_t(n));
    }
  }
}
}  // namespace

void add_to(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out) { binary_to(ctx, a, b, out, false); }
void sub_to(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out) { binary_to(ctx, a, b, out, true); }

namespace {
void prepare_out(const Ciphertext& a, Ciphertext& out) {
  if (&out == &a) throw std::invalid_argument("out-of-place operation: output aliases an input");
  copy_meta(a, out);
  out.resize(a.elems, a.towers);
}
}  // namespace

void negate_to(const Context& ctx, const Ciphertext& a, Ciphertext& out) {
  prepare_out(a, out);
  negate_core(ctx, a, out);
}

void mul_const_to(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out) {
  prepare_out(a, out);
  mul_const_core(ctx, a, c, out);
}

void mul_plain_to(const Context& ctx, const Ciphertext& a, const u64* pt, double pt_scale, Ciphertext& out) {
  prepare_out(a, out);
  mul_plain_core(ctx, a, pt, pt_scale, out);
}

void tensor(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out) {
  Ciphertext r;
  tensor_split(ctx, a, b, r, nullptr);
  out = std::move(r);
}

void tensor_split(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& r, u64* d2) {
  if (a.elems != 2 || b.elems != 2) throw std::invalid_argument("tensor product needs two-element ciphertexts (relinearise first)");
  if (a.n != b.n) throw std::invalid_argument("ciphertexts have different ring dimensions");
  if (a.key_tag != b.key_tag) throw std::invalid_argument("ciphertexts belong to different key pairs");
  if (&r == &a || &r == &b) throw std::invalid_argument("tensor: the output aliases an input");
  const std::uint32_t T = std::min(a.towers, b.towers), n = a.n;
  r.n = n;
  r.resize(d2 ? 2 : 3, T);
  r.slots = a.slots; r.level = std::max(a.level, b.level); r.hops = a.hops;
  r.noise_deg = a.noise_deg + b.noise_deg;
  r.scale = a.scale * b.scale;
  r.scheme_id = a.scheme_id; r.encoding = a.encoding; r.header = a.header; r.key_tag = a.key_tag;
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(T) * n))
  for (std::int64_t t = 0; t < T; ++t) {
    const Modulus& m = ctx.mod(t);
    const u64 *a0 = a.poly(0, t), *a1 = a.poly(1, t), *b0 = b.poly(0, t), *b1 = b.poly(1, t);
    u64 *c0 = r.poly(0, t), *c1 = r.poly(1, t), *c2 = d2 ? d2 + std::size_t(t) * n : r.poly(2, t);
    if (ifma::tensor_tower(a0, a1, b0, b1, c0, c1, c2, n, m.q, ctx.mont_neg_inv(t), ctx.mont_r2(t))) continue;
    for (std::uint32_t i = 0; i < n; ++i) {
      c0[i] = barrett128(static_cast<u128>(a0[i]) * b0[i], m);
      c1[i] = barrett128(static_cast<u128>(a0[i]) * b1[i] + static_cast<u128>(a1[i]) * b0[i], m);
      c2[i] = barrett128(static_cast<u128>(a1[i]) * b1[i], m);
    }
  }
}

}  // namespace medtwin
