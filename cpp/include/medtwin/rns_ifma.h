// AVX-512 IFMA kernels for RNS basis conversion and key-switching inner products on towers
// whose modulus is below 2^50 (52-bit lanes). Each returns false when the IFMA path is not
// available (not compiled, CPU without IFMA, or disabled), and the caller uses the portable path.
#pragma once
#include <cstddef>
#include <cstdint>

#include "medtwin/modarith.h"

namespace medtwin {
namespace ifma {

/// out[c] = sum_i in[i][c] * w[i] mod q for in[i][c] < 2^52, w[i] < q < 2^50, w52[i] = floor(w 2^52 / q).
bool conv_small(const u64* const* in, const u64* w, const u64* w52, std::size_t cnt, u64 q, u64* out, std::size_t n);
/// out[c] = sum_i in[i][c] * w[i] mod q for in < 2^64 and 2^50 <= q < 2^62 (AVX-512F/DQ),
/// wp[i] = floor(w 2^64 / q).
bool conv_large(const u64* const* in, const u64* w, const u64* wp, std::size_t cnt, u64 q, u64* out, std::size_t n);
/// The same with IFMA products for inputs below 2^50 and 2^56 <= q < 2^62, cnt <= 8: the sum is
/// accumulated exactly in three 52-bit limbs and reduced once (declines otherwise).
bool conv_large52(const u64* const* in, const u64* w, std::size_t cnt, u64 q, u64* out, std::size_t n);
/// Same for inputs below 2^64 (q < 2^50, cnt <= 64): the products of the inputs' 52-bit halves
/// accumulated exactly in three limbs, reduced once per output.
bool conv_wide(const u64* const* in, const u64* w, std::size_t cnt, u64 q, u64* out, std::size_t n);
/// o0[c] = sum_j e[j][c] * b[j][c], o1 likewise with a, where a and b are in Montgomery form
/// (x 2^52 mod q); qneg = -q^-1 mod 2^52. Inputs e < q. pack_bits: 0, or the width w at which
/// a and b are packed (SwitchKey::pack_bits; needs cpu_has_vbmi()).
bool inner_mont(const u64* const* e, const u64* const* b, const u64* const* a, std::size_t cnt, u64 q, u64 qneg,
                u64* o0, u64* o1, std::size_t n, unsigned pack_bits = 0);
/// Whether the CPU has AVX-512 VBMI (the packed key's byte permute).
bool cpu_has_vbmi();

/// Inner product for moduli of 50 to 61 bits (IFMA and AVX-512DQ): o0 = sum_j e[j] * b[j], o1
/// likewise with a, accumulated exactly in 52-bit limbs and reduced once. Inputs e, a, b < q,
/// cnt <= 32.
bool inner_wide(const u64* const* e, const u64* const* b, const u64* const* a, std::size_t cnt, u64 q, u64* o0,
                u64* o1, std::size_t n);
/// out[c] = centred(x[c]) mod q: x < ql, values above ql/2 stand for x - ql (ql < 2q, AVX-512F).
bool center_mod(u64* out, const u64* x, std::size_t n, u64 q, u64 ql);
/// out = (x - sub) mod q for x < 2^52, sub < q < 2^50.
bool reduce52_sub(u64* out, const u64* x, std::size_t n, u64 q, u64 sub);

/// out = a * b mod q (element-wise, a, b < q < 2^50): two Montgomery products, the second by
/// r2 = 2^104 mod q.
bool mul_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q, u64 qneg, u64 r2);
/// Tensor of one tower: c0 = a0 b0, c1 = a0 b1 + a1 b0, c2 = a1 b1 (mod q < 2^50).
/// stream01: write c0 and c1 with non-temporal stores (when they are read back only after much
/// other traffic, as in a multiplication's key switch; 64-byte aligned outputs only).
bool tensor_tower(const u64* a0, const u64* a1, const u64* b0, const u64* b1, u64* c0, u64* c1, u64* c2,
                  std::size_t n, u64 q, u64 qneg, u64 r2, bool stream01 = false);

/// Element-wise out = a + b, a - b, -a mod q (inputs < q < 2^63; AVX-512F).
bool add_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q);
bool sub_vec(u64* out, const u64* a, const u64* b, std::size_t n, u64 q);
/// out = a * w mod q for one constant w < q, a < q: 52-bit Shoup products below 2^50 (IFMA),
/// 64-bit ones (wp = floor(w 2^64 / q), AVX-512DQ) for wider moduli below 2^62.
bool mul_scalar(u64* out, const u64* a, u64 w, u64 wp, std::size_t n, u64 q);
/// out = a + c mod q for one constant c < q (inputs < q < 2^63; AVX-512F).
bool add_scalar(u64* out, const u64* a, u64 c, std::size_t n, u64 q);

}  // namespace ifma
}  // namespace medtwin
