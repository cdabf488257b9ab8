// Engine ciphertexts and the OpenFHE bridge (cereal portable binary, openfhe 1.6.1).
// The bridge is the only code that knows OpenFHE's byte layout.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "medtwin/params.h"

namespace medtwin {

/// Large-buffer arena (see ciphertext.cpp): buffers of 1 MiB and more are cut from memory the
/// process already touched where possible (best fit, split, coalesced), so that an operation
/// does not pay the first touch of fresh pages for a 20-40 MB ciphertext.
void* pool_allocate(std::size_t bytes);
void pool_deallocate(void* p, std::size_t bytes) noexcept;
/// Bytes free in the arena (kept mapped for reuse); return their pages to the system.
std::size_t pool_cached_bytes();
void pool_release();

/// Allocator over the pool that leaves new elements uninitialised (every kernel writes them).
template <class T>
struct PoolAlloc {
  using value_type = T;
  PoolAlloc() = default;
  template <class U>
  PoolAlloc(const PoolAlloc<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(pool_allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { pool_deallocate(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) noexcept {}  // default-init: no zeroing
  template <class U, class... A>
  void construct(U* p, A&&... a) { ::new (static_cast<void*>(p)) U(std::forward<A>(a)...); }
  template <class U>
  bool operator==(const PoolAlloc<U>&) const { return true; }
  template <class U>
  bool operator!=(const PoolAlloc<U>&) const { return false; }
};
using PolyBuffer = std::vector<u64, PoolAlloc<u64>>;

/// AlignedAlloc that leaves new elements uninitialised: for buffers every writer fills (the
/// evaluation keys, gigabytes at N = 2^16, would otherwise be zeroed before being overwritten).
template <class T>
struct UninitAlloc : AlignedAlloc<T> {
  using value_type = T;
  template <class U>
  struct rebind { using other = UninitAlloc<U>; };
  UninitAlloc() = default;
  template <class U>
  UninitAlloc(const UninitAlloc<U>&) {}
  template <class U>
  void construct(U* p) noexcept {}  // default-init: no zeroing
  template <class U, class... A>
  void construct(U* p, A&&... a) { ::new (static_cast<void*>(p)) U(std::forward<A>(a)...); }
};
using KeyBuffer = std::vector<u64, UninitAlloc<u64>>;

/// Writer state after OpenFHE's ciphertext header (everything before the element count):
/// kept verbatim so that OpenFHE matches output bytes to its live context and keys.
struct CtHeader {
  std::string bytes;                    // verbatim prefix up to (excluding) the element count
  std::vector<std::uint32_t> tower_ids;  // cereal pointer ids of the Q towers' parameter objects
  std::uint32_t elp_id = 0;             // pointer id of the full-Q ILDCRTParams
  std::uint32_t next_id = 0;            // next free cereal pointer id
  bool dcrt_ver = false, poly_ver = false, vec_ver = false;  // class versions already written
};

struct Ciphertext {
  std::uint32_t n = 0;        // ring dimension
  std::uint32_t elems = 0;    // 2, or 3 before relinearisation
  std::uint32_t towers = 0;   // number of Q towers (L + 1 - level)
  PolyBuffer data;            // [elem][tower][n], evaluation form
  std::uint32_t slots = 0, level = 0, hops = 0, noise_deg = 1;
  double scale = 1.0;
  u64 scheme_id = 1;
  std::int32_t encoding = 4;
  std::shared_ptr<const CtHeader> header;
  std::string key_tag;

  Ciphertext() = default;
  Ciphertext(Ciphertext&&) noexcept = default;
  Ciphertext& operator=(Ciphertext&&) noexcept = default;
  /// Copies metadata and towers (one memcpy; the pool allocator's element-wise copy is slow).
  Ciphertext(const Ciphertext& o) { *this = o; }
  Ciphertext& operator=(const Ciphertext& o) {
    if (this == &o) return *this;
    n = o.n; elems = o.elems; towers = o.towers;
    slots = o.slots; level = o.level; hops = o.hops; noise_deg = o.noise_deg;
    scale = o.scale; scheme_id = o.scheme_id; encoding = o.encoding;
    header = o.header; key_tag = o.key_tag;
    data.clear();
    data.resize(o.data.size());  // default-initialised: no zeroing
    if (!o.data.empty()) std::memcpy(data.data(), o.data.data(), o.data.size() * sizeof(u64));
    return *this;
  }

  u64* poly(std::uint32_t e, std::uint32_t t) { return data.data() + (std::size_t(e) * towers + t) * n; }
  const u64* poly(std::uint32_t e, std::uint32_t t) const { return data.data() + (std::size_t(e) * towers + t) * n; }
  void resize(std::uint32_t e, std::uint32_t t) { elems = e; towers = t; data.resize(std::size_t(e) * t * n); }
};

/// Hybrid key-switching key over Q*P: per digit j, polynomials a_j, b_j with L+1+K towers each.
/// After prepare_switch_key, the towers whose modulus is below 2^50 hold the Montgomery form
/// x 2^52 mod q (for the IFMA inner product; mont_tower[t] >= 0 marks them), the others x itself
/// (their IFMA inner product needs no constants beside the key).
struct SwitchKey {
  std::uint32_t digits = 0, towers = 0, n = 0;
  KeyBuffer a, b;  // [digit][tower][n]
  std::vector<std::int32_t> mont_tower;
  std::uint32_t mont_count = 0;
  std::vector<u64> mont_inv;  // per tower: 2^-52 mod q (Montgomery towers; undoes the form)
  // Per tower: 0, or the bit width w of the packed form its polynomials were put in by
  // prepare_switch_key (Montgomery towers, CPUs with AVX-512 VBMI): value c of a polynomial is
  // bits [w c, w c + w) of its n w / 8 bytes (little-endian), stored from the start of its
  // n-word slot. The inner product then streams w / 64 of the key's bytes (41-bit moduli: 0.64).
  std::vector<std::uint8_t> pack_bits;
  const u64* a_poly(std::uint32_t j, std::uint32_t t) const { return a.data() + (std::size_t(j) * towers + t) * n; }
  const u64* b_poly(std::uint32_t j, std::uint32_t t) const { return b.data() + (std::size_t(j) * towers + t) * n; }
};

/// Value c of a polynomial packed at w bits per value (SwitchKey::pack_bits; w <= 56). The slot
/// holds n words, so the 8-byte read stays inside it.
inline u64 packed_value(const u64* poly, unsigned w, std::size_t c) {
  const std::size_t bit = std::size_t(w) * c;
  u64 v;
  std::memcpy(&v, reinterpret_cast<const unsigned char*>(poly) + bit / 8, 8);
  return (v >> (bit % 8)) & ((u64(1) << w) - 1);
}

}  // namespace medtwin

namespace medtwin {

/// Element-wise operations (evaluation form). Binary operations first drop towers of the operand
/// with more towers (level alignment). Throw std::invalid_argument on mismatched noise degree
/// or element count.
void align_levels(Ciphertext& a, Ciphertext& b);
/// out's metadata (ring dimension, slots, level, noise degree, scale, header, key tag) := a's.
void copy_meta(const Ciphertext& a, Ciphertext& out);
/// The same with the level of a aligned to `towers` of its towers (what add_to(a, .) gives a sum
/// with that many towers).
void copy_meta_aligned(const Ciphertext& a, std::uint32_t towers, Ciphertext& out);
void add_inplace(const Context& ctx, Ciphertext& a, const Ciphertext& b);
void sub_inplace(const Context& ctx, Ciphertext& a, const Ciphertext& b);
void negate_inplace(const Context& ctx, Ciphertext& a);
/// a *= round(c * 2^scalingModSize): noise degree + 1, scale * 2^scalingModSize.
void mul_const_inplace(const Context& ctx, Ciphertext& a, double c);
/// a += round(c * a.scale) in every slot.
void add_const_inplace(const Context& ctx, Ciphertext& a, double c);
/// a *= plaintext towers pt [a.towers][N] encoded at scale `pt_scale` (noise degree + 1).
void mul_plain_inplace(const Context& ctx, Ciphertext& a, const u64* pt, double pt_scale);
/// a += plaintext towers pt [a.towers][N] encoded at a.scale.
void add_plain_inplace(const Context& ctx, Ciphertext& a, const u64* pt);
/// Out-of-place forms (out must be another object than the inputs): one read of the inputs and
/// one write of the result instead of a copy followed by the in-place operation. Same results,
/// level alignment and errors as the in-place forms.
void add_to(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out);
void sub_to(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out);
void negate_to(const Context& ctx, const Ciphertext& a, Ciphertext& out);
void mul_const_to(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out);
/// out = rescale(a * c) in one pass (no intermediate product): bit-exact with mul_const + rescale.
void mul_const_rescale(const Context& ctx, const Ciphertext& a, double c, Ciphertext& out);
/// out = y + rescale(a * c) in one pass: bit-exact with mul_const_rescale followed by add_to(y, .).
void mul_const_rescale_add(const Context& ctx, const Ciphertext& a, double c, const Ciphertext& y, Ciphertext& out);
/// out = y + sum_t rescale(x_t * c_t) (has_c[t] false: rescale(x_t)) as one op where
/// rescale_sum applies (the same towers and metadata as the chain of mul_const_rescale_add /
/// rescale_add); false, touching nothing, where it does not.
bool mul_const_rescale_sum(const Context& ctx, const Ciphertext& y, const std::vector<const Ciphertext*>& xs,
                           const std::vector<double>& cs, const std::vector<char>& has_c, Ciphertext& out);
void mul_plain_to(const Context& ctx, const Ciphertext& a, const u64* pt, double pt_scale, Ciphertext& out);
/// (a0 b0, a0 b1 + a1 b0, a1 b1): noise degrees add, scales multiply.
void tensor(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out);
/// The tensor product with its third element written to d2 ([tower][n], the common towers)
/// instead of into out, which gets two elements (for a relinearisation right after it).
void tensor_split(const Context& ctx, const Ciphertext& a, const Ciphertext& b, Ciphertext& out, u64* d2);

}  // namespace medtwin
