// Negacyclic NTT in OpenFHE's evaluation order, one kernel launch per stage (Harvey lazy
// butterflies with Shoup constants; values kept in [0, 4q) between stages, reduced at the end).
#include "common.cuh"

namespace medtwin {
namespace cuda {
namespace {

__global__ void fwd_stage(u64* a, const u64* w, const u64* wp, std::size_t n, std::size_t m, std::size_t t, u64 q) {
  const std::size_t poly = blockIdx.y;
  const std::size_t k = blockIdx.x * blockDim.x + threadIdx.x;  // butterfly index < n/2
  if (k >= n / 2) return;
  const std::size_t i = k / t, j = k % t;
  u64* x = a + poly * n + 2 * i * t + j;
  u64* y = x + t;
  const u64 q2 = 2 * q;
  u64 u = *x;
  u -= (u >= q2) ? q2 : 0;
  u64 v = mul_shoup_lazy(*y, w[m + i], wp[m + i], q);
  *x = u + v;
  *y = u - v + q2;
}

__global__ void inv_stage(u64* a, const u64* w, const u64* wp, std::size_t n, std::size_t h, std::size_t t, u64 q) {
  const std::size_t poly = blockIdx.y;
  const std::size_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= n / 2) return;
  const std::size_t i = k / t, j = k % t;
  u64* x = a + poly * n + 2 * i * t + j;
  u64* y = x + t;
  const u64 q2 = 2 * q;
  u64 u = *x, v = *y;
  u64 s = u + v;
  s -= (s >= q2) ? q2 : 0;
  *x = s;
  *y = mul_shoup_lazy(u - v + q2, w[h + i], wp[h + i], q);
}

__global__ void reduce_fwd(u64* a, std::size_t total, u64 q) {
  const std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (k >= total) return;
  u64 v = a[k];
  v -= (v >= 2 * q) ? 2 * q : 0;
  v -= (v >= q) ? q : 0;
  a[k] = v;
}

__global__ void scale_inv(u64* a, std::size_t total, u64 ninv, u64 ninvp, u64 q) {
  const std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (k >= total) return;
  u64 r = mul_shoup_lazy(a[k], ninv, ninvp, q);
  a[k] = r >= q ? r - q : r;
}

constexpr unsigned kThreads = 256;
}  // namespace

DeviceNTT upload_ntt(std::size_t n, std::uint64_t q, const std::uint64_t* w, const std::uint64_t* wp,
                     const std::uint64_t* iw, const std::uint64_t* iwp, std::uint64_t ninv, std::uint64_t ninvp) {
  if (!w || !wp || !iw || !iwp) throw CudaError("NTT tables missing");
  DeviceNTT t;
  t.n = n; t.q = q; t.ninv = ninv; t.ninvp = ninvp;
  t.w = DeviceBuffer(n); t.w.upload(w, n);
  t.wp = DeviceBuffer(n); t.wp.upload(wp, n);
  t.iw = DeviceBuffer(n); t.iw.upload(iw, n);
  t.iwp = DeviceBuffer(n); t.iwp.upload(iwp, n);
  return t;
}

void ntt_forward(const DeviceNTT& t, std::uint64_t* a, std::size_t batch) {
  const std::size_t n = t.n;
  dim3 grid(static_cast<unsigned>((n / 2 + kThreads - 1) / kThreads), static_cast<unsigned>(batch));
  std::size_t tt = n;
  for (std::size_t m = 1; m < n; m <<= 1) {
    tt >>= 1;
    fwd_stage<<<grid, kThreads>>>(a, t.w.data(), t.wp.data(), n, m, tt, t.q);
    check_launch("ntt forward stage");
  }
  const std::size_t total = n * batch;
  reduce_fwd<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads>>>(a, total, t.q);
  check_launch("ntt forward reduce");
}

void ntt_inverse(const DeviceNTT& t, std::uint64_t* a, std::size_t batch) {
  const std::size_t n = t.n;
  dim3 grid(static_cast<unsigned>((n / 2 + kThreads - 1) / kThreads), static_cast<unsigned>(batch));
  std::size_t tt = 1;
  for (std::size_t m = n; m > 1; m >>= 1) {
    inv_stage<<<grid, kThreads>>>(a, t.iw.data(), t.iwp.data(), n, m >> 1, tt, t.q);
    check_launch("ntt inverse stage");
    tt <<= 1;
  }
  const std::size_t total = n * batch;
  scale_inv<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads>>>(a, total, t.ninv, t.ninvp, t.q);
  check_launch("ntt inverse scale");
}

}  // namespace cuda
}  // namespace medtwin
