#include "medtwin/ciphertext.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <unordered_map>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>
#include <mutex>
#include <new>
#include <stdexcept>

#include "medtwin/rns.h"
#include "medtwin/rns_ifma.h"

namespace medtwin {

namespace {
// Buffers of at least kPoolMin bytes (ciphertexts, key-switch scratch) come from one arena: a
// large virtual reservation (PROT_NONE, no commit charge) whose used part grows as needed and whose
// freed ranges are reused best-fit, split and coalesced with their neighbours. A fresh page costs
// this VM about 2.2 s per GiB on first touch (the host backs it then), so the point is to touch
// as little new memory as possible: a program's buffers are re-cut from memory it already
// touched. The per-size pool this replaces could only hand a freed block to a request of up to
// 1.5x smaller, and a study's ciphertexts shrink level by level, so it touched about twice the
// peak live set (2.29 GB fresh for a 1.12 GB peak on a 400-patient run).
// Freed ranges stay mapped for reuse; pool_release() returns them to the system. Requests the
// arena cannot serve (reservation refused or exhausted) fall back to aligned_alloc. Sanitizer
// builds use aligned_alloc throughout, so that ASan still sees every buffer's bounds.
// The arena is leaked on purpose: ciphertexts may be freed by static destructors.
constexpr std::size_t kPoolMin = std::size_t(1) << 20;   // arena only for buffers >= 1 MiB
constexpr std::size_t kGranule = std::size_t(1) << 16;   // 64 KiB units
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kArena = false;
#else
constexpr bool kArena = true;
#endif
std::size_t round64(std::size_t b) { return (b + 63) / 64 * 64; }
std::size_t round_granule(std::size_t b) { return (b + kGranule - 1) / kGranule * kGranule; }

struct Arena {
  std::mutex mu;
  char* base = nullptr;
  std::size_t reserved = 0, top = 0;                  // bytes reserved; bytes ever handed out (a prefix)
  std::map<std::size_t, std::size_t> free_by_off;     // offset -> length, for coalescing
  std::multimap<std::size_t, std::size_t> free_by_len;  // length -> offset, for best fit
  std::unordered_map<void*, std::size_t> live;        // arena blocks in use -> length
  std::size_t free_bytes = 0;

