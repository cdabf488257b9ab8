#include "medtwin/modarith.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include "medtwin/rns_ifma.h"

#include <atomic>

namespace medtwin {

Modulus::Modulus(u64 q_) : q(q_) {
  if (q_ < 2 || q_ >= (u64(1) << 62)) throw std::invalid_argument("modulus must be in [2, 2^62)");
  // floor(2^128 / q) by long division of 2^128 = (1 << 64) * 2^64
  u128 hi = (static_cast<u128>(1) << 64);
  u128 q1 = hi / q_;           // floor(2^64 / q) (upper word of the quotient)
  u128 rem = hi % q_;
  u128 q0 = (rem << 64) / q_;  // lower word
  r1 = static_cast<u64>(q1);
  r0 = static_cast<u64>(q0);
}

u64 powmod(u64 a, u64 e, u64 q) {
  u128 r = 1, b = a % q;
  while (e) {
    if (e & 1) r = r * b % q;
    b = b * b % q;
    e >>= 1;
  }
  return static_cast<u64>(r);
}

u64 invmod(u64 a, u64 q) {
  // extended Euclid over signed 128-bit
  __int128 t = 0, nt = 1, r = q, nr = a % q;
  while (nr != 0) {
    __int128 qq = r / nr;
    __int128 tmp = t - qq * nt; t = nt; nt = tmp;
    tmp = r - qq * nr; r = nr; nr = tmp;
  }
  if (r != 1) throw std::invalid_argument("value has no inverse modulo q");
  if (t < 0) t += q;
  return static_cast<u64>(t);
}

u64 mod_words(const std::vector<u64>& w, u64 q) {
  u128 r = 0;
  for (std::size_t i = w.size(); i-- > 0;) r = ((r << 64) | w[i]) % q;
  return static_cast<u64>(r);
}

void mul_words(std::vector<u64>& w, u64 m) {
  u64 carry = 0;
  for (auto& x : w) {
    u128 p = static_cast<u128>(x) * m + carry;
    x = static_cast<u64>(p);
    carry = static_cast<u64>(p >> 64);
  }
  if (carry) w.push_back(carry);
}

unsigned bit_length(const std::vector<u64>& w) {
  for (std::size_t i = w.size(); i-- > 0;)
    if (w[i]) return static_cast<unsigned>(64 * i + 64 - __builtin_clzll(w[i]));
  return 0;
}

void add_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q) {
  if (ifma::add_vec(out, a, b, n, q)) return;
  for (std::size_t i = 0; i < n; ++i) { u64 s = a[i] + b[i]; out[i] = s >= q ? s - q : s; }
}
void sub_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q) {
  if (ifma::sub_vec(out, a, b, n, q)) return;
  for (std::size_t i = 0; i < n; ++i) { u64 s = a[i] - b[i]; out[i] = a[i] >= b[i] ? s : s + q; }
}
void neg_vec(u64* out, const u64* a, std::size_t n, u64 q) {
  for (std::size_t i = 0; i < n; ++i) out[i] = a[i] ? q - a[i] : 0;
}
void mul_vec(u64* out, const u64* a, const u64* b, std::size_t n, const Modulus& m) {
  for (std::size_t i = 0; i < n; ++i) out[i] = barrett128(static_cast<u128>(a[i]) * b[i], m);
}
void fma_vec(u64* out, const u64* a, const u64* b, std::size_t n, const Modulus& m) {
  for (std::size_t i = 0; i < n; ++i) {
    u64 p = barrett128(static_cast<u128>(a[i]) * b[i], m);
    u64 s = out[i] + p;
    out[i] = s >= m.q ? s - m.q : s;
  }
}
void mul_scalar_vec(u64* out, const u64* a, u64 w, std::size_t n, u64 q) {
  u64 wp = shoup(w, q);
  if (ifma::mul_scalar(out, a, w, wp, n, q)) return;
  for (std::size_t i = 0; i < n; ++i) out[i] = mul_shoup(a[i], w, wp, q);
}
void add_scalar_vec(u64* out, const u64* a, u64 c, std::size_t n, u64 q) {
  if (ifma::add_scalar(out, a, c, n, q)) return;
  for (std::size_t i = 0; i < n; ++i) { u64 s = a[i] + c; out[i] = s >= q ? s - q : s; }
}

namespace {
bool detect_ifma() {
#if defined(__x86_64__) && defined(MEDTWIN_HAVE_IFMA)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512ifma") && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}
std::atomic<bool> g_ifma{detect_ifma()};
}  // namespace

bool cpu_has_ifma() { static bool h = detect_ifma(); return h; }
bool cpu_has_avx512dq() {
#if defined(__x86_64__) && defined(MEDTWIN_HAVE_IFMA)
  static bool h = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"));
  return h;
#else
  return false;
#endif
}
void set_ifma_enabled(bool on) { g_ifma = on && cpu_has_ifma(); }
bool ifma_enabled() { return g_ifma.load(std::memory_order_relaxed); }

namespace {
constexpr std::size_t kHugePage = std::size_t(1) << 21;
constexpr std::size_t kHugeMin = std::size_t(4) << 20;
std::size_t huge_round(std::size_t b) { return (b + kHugePage - 1) / kHugePage * kHugePage; }
}  // namespace

void* aligned_allocate(std::size_t bytes, bool huge) {
#if defined(__SANITIZE_ADDRESS__)
  huge = false;  // ASan sees heap buffers' bounds
#endif
  if (!huge || bytes < kHugeMin) {
    void* p = std::aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
    if (!p) throw std::bad_alloc();
    return p;
  }
  const std::size_t len = huge_round(bytes);
  void* m = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  // keep [a, a + len) with a the first 2 MiB boundary; unmap the rest
  const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(m);
  const std::uintptr_t a = (base + kHugePage - 1) / kHugePage * kHugePage;
  if (a > base) munmap(m, a - base);
  if (base + kHugePage > a) munmap(reinterpret_cast<void*>(a + len), base + kHugePage - a);
  madvise(reinterpret_cast<void*>(a), len, MADV_HUGEPAGE);  // advice only: small pages if refused
  return reinterpret_cast<void*>(a);
}

void aligned_deallocate(void* p, std::size_t bytes, bool huge) noexcept {
  if (!p) return;
#if defined(__SANITIZE_ADDRESS__)
  huge = false;
#endif
  if (huge && bytes >= kHugeMin) munmap(p, huge_round(bytes));
  else std::free(p);
}

}  // namespace medtwin
