// RNS operations: rescale (FIXEDMANUAL, bit-exact with OpenFHE), dropping towers, and the
// basis extensions of hybrid key switching (ModUp from a digit, ModDown from Q*P to Q).
#pragma once
#include <cstdint>
#include <vector>

#include "medtwin/ciphertext.h"
#include "medtwin/params.h"

namespace medtwin {

/// Grow-only per-thread scratch memory (no allocation per operation once warm).
u64* scratch(std::size_t slot, std::size_t words);

/// c'_i = q_l^-1 (c_i - NTT_i([INTT(c_l)] centred mod q_i)); drops the last tower; level+1,
/// noise degree-1, scale / 2^scalingModSize. Throws std::invalid_argument at one tower.
void rescale_inplace(const Context& ctx, Ciphertext& ct);
/// The same, from `in` into `out` (which must be another object): one read and one write of the towers.
void rescale(const Context& ctx, const Ciphertext& in, Ciphertext& out);
/// rescale(k * in) for per-tower constants k[t] < q_t (k null: plain rescale), without forming the
/// product: its multiplication is folded into the dropped tower's INTT and the other towers'
/// last NTT pass. Bit-exact with the two steps.
void rescale_scaled(const Context& ctx, const Ciphertext& in, const u64* k, Ciphertext& out);
/// out = y + rescale(in) (with k: y + rescale(k * in), see rescale_scaled): the sum is formed in
/// the rescale's last pass, so the rescaled value is never written. The same towers and metadata
/// as rescale_scaled followed by add_to(y, .): y must have the rescaled value's elements and ring
/// dimension and at least its towers (its first ones are read, as add_to aligns the levels;
/// std::invalid_argument otherwise).
void rescale_add(const Context& ctx, const Ciphertext& in, const u64* k, const Ciphertext& y, Ciphertext& out);
/// out = y + sum_t rescale(k_t * x_t) (k_t null: rescale(x_t)): a chain of rescale_add with the
/// same towers as the chain, for terms with the same towers. The transforms are linear mod q_i,
/// so the terms' correction terms are summed in the coefficient domain (as exact integers) and
/// each tower takes one forward NTT for the whole sum instead of one per term. Returns false,
/// touching nothing, where this form does not apply (fewer than two or more than 64 terms, other towers, ring,
/// elements, key pair or noise degree, y below the level, sums beyond 2^52): the caller then
/// runs the chain.
bool rescale_sum(const Context& ctx, const Ciphertext& y, const std::vector<const Ciphertext*>& xs,
                 const std::vector<const u64*>& ks, Ciphertext& out);
/// Drop the top k towers (level + k) without scaling.
void drop_towers(Ciphertext& ct, std::uint32_t k);
/// out = the first T towers of every element of ct (a level drop without copying the rest).
void copy_towers(const Ciphertext& ct, std::uint32_t T, Ciphertext& out);
/// Basis conversion of every digit of y (the scaled INTT towers from modup_prepare) to every
/// other modulus of the T + K extended basis, blocked over coefficients so that each digit's
/// towers are read once: x[j][m] in coefficient form. An orphaned `omp for`: call it from every
/// thread of the enclosing parallel region (or outside any).
void modup_conv_blocks(const Context& ctx, const ModUpTable* const* tabs, std::uint32_t beta, const u64* y,
                       std::uint32_t T, u64* x);
/// ModUp of d (T towers, evaluation form) into ext = [beta][T+K][N]; ext index m < T is
/// Q tower m, m >= T is P tower m - T.
void modup(const Context& ctx, const u64* d, std::uint32_t T, u64* ext);
/// First half of ModUp: y_i = INTT(d_i) * Qhat_(j,i)^-1 for every tower (calling thread's scratch slot 2).
u64* modup_prepare(const Context& ctx, const u64* d, std::uint32_t T);
/// Second half for one target modulus `idx` (context index) of digit table `tab`: out = NTT(conv(y)).
void modup_target(const Context& ctx, const ModUpTable& tab, const u64* y, std::uint32_t idx, u64* out);
/// The basis conversion of modup_target (no NTT) on coefficients [c0, c0 + len) only (len % 8 == 0
/// for the vector kernels).
void modup_conv(const Context& ctx, const ModUpTable& tab, const u64* y, std::uint32_t idx, u64* out, std::size_t c0,
                std::size_t len);
/// Coefficients per block of the blocked basis conversions (inputs of a block stay in L1).
constexpr std::size_t kConvBlock = 512;
/// ModDown's P -> Q conversion for E accumulators whose P towers (at accs[e] + (T + k) N) hold
/// the scaled INTT: z[e][i], i < T, blocked over coefficients. An orphaned `omp for` (as
/// modup_conv_blocks).
void moddown_conv_blocks(const Context& ctx, u64* const* accs, std::uint32_t E, std::uint32_t T, u64* z);
/// t = centred(x) mod q_i for x < ql (values above ql/2 stand for x - ql): the rescale's
/// correction term in tower i, scalar form.
void centre_tower(const Context& ctx, const u64* x, u64 ql, std::uint32_t i, u64* t);

}  // namespace medtwin
