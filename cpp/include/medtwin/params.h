// CKKS parameters as resolved by OpenFHE (read from its serialised objects) and the
// engine context: NTT tables for every Q and P modulus and the RNS constants.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "medtwin/modarith.h"
#include "medtwin/ntt.h"

namespace medtwin {

/// Raised for bytes that are not an OpenFHE object of the expected layout (maps to
/// medtwin.errors.CiphertextFormatError).
struct FormatError : std::runtime_error { using std::runtime_error::runtime_error; };
/// Raised for objects from another key pair / context (maps to medtwin.errors.KeyMismatchError).
struct MismatchError : std::runtime_error { using std::runtime_error::runtime_error; };

/// Parameters from OpenFHE's embedded crypto context (CryptoParametersCKKSRNS).
struct Params {
  std::uint32_t n = 0;                 // ring dimension N
  std::vector<u64> q, q_root;          // Q towers q_0..q_L and their primitive 2N-th roots
  std::vector<u64> p, p_root;          // P towers (from the evaluation keys)
  std::uint32_t dnum = 0;              // number of key-switching digits
  std::uint32_t ks_tech = 0;           // 2 = HYBRID
  std::uint32_t rs_tech = 0;           // 0 = FIXEDMANUAL, 1 = FIXEDAUTO, 2 = FLEXIBLEAUTO, ...
  std::uint32_t scaling_mod_size = 0;  // bits of the scaling primes
  std::uint32_t batch_size = 0;        // slots of a packed plaintext
  std::uint32_t mult_depth = 0;
  std::uint32_t aux_bits = 0;
  std::uint32_t first_mod_size = 0;
  std::string key_tag;
  std::uint32_t num_q() const { return static_cast<std::uint32_t>(q.size()); }
  std::uint32_t alpha() const { return (num_q() + dnum - 1) / dnum; }
};

/// Constants for extending digit j of a T-tower ciphertext to the other Q towers and P.
struct ModUpTable {
  std::uint32_t begin = 0, end = 0;      // digit towers [begin, end)
  std::vector<u64> qhat_inv, qhat_inv_p;  // [Qhat_(j,i)^-1]_(q_i) and Shoup constants
  std::vector<u64> targets;               // indices into Context::all moduli (Q then P)
  std::vector<u64> qhat_mod;              // [target][i] = [Qhat_(j,i)]_(target)
  std::vector<u64> qhat_mod52;            // 52-bit Shoup constants (targets below 2^50)
  std::vector<u64> qhat_mod64;            // 64-bit Shoup constants (every target)
};

class Context {
 public:
  explicit Context(Params params);
  const Params& params() const { return prm_; }
  std::uint32_t n() const { return prm_.n; }
  std::uint32_t num_q() const { return prm_.num_q(); }
  std::uint32_t num_p() const { return static_cast<std::uint32_t>(prm_.p.size()); }
  /// Modulus index m: Q towers 0..L, then P towers L+1..L+K.
  u64 modulus(std::size_t m) const { return mods_[m].q; }
  const Modulus& mod(std::size_t m) const { return mods_[m]; }
  const NTTTables& ntt(std::size_t m) const { return *ntt_[m]; }
  bool all_below_2_50() const { return below50_; }

  // rescale: q_l^-1 mod q_i, [l][i]
  u64 rescale_inv(std::size_t l, std::size_t i) const { return qlinv_[l][i]; }
  u64 rescale_inv_p(std::size_t l, std::size_t i) const { return qlinvp_[l][i]; }
  // ModDown constants
  const std::vector<u64>& phat_inv() const { return phat_inv_; }     // [(P/p_k)^-1]_(p_k)
  const std::vector<u64>& phat_inv_p() const { return phat_inv_p_; }
  u64 phat_mod_q(std::size_t k, std::size_t i) const { return phat_modq_[k * num_q() + i]; }
  u64 pinv_mod_q(std::size_t i) const { return pinv_modq_[i]; }
  u64 pinv_mod_q_p(std::size_t i) const { return pinv_modq_p_[i]; }
  u64 p_mod_q(std::size_t i) const { return p_modq_[i]; }
  /// -m^-1 mod 2^52 for Montgomery products (moduli below 2^50; 0 otherwise).
  u64 mont_neg_inv(std::size_t m) const { return mont_qneg_[m]; }
  /// 2^104 mod m (Montgomery R^2 for R = 2^52; moduli below 2^50).
  u64 mont_r2(std::size_t m) const { return mont_r2_[m]; }
  /// ModUp table of digit j for a ciphertext with T towers (built once, cached).
  const ModUpTable& modup(std::uint32_t T, std::uint32_t j) const;
  std::uint32_t num_digits(std::uint32_t T) const;

  /// Automorphism permutation for index k (out[j] = in[perm[j]]), cached.
  const std::vector<std::uint32_t>& automorphism(u64 k) const;

 private:
  Params prm_;
  std::vector<Modulus> mods_;
  std::vector<std::unique_ptr<NTTTables>> ntt_;
  bool below50_ = false;
  std::vector<std::vector<u64>> qlinv_, qlinvp_;
  std::vector<u64> phat_inv_, phat_inv_p_, phat_modq_, pinv_modq_, pinv_modq_p_, p_modq_;
  std::vector<u64> mont_qneg_, mont_r2_;
  mutable std::mutex mu_;
  mutable std::map<std::pair<std::uint32_t, std::uint32_t>, std::unique_ptr<ModUpTable>> modup_;
  mutable std::map<u64, std::unique_ptr<std::vector<std::uint32_t>>> auto_;
};

}  // namespace medtwin