  Arena() {
    if (!kArena) return;
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    std::size_t phys = pages > 0 && psize > 0 ? std::size_t(pages) * std::size_t(psize) : (std::size_t(8) << 30);
    std::size_t want = round_granule(std::clamp(phys, std::size_t(1) << 30, std::size_t(1) << 40));
    void* p = mmap(nullptr, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    // transparent huge pages where the used part covers whole 2 MiB blocks (see AlignedAlloc)
    madvise(p, want, MADV_HUGEPAGE);
    base = static_cast<char*>(p);
    reserved = want;
  }
  bool owns(const void* p) const {
    return base && static_cast<const char*>(p) >= base && static_cast<const char*>(p) < base + reserved;
  }
  void erase_free(std::map<std::size_t, std::size_t>::iterator it) {
    auto range = free_by_len.equal_range(it->second);
    for (auto j = range.first; j != range.second; ++j)
      if (j->second == it->first) { free_by_len.erase(j); break; }
    free_bytes -= it->second;
    free_by_off.erase(it);
  }
  void insert_free(std::size_t off, std::size_t len) {
    free_by_off.emplace(off, len);
    free_by_len.emplace(len, off);
    free_bytes += len;
  }
  // Under mu. nullptr when the arena cannot serve the request.
  void* take(std::size_t need) {
    if (!base) return nullptr;
    auto it = free_by_len.lower_bound(need);
    if (it != free_by_len.end()) {
      const std::size_t off = it->second, len = it->first;
      erase_free(free_by_off.find(off));
      if (len > need) insert_free(off + need, len - need);
      return base + off;
    }
    // Grow the used prefix, starting inside a free range that ends at it, if any.
    std::size_t off = top;
    if (!free_by_off.empty()) {
      auto last = std::prev(free_by_off.end());
      if (last->first + last->second == top) off = last->first;
    }
    if (off + need > reserved) return nullptr;
    const std::size_t grow = off + need - top;
    if (grow && mprotect(base + top, grow, PROT_READ | PROT_WRITE) != 0) return nullptr;
    if (off != top) erase_free(free_by_off.find(off));
    top += grow;
    return base + off;
  }
  // Under mu.
  void give(std::size_t off, std::size_t len) {
    auto next = free_by_off.lower_bound(off);
    if (next != free_by_off.end() && next->first == off + len) {
      len += next->second;
      erase_free(next);
    }
    auto after = free_by_off.lower_bound(off);
    if (after != free_by_off.begin()) {
      auto prev = std::prev(after);
      if (prev->first + prev->second == off) {
        off = prev->first;
        len += prev->second;
        erase_free(prev);
      }
    }
    insert_free(off, len);
  }
};
Arena& the_arena() {
  static Arena* a = new Arena;
  return *a;
}
}  // namespace

void* pool_allocate(std::size_t bytes) {
  if (bytes >= kPoolMin && kArena) {
    Arena& A = the_arena();
    const std::size_t need = round_granule(bytes);
    std::lock_guard<std::mutex> g(A.mu);
    if (void* p = A.take(need)) {
      try {
        A.live.emplace(p, need);
      } catch (...) {
        A.give(static_cast<std::size_t>(static_cast<char*>(p) - A.base), need);
        throw;
      }
      return p;
    }
  }
  void* p = std::aligned_alloc(64, round64(bytes));
  if (!p) throw std::bad_alloc();
  return p;
}

void pool_deallocate(void* p, std::size_t bytes) noexcept {
  if (!p) return;
  (void)bytes;
  Arena& A = the_arena();
  if (A.owns(p)) {
    std::lock_guard<std::mutex> g(A.mu);
    auto lv = A.live.find(p);
    if (lv == A.live.end()) std::abort();  // not a live arena block: a double free
    const std::size_t len = lv->second;
    A.live.erase(lv);
    try {
      A.give(static_cast<std::size_t>(static_cast<char*>(p) - A.base), len);
    } catch (...) {  // no memory for the bookkeeping: the range is lost to reuse, not to safety
    }
    return;
  }
  std::free(p);
}

std::size_t pool_cached_bytes() {
  Arena& A = the_arena();
  std::lock_guard<std::mutex> g(A.mu);
  return A.free_bytes;
}

void pool_release() {
  Arena& A = the_arena();
  std::lock_guard<std::mutex> g(A.mu);
  for (auto& kv : A.free_by_off) madvise(A.base + kv.first, kv.second, MADV_DONTNEED);
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
  if (!std::isfinite(x)) throw std::invalid_argument("constant is not a finite number");
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

// round(c 2^p) mod q_t for every tower of a (OpenFHE's rounding, see scaled_mod). Computed, and
// refused with an exception, before any parallel loop: an exception must not leave an OpenMP
// region (the process would terminate).
std::vector<u64> const_towers(const Context& ctx, const Ciphertext& a, double c) {
  const long double sf = std::ldexp(1.0L, static_cast<int>(ctx.params().scaling_mod_size));
  std::vector<u64> k(a.towers);
  for (std::uint32_t t = 0; t < a.towers; ++t)
    k[t] = scaled_mod(static_cast<long double>(c) * sf, ctx.modulus(t), true);
  return k;
}

void mul_const_core(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out) {
  const long double sf = std::ldexp(1.0L, static_cast<int>(ctx.params().scaling_mod_size));
  const std::vector<u64> k = const_towers(ctx, a, c);
  each_tower(a, out, [&](u64* o, const u64* x, std::uint32_t t) { mul_scalar_vec(o, x, k[t], a.n, ctx.modulus(t)); });
  out.noise_deg = a.noise_deg + 1;
  out.scale = a.scale * static_cast<double>(sf);
}

}  // namespace

void mul_const_rescale(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out) {
  rescale_scaled(ctx, a, const_towers(ctx, a, c).data(), out);
}

void mul_const_rescale_add(const Context& ctx, const Ciphertext& a, double c, const Ciphertext& y, Ciphertext& out) {
  rescale_add(ctx, a, const_towers(ctx, a, c).data(), y, out);
}

bool mul_const_rescale_sum(const Context& ctx, const Ciphertext& y, const std::vector<const Ciphertext*>& xs,
                           const std::vector<double>& cs, const std::vector<char>& has_c, Ciphertext& out) {
  if (cs.size() != xs.size() || has_c.size() != xs.size()) return false;
  std::vector<std::vector<u64>> kt(xs.size());
  std::vector<const u64*> ks(xs.size(), nullptr);
  for (std::size_t t = 0; t < xs.size(); ++t)
    if (has_c[t]) {
      kt[t] = const_towers(ctx, *xs[t], cs[t]);
      ks[t] = kt[t].data();
    }
  return rescale_sum(ctx, y, xs, ks, out);
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
  std::vector<u64> ks(a.towers);  // before the parallel loop: scaled_mod may throw
  for (std::uint32_t t = 0; t < a.towers; ++t) {
    const u64 q = ctx.modulus(t);
    u64 k = scaled_mod(std::fabs(static_cast<long double>(c)) * sf, q, true);
    if (negative && k != 0) k = q - k;
    const u64 f = q_last % q;
    for (std::uint32_t i = 0; i < extra; ++i) k = static_cast<u64>((static_cast<unsigned __int128>(k) * f) % q);
    ks[t] = k;
  }
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(a.towers) * a.n))
  for (std::int64_t t = 0; t < a.towers; ++t) add_scalar_vec(a.poly(0, t), a.poly(0, t), ks[t], a.n, ctx.modulus(t));
}

