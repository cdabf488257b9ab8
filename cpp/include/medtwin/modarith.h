// 64-bit modular arithmetic: Shoup multiplication by a precomputed constant and
// Barrett reduction of 128-bit products (moduli below 2^62).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <vector>

namespace medtwin {

using u64 = std::uint64_t;
using u128 = unsigned __int128;

/// std::allocator with 64-byte (cache-line) aligned storage: the AVX-512 kernels' 64-byte loads
/// and stores then never straddle two lines. A large std::vector's storage from malloc starts 16
/// bytes into a page, so every 64-byte access to such a tower split two lines. Measured with the
/// NTT tables, the evaluation keys and the key-switch scratch aligned (N = 2^16): forward NTT in
/// L2 100 -> 88 us (41-bit q) and 255 -> 230 us (60-bit q), HMult + relinearisation 23.1 -> 22.1 ms.
/// kHuge: storage for long-lived buffers of megabytes (the key-switch scratch): at least 4 MiB
/// are mapped afresh, 2 MiB aligned, with transparent huge pages requested (madvise), so that
/// streaming them through the kernels does not walk the page tables every 4 KiB. (Memory reused
/// from the heap is already backed by small pages.) Smaller requests take the aligned heap path.
/// Not for buffers allocated per operation: fresh pages cost a first touch. Measured at N = 2^16,
/// depth 20 (five rounds of fresh processes, builds alternating, paired medians): HMult+relin
/// -1.3%, HMult+rescale -3.6%, rotation -3%. Not for the evaluation keys: mapped afresh, they no
/// longer reuse the heap memory the key import frees, and the main job's peak RSS grew 7.4 ->
/// 8.7 GB for no measurable gain in its time.
void* aligned_allocate(std::size_t bytes, bool huge);
void aligned_deallocate(void* p, std::size_t bytes, bool huge) noexcept;
template <class T, bool kHuge = false>
struct AlignedAlloc {
  using value_type = T;
  template <class U>
  struct rebind { using other = AlignedAlloc<U, kHuge>; };
  AlignedAlloc() = default;
  template <class U>
  AlignedAlloc(const AlignedAlloc<U, kHuge>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(aligned_allocate(n * sizeof(T), kHuge)); }
  void deallocate(T* p, std::size_t n) noexcept { aligned_deallocate(p, n * sizeof(T), kHuge); }
  template <class U>
  bool operator==(const AlignedAlloc<U, kHuge>&) const { return true; }
  template <class U>
  bool operator!=(const AlignedAlloc<U, kHuge>&) const { return false; }
};
/// A vector of words with 64-byte aligned storage (towers, tables, scratch).
using AlignedVec = std::vector<u64, AlignedAlloc<u64>>;
/// The same in huge pages where large (the key-switch scratch).
using HugeVec = std::vector<u64, AlignedAlloc<u64, true>>;

/// A modulus q < 2^62 with its Barrett constant floor(2^128 / q) (two words).
struct Modulus {
  u64 q = 0;
  u64 r0 = 0, r1 = 0;  // floor(2^128 / q) = r1 * 2^64 + r0
  Modulus() = default;
  explicit Modulus(u64 q_);
};

/// floor(w * 2^64 / q): the Shoup constant of w (requires w < q).
inline u64 shoup(u64 w, u64 q) { return static_cast<u64>((static_cast<u128>(w) << 64) / q); }

/// a * w mod q in [0, 2q) for any a < 2^64, w < q, wp = shoup(w, q).
inline u64 mul_shoup_lazy(u64 a, u64 w, u64 wp, u64 q) {
  u64 hi = static_cast<u64>((static_cast<u128>(a) * wp) >> 64);
  return a * w - hi * q;
}

/// a * w mod q in [0, q).
inline u64 mul_shoup(u64 a, u64 w, u64 wp, u64 q) {
  u64 r = mul_shoup_lazy(a, w, wp, q);
  return r >= q ? r - q : r;
}

/// x mod q for x < 2^128 by Barrett reduction with the two-word constant.
inline u64 barrett128(u128 x, const Modulus& m) {
  u64 x0 = static_cast<u64>(x), x1 = static_cast<u64>(x >> 64);
  u128 t = static_cast<u128>(x0) * m.r0;
  u64 carry = static_cast<u64>(t >> 64);
  u128 s = static_cast<u128>(x0) * m.r1 + carry;
  u64 tmp1 = static_cast<u64>(s), tmp3 = static_cast<u64>(s >> 64);
  u128 t3 = static_cast<u128>(x1) * m.r0;
  u128 s2 = static_cast<u128>(tmp1) + static_cast<u64>(t3);
  carry = static_cast<u64>(s2 >> 64);
  u64 qe = x1 * m.r1 + static_cast<u64>(t3 >> 64) + tmp3 + carry;
  u64 r = x0 - qe * m.q;
  while (r >= m.q) r -= m.q;
  return r;
}

/// a * b mod q (a, b < 2^64) by Barrett.
inline u64 mulmod(u64 a, u64 b, const Modulus& m) { return barrett128(static_cast<u128>(a) * b, m); }

inline u64 addmod(u64 a, u64 b, u64 q) { u64 s = a + b; return s >= q ? s - q : s; }
inline u64 submod(u64 a, u64 b, u64 q) { return a >= b ? a - b : a + q - b; }
inline u64 negmod(u64 a, u64 q) { return a == 0 ? 0 : q - a; }

/// Whether a loop over `words` 64-bit values is worth an OpenMP parallel region (small rings run
/// on the calling thread: thread wake-ups cost more than the work, worst on a loaded machine).
inline bool parallel_worth(std::size_t words) { return words >= (std::size_t(1) << 15); }

/// Reference (slow) helpers used in precomputation only.
u64 powmod(u64 a, u64 e, u64 q);
/// Inverse of a mod q; throws std::invalid_argument when none exists.
u64 invmod(u64 a, u64 q);
/// x mod q for a little-endian multi-word integer.
u64 mod_words(const std::vector<u64>& words, u64 q);
/// words *= m (in place, grows).
void mul_words(std::vector<u64>& words, u64 m);
/// Bit length of a little-endian multi-word integer.
unsigned bit_length(const std::vector<u64>& words);

/// Element-wise kernels over one tower of length n (all inputs < q, outputs < q).
void add_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q);
void sub_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q);
void neg_vec(u64* out, const u64* a, std::size_t n, u64 q);
void mul_vec(u64* out, const u64* a, const u64* b, std::size_t n, const Modulus& m);
/// out += a * b
void fma_vec(u64* out, const u64* a, const u64* b, std::size_t n, const Modulus& m);
void mul_scalar_vec(u64* out, const u64* a, u64 w, std::size_t n, u64 q);
void add_scalar_vec(u64* out, const u64* a, u64 c, std::size_t n, u64 q);

/// Whether the CPU supports AVX-512 IFMA (checked once with cpuid) and the library was built with it.
bool cpu_has_ifma();
/// Whether the CPU has AVX-512F/DQ (the vector path for moduli of 50 to 61 bits).
bool cpu_has_avx512dq();
/// Enable or disable the IFMA path at run time (it is used only where every modulus < 2^50).
void set_ifma_enabled(bool on);
bool ifma_enabled();

}  // namespace medtwin
