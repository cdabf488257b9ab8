#include "medtwin/encoder.h"

#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "medtwin/rns.h"

namespace medtwin {
namespace {

struct FFTTables {
  std::vector<u64> rot;                      // 5^j mod 2N, j < N/2
  std::vector<std::complex<double>> ksi;     // exp(2 pi i k / 2N), k <= 2N
};

const FFTTables& fft_tables(std::uint32_t n) {
  static std::mutex mu;
  static std::map<std::uint32_t, std::unique_ptr<FFTTables>> cache;
  std::lock_guard<std::mutex> g(mu);
  auto it = cache.find(n);
  if (it != cache.end()) return *it->second;
  auto t = std::make_unique<FFTTables>();
  const u64 M = 2 * u64(n);
  t->rot.resize(n / 2);
  u64 r = 1;
  for (std::uint32_t j = 0; j < n / 2; ++j) { t->rot[j] = r; r = (r * 5) % M; }
  t->ksi.resize(M + 1);
  for (u64 k = 0; k <= M; ++k) {
    double ang = 2.0 * M_PI * static_cast<double>(k) / static_cast<double>(M);
    t->ksi[k] = {std::cos(ang), std::sin(ang)};
  }
  auto& ref = *t;
  cache[n] = std::move(t);
  return ref;
}

void bit_reverse(std::vector<std::complex<double>>& v) {
  const std::size_t n = v.size();
  for (std::size_t i = 1, j = 0; i < n; ++i) {
    std::size_t bit = n >> 1;
    for (; j >= bit; bit >>= 1) j -= bit;
    j += bit;
    if (i < j) std::swap(v[i], v[j]);
  }
}

// Inverse of the canonical embedding restricted to the slots (HEAAN's fftSpecialInv).
void fft_special_inv(std::vector<std::complex<double>>& v, const FFTTables& t, u64 M) {
  const std::size_t n = v.size();
  for (std::size_t len = n; len >= 1; len >>= 1) {
    const std::size_t lenh = len >> 1, lenq = len << 2, gap = M / lenq;
    for (std::size_t i = 0; i < n; i += len) {
      for (std::size_t j = 0; j < lenh; ++j) {
        const std::size_t idx = (lenq - (t.rot[j] % lenq)) * gap;
        std::complex<double> u = v[i + j] + v[i + j + lenh];
        std::complex<double> w = (v[i + j] - v[i + j + lenh]) * t.ksi[idx];
        v[i + j] = u;
        v[i + j + lenh] = w;
      }
    }
  }
  bit_reverse(v);
  for (auto& x : v) x /= static_cast<double>(n);
}

}  // namespace

void encode_coeffs(std::uint32_t n, const double* values, std::size_t len, std::uint32_t slots, double* coeffs) {
  if (slots == 0 || (slots & (slots - 1)) || slots > n / 2) throw std::invalid_argument("slot count must be a power of two <= N/2");
  if (len > slots) throw std::invalid_argument("more values than slots");
  const FFTTables& t = fft_tables(n);
  std::vector<std::complex<double>> v(slots);
  for (std::size_t i = 0; i < len; ++i) v[i] = values[i];
  fft_special_inv(v, t, 2 * u64(n));
  const std::uint32_t nh = n / 2, gap = nh / slots;
  for (std::uint32_t i = 0; i < n; ++i) coeffs[i] = 0.0;
  for (std::uint32_t i = 0; i < slots; ++i) {
    coeffs[i * gap] = v[i].real();
    coeffs[i * gap + nh] = v[i].imag();
  }
}

void encode_real(const Context& ctx, const double* values, std::size_t len, std::uint32_t slots,
                 double scale, std::uint32_t T, u64* out) {
  const std::uint32_t n = ctx.n();
  if (T == 0 || T > ctx.num_q()) throw std::invalid_argument("tower count out of range");
  std::vector<double> c(n);
  encode_coeffs(n, values, len, slots, c.data());
  std::vector<__int128> z(n);
  const long double lim = std::ldexp(1.0L, 126);
  for (std::uint32_t i = 0; i < n; ++i) {
    long double v = std::roundl(static_cast<long double>(c[i]) * static_cast<long double>(scale));
    if (!(std::fabs(v) < lim)) throw std::invalid_argument("encoded value exceeds 2^126 (scale or value too large)");
    z[i] = static_cast<__int128>(v);
  }
#pragma omp parallel for schedule(static) if (medtwin::parallel_worth(std::size_t(T) * n))
  for (std::int64_t t = 0; t < T; ++t) {
    const u64 q = ctx.modulus(t);
    u64* o = out + std::size_t(t) * n;
    const Modulus& mq = ctx.mod(t);
    for (std::uint32_t i = 0; i < n; ++i) {
      const __int128 v = z[i];
      const u128 mag = static_cast<u128>(v < 0 ? -v : v);
      u64 r = barrett128(mag, mq);
      o[i] = (v < 0 && r) ? q - r : r;
    }
    ctx.ntt(t).forward(o);
  }
}

}  // namespace medtwin