void mul_plain_inplace(const Context& ctx, Ciphertext& a, const u64* pt, double pt_scale) {
  mul_plain_core(ctx, a, pt, pt_scale, a);
}

void add_plain_inplace(const Context& ctx, Ciphertext& a, const u64* pt) {
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(a.towers) * a.n))
  for (std::int64_t t = 0; t < a.towers; ++t)
    add_vec(a.poly(0, t), a.poly(0, t), pt + std::size_t(t) * a.n, a.n, ctx.modulus(t));
}

void copy_meta(const Ciphertext& a, Ciphertext& out) {
  out.n = a.n;
  out.slots = a.slots; out.level = a.level; out.hops = a.hops; out.noise_deg = a.noise_deg;
  out.scale = a.scale; out.scheme_id = a.scheme_id; out.encoding = a.encoding;
  out.header = a.header; out.key_tag = a.key_tag;
}

void copy_meta_aligned(const Ciphertext& a, std::uint32_t towers, Ciphertext& out) {
  copy_meta(a, out);
  out.level = a.level + (a.towers - towers);
}

namespace {
// out = a op b over the common towers; an element only one operand has is taken from it
// (negated for b under subtraction), as the in-place forms do after widening with zeros.
void binary_to(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out, bool subtract) {
  check_pair(a, b);
  if (&out == &a || &out == &b) throw std::invalid_argument("out-of-place operation: output aliases an input");
  const std::uint32_t T = std::min(a.towers, b.towers), n = a.n, E = std::max(a.elems, b.elems);
  copy_meta_aligned(a, T, out);
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
  // Before a relinearisation (d2), c0 and c1 are read again only at its very end, after the key
  // has streamed through the caches: where the key is much larger than the last-level cache's
  // share this VM gives a process (about 32 MiB measured), they are written past the caches
  // (saves reading their lines in first). Measured at N = 2^16, depth 20 (HMult, five
  // alternating runs of both builds): median 33.8 ms against 34.8 ms with plain stores; no
  // difference measurable on a main-job chunk (noise of a few percent).
  const std::size_t key_bytes = d2 ? std::size_t(16) * ctx.num_digits(T) * (T + ctx.num_p()) * n : 0;
  const bool stream = key_bytes >= (std::size_t(32) << 20);
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(T) * n))
  for (std::int64_t t = 0; t < T; ++t) {
    const Modulus& m = ctx.mod(t);
    const u64 *a0 = a.poly(0, t), *a1 = a.poly(1, t), *b0 = b.poly(0, t), *b1 = b.poly(1, t);
    u64 *c0 = r.poly(0, t), *c1 = r.poly(1, t), *c2 = d2 ? d2 + std::size_t(t) * n : r.poly(2, t);
    if (ifma::tensor_tower(a0, a1, b0, b1, c0, c1, c2, n, m.q, ctx.mont_neg_inv(t), ctx.mont_r2(t), stream)) continue;
    for (std::uint32_t i = 0; i < n; ++i) {
      c0[i] = barrett128(static_cast<u128>(a0[i]) * b0[i], m);
      c1[i] = barrett128(static_cast<u128>(a0[i]) * b1[i] + static_cast<u128>(a1[i]) * b0[i], m);
      c2[i] = barrett128(static_cast<u128>(a1[i]) * b1[i], m);
    }
  }
}

}  // namespace medtwin
