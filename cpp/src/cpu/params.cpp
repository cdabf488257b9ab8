#include "medtwin/params.h"

#include <stdexcept>

namespace medtwin {

Context::Context(Params p) : prm_(std::move(p)) {
  const std::size_t L1 = prm_.q.size(), K = prm_.p.size();
  if (prm_.n < 2 || (prm_.n & (prm_.n - 1))) throw FormatError("ring dimension is not a power of two");
  if (L1 == 0 || prm_.q_root.size() != L1 || prm_.p_root.size() != K) throw FormatError("incomplete moduli");
  if (prm_.dnum == 0) throw FormatError("dnum must be positive");
  below50_ = true;
  for (std::size_t m = 0; m < L1 + K; ++m) {
    u64 q = m < L1 ? prm_.q[m] : prm_.p[m - L1];
    u64 r = m < L1 ? prm_.q_root[m] : prm_.p_root[m - L1];
    if (q >= (u64(1) << 61)) throw FormatError("modulus above 2^61 is not supported");
    if (q >= (u64(1) << 50)) below50_ = false;
    mods_.emplace_back(q);
    try {
      ntt_.emplace_back(new NTTTables(prm_.n, q, r));
    } catch (const std::invalid_argument& e) {
      throw FormatError(std::string("bad tower root: ") + e.what());
    }
  }
  mont_qneg_.assign(L1 + K, 0);
  mont_r2_.assign(L1 + K, 0);
  for (std::size_t m = 0; m < L1 + K; ++m) {
    u64 q = mods_[m].q;
    if (q >= (u64(1) << 50)) continue;
    u64 x = q;  // Newton: inverse of odd q modulo 2^64
    for (int it = 0; it < 6; ++it) x *= 2 - q * x;
    mont_qneg_[m] = (0 - x) & ((u64(1) << 52) - 1);
    mont_r2_[m] = static_cast<u64>((static_cast<u128>(1) << 104) % q);
  }
  // rescale: q_l^-1 mod q_i for i < l
  qlinv_.resize(L1);
  qlinvp_.resize(L1);
  for (std::size_t l = 1; l < L1; ++l) {
    for (std::size_t i = 0; i < l; ++i) {
      u64 v = invmod(prm_.q[l] % prm_.q[i], prm_.q[i]);
      qlinv_[l].push_back(v);
      qlinvp_[l].push_back(shoup(v, prm_.q[i]));
    }
  }
  // ModDown constants
  if (K) {
    phat_inv_.resize(K); phat_inv_p_.resize(K); phat_modq_.resize(K * L1);
    for (std::size_t k = 0; k < K; ++k) {
      u64 pk = prm_.p[k];
      u64 prod = 1;
      for (std::size_t l = 0; l < K; ++l) if (l != k) prod = mulmod(prod, prm_.p[l] % pk, mods_[L1 + k]);
      phat_inv_[k] = invmod(prod, pk);
      phat_inv_p_[k] = shoup(phat_inv_[k], pk);
      for (std::size_t i = 0; i < L1; ++i) {
        u64 qi = prm_.q[i], v = 1;
        for (std::size_t l = 0; l < K; ++l) if (l != k) v = mulmod(v, prm_.p[l] % qi, mods_[i]);
        phat_modq_[k * L1 + i] = v;
      }
    }
    pinv_modq_.resize(L1); pinv_modq_p_.resize(L1); p_modq_.resize(L1);
    for (std::size_t i = 0; i < L1; ++i) {
      u64 qi = prm_.q[i], v = 1;
      for (std::size_t l = 0; l < K; ++l) v = mulmod(v, prm_.p[l] % qi, mods_[i]);
      p_modq_[i] = v;
      pinv_modq_[i] = invmod(v, qi);
      pinv_modq_p_[i] = shoup(pinv_modq_[i], qi);
    }
  }
}

std::uint32_t Context::num_digits(std::uint32_t T) const {
  std::uint32_t a = prm_.alpha();
  std::uint32_t b = (T + a - 1) / a;
  return b < prm_.dnum ? b : prm_.dnum;
}

const ModUpTable& Context::modup(std::uint32_t T, std::uint32_t j) const {
  std::lock_guard<std::mutex> g(mu_);
  auto key = std::make_pair(T, j);
  auto it = modup_.find(key);
  if (it != modup_.end()) return *it->second;
  auto t = std::make_unique<ModUpTable>();
  const std::uint32_t a = prm_.alpha(), L1 = num_q(), K = num_p();
  t->begin = j * a;
  t->end = std::min<std::uint32_t>((j + 1) * a, T);
  for (std::uint32_t i = t->begin; i < t->end; ++i) {
    u64 qi = prm_.q[i], prod = 1;
    for (std::uint32_t l = t->begin; l < t->end; ++l) if (l != i) prod = mulmod(prod, prm_.q[l] % qi, mods_[i]);
    u64 inv = invmod(prod, qi);
    t->qhat_inv.push_back(inv);
    t->qhat_inv_p.push_back(shoup(inv, qi));
  }
  for (std::uint32_t m = 0; m < T + K; ++m) {
    std::uint32_t idx = m < T ? m : L1 + (m - T);
    if (idx >= t->begin && idx < t->end) continue;
    t->targets.push_back(idx);
    const Modulus& mm = mods_[idx];
    for (std::uint32_t i = t->begin; i < t->end; ++i) {
      u64 v = 1;
      for (std::uint32_t l = t->begin; l < t->end; ++l) if (l != i) v = mulmod(v, prm_.q[l] % mm.q, mm);
      t->qhat_mod.push_back(v);
      t->qhat_mod52.push_back(mm.q < (u64(1) << 50) ? static_cast<u64>((static_cast<u128>(v) << 52) / mm.q) : 0);
      t->qhat_mod64.push_back(shoup(v, mm.q));
    }
  }
  auto& ref = *t;
  modup_[key] = std::move(t);
  return ref;
}

const std::vector<std::uint32_t>& Context::automorphism(u64 k) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = auto_.find(k);
  if (it != auto_.end()) return *it->second;
  const std::uint32_t n = prm_.n;
  const u64 m2 = 2 * u64(n);
  if ((k & 1) == 0 || k >= m2) throw std::invalid_argument("automorphism index must be odd and below 2N");
  unsigned logn = 0;
  while ((1u << logn) < n) ++logn;
  auto perm = std::make_unique<std::vector<std::uint32_t>>(n);
  for (std::uint32_t j = 0; j < n; ++j) {
    u64 e = 2 * bitrev(j, logn) + 1;
    u64 ek = (e * k) % m2;
    (*perm)[j] = static_cast<std::uint32_t>(bitrev((ek - 1) / 2, logn));
  }
  auto& ref = *perm;
  auto_[k] = std::move(perm);
  return ref;
}

}  // namespace medtwin
