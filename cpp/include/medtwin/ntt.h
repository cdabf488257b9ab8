// Negacyclic NTT over Z_q[X]/(X^N+1) in OpenFHE's evaluation order:
// entry j of the output is a(psi^(2*bitrev(j)+1)) mod q, psi a primitive 2N-th root of unity.
// Forward: Cooley-Tukey with lazy (Harvey) butterflies; inverse: Gentleman-Sande.
// Inputs and outputs are fully reduced, in [0, q).
#pragma once
#include <cstdint>
#include <vector>

#include "medtwin/modarith.h"

namespace medtwin {

class NTTTables {
 public:
  /// Throws std::invalid_argument when psi is not a primitive 2N-th root of unity mod q.
  NTTTables(std::size_t n, u64 q, u64 psi);
  std::size_t n() const { return n_; }
  u64 q() const { return q_; }
  u64 psi() const { return psi_; }
  const Modulus& mod() const { return mod_; }

  void forward(u64* a) const;
  void inverse(u64* a) const;
  /// Inverse NTT with the result multiplied by w < q (folded into the n^-1 scaling pass).
  void inverse_mul(u64* a, u64 w) const;
  /// The same reading the input from src (n values < q) and writing the result to a (src may equal a).
  void inverse_mul_from(const u64* src, u64* a, u64 w) const;
  /// Forward NTT of a (a is scratch afterwards), fused with the last pass:
  /// out[j] = (x[j] - NTT(a)[j]) * w mod q, plus add[j] mod q when add is not null.
  /// x, add < q; out may alias x or add (element-wise), never a. With perm (n entries), x and add
  /// are read permuted: x[perm[j]], add[perm[j]] (an automorphism in evaluation form); then out
  /// must alias neither.
  void forward_sub_mul(u64* a, const u64* x, u64 w, u64* out, const u64* add,
                       const std::uint32_t* perm = nullptr) const;
  /// forward_sub_mul of a = centred(src) mod q, read from src in the transform's first pass
  /// (src < ql < 2q; values above ql/2 stand for value - ql: the rescale's correction term).
  /// Returns false, touching nothing, where the vector path does not apply (then centre src into
  /// a and call forward_sub_mul).
  /// xw != 1: x is read as x * xw mod q (a constant multiplication fused into the rescale).
  bool forward_centred_sub_mul(u64* a, const u64* src, u64 ql, const u64* x, u64 w, u64* out, u64 xw = 1,
                               const u64* add = nullptr) const;
  /// ModDown fused with the rescale that follows it, for one tower (vector path only):
  /// out[j] = (x[j] - NTT(a + centred(src) * sm)[j]) * w + add[j] * aw (+ add2[j]) mod q, with a < q
  /// (the P -> Q conversion), src < ql < 2q, x, add, add2 < q and sm, w, aw < q. out may alias x,
  /// add or add2 (element-wise), never a. Returns false, touching nothing, where it does not apply.
  bool forward_centred_add_sub_mul(u64* a, const u64* src, u64 ql, u64 sm, const u64* x, u64 w, u64* out,
                                   const u64* add, u64 aw, const u64* add2) const;
  /// Whether forward_centred_sub_mul / forward_centred_add_sub_mul apply for this centring modulus.
  bool centred_vector_path(u64 ql) const;

  // Tables (public for the IFMA/CUDA paths).
  AlignedVec w, wp;    // psi^bitrev(i) and Shoup constants
  AlignedVec iw, iwp;  // psi^-bitrev(i)
  u64 ninv = 0, ninvp = 0;
  // 52-bit Shoup constants for the IFMA path (valid when q < 2^50).
  AlignedVec w52, iw52;
  u64 ninv52 = 0;

 private:
  std::size_t n_;
  unsigned logn_;
  u64 q_, psi_;
  Modulus mod_;
};

/// bitrev of i over `bits` bits.
inline std::size_t bitrev(std::size_t i, unsigned bits) {
  std::size_t r = 0;
  for (unsigned b = 0; b < bits; ++b) { r = (r << 1) | (i & 1); i >>= 1; }
  return r;
}

/// Fused last-pass operations of the NTTs (see NTTTables::inverse_mul, forward_sub_mul).
struct NTTEpilogue {
  u64 w = 0, w_shoup = 0, w52 = 0;  // multiplier, its 64-bit and (q < 2^50) 52-bit Shoup constants
  const u64* x = nullptr;           // forward: subtract the transform from x (null: plain forward)
  u64* out = nullptr;
  const u64* add = nullptr;
  const std::uint32_t* perm = nullptr;  // read x and add at perm[j] (null: at j)
  const u64* centre_src = nullptr;      // forward prologue: input = centred(centre_src) mod q
  u64 centre_ql = 0;                    // ... the centring modulus (< 2q)
  bool centre_mul = false;              // input = a + centred(centre_src) * cm mod q (52-bit Shoup pair)
  u64 cm = 0, cm52 = 0;
  bool add_mul = false;                 // read add as add * aw mod q
  u64 aw = 0, aw_shoup = 0, aw52 = 0;
  const u64* add2 = nullptr;            // then add add2 (read like add)
  bool x_mul = false;                   // read x as x * xw mod q
  u64 xw = 0, xw_shoup = 0, xw52 = 0;
};

namespace ifma {
bool forward(const NTTTables& t, u64* a, const NTTEpilogue* ep = nullptr);   // false when not applicable
bool inverse(const NTTTables& t, u64* a, const NTTEpilogue* ep = nullptr, const u64* src = nullptr);
}

}  // namespace medtwin
