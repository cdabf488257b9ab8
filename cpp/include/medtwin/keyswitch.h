// Hybrid key switching with OpenFHE's keys: relinearisation and rotations (single and hoisted).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "medtwin/ciphertext.h"
#include "medtwin/params.h"

namespace medtwin {

/// Evaluation keys of one key pair: relinearisation key and rotation keys by automorphism index.
struct KeySet {
  std::shared_ptr<Context> ctx;
  std::shared_ptr<SwitchKey> relin;
  std::map<u64, std::shared_ptr<SwitchKey>> rot;
  std::string key_tag;
};

/// Precompute the key's Montgomery forms for the IFMA path (no-op without IFMA).
void prepare_switch_key(const Context& ctx, SwitchKey& key);
/// Automorphism index of a slot rotation by r (5^r mod 2N; negative r allowed).
u64 rotation_index(std::uint32_t n, std::int64_t r);
/// (c0, c1, c2) -> (c0 + ModDown(acc0), c1 + ModDown(acc1)) with d = c2. Throws std::invalid_argument.
void relinearize_inplace(const Context& ctx, Ciphertext& ct, const SwitchKey& key);
/// out = relinearize(tensor(a, b)) without a three-element intermediate: the third element goes to
/// scratch memory and out holds two elements only (a three-element buffer would stay 1.5x the
/// size of the result for as long as the product lives). Same towers as the two steps.
void mul_relin(const Context& ctx, const Ciphertext& a, const Ciphertext& b, const SwitchKey& key, Ciphertext& out);
/// out = rescale(mul_relin(a, b)), and with y: y + that, without the intermediate product (the
/// ModDown and the rescale share their transforms, see keyswitch_fused in keyswitch.cpp). Bit-exact with the
/// separate ops (mul_relin, rescale, add_to(y, .)) and with their metadata; out must be another
/// object than a, b and y. A y below the rescaled value's level (or of three elements) takes
/// the two steps (add_to aligns or refuses). Throws std::invalid_argument as those ops do.
/// factor f (without y): out = f rescale(mul_relin(a, b)) mod q, the towers of adding the value
/// to itself f times (1 <= f < 2^32).
void mul_relin_rescale(const Context& ctx, const Ciphertext& a, const Ciphertext& b, const SwitchKey& key,
                       Ciphertext& out, const Ciphertext* y = nullptr, u64 factor = 1);
/// Rotation by automorphism k: out0 = sigma_k(c0) + ModDown(sigma_k(acc0)), out1 = ModDown(sigma_k(acc1)).
void rotate(const Context& ctx, const Ciphertext& in, u64 k, const SwitchKey& key, Ciphertext& out);
/// Several rotations of one input sharing one ModUp (hoisting); each then takes the fused inner
/// product and ModDown of rotate. Same towers as rotate, one rotation at a time.
void rotate_hoisted(const Context& ctx, const Ciphertext& in, const std::vector<u64>& ks,
                    const std::vector<const SwitchKey*>& keys, std::vector<Ciphertext>& outs);

}  // namespace medtwin
