// Element-wise modular multiplication and addition (Barrett with a two-word constant).
#include "common.cuh"

namespace medtwin {
namespace cuda {
namespace {
__global__ void k_modmul(u64* out, const u64* a, const u64* b, std::size_t n, u64 q, u64 r0, u64 r1) {
  const std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (k >= n) return;
  u64 lo, hi;
  mul128(a[k], b[k], lo, hi);
  out[k] = barrett128(lo, hi, q, r0, r1);
}
__global__ void k_modadd(u64* out, const u64* a, const u64* b, std::size_t n, u64 q) {
  const std::size_t k = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (k >= n) return;
  u64 s = a[k] + b[k];
  out[k] = s >= q ? s - q : s;
}
constexpr unsigned kThreads = 256;
}  // namespace

void modmul(std::uint64_t* out, const std::uint64_t* a, const std::uint64_t* b, std::size_t n, std::uint64_t q,
            std::uint64_t r0, std::uint64_t r1) {
  if (!n) return;
  k_modmul<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads>>>(out, a, b, n, q, r0, r1);
  check_launch("modmul");
}

void modadd(std::uint64_t* out, const std::uint64_t* a, const std::uint64_t* b, std::size_t n, std::uint64_t q) {
  if (!n) return;
  k_modadd<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads>>>(out, a, b, n, q);
  check_launch("modadd");
}

}  // namespace cuda
}  // namespace medtwin
