// Hybrid key-switching inner products: 128-bit accumulation over the digits, one reduction.
#include "common.cuh"

namespace medtwin {
namespace cuda {
namespace {
__global__ void k_inner(u64* o0, u64* o1, const u64* e, std::size_t es, const u64* b, const u64* a, std::size_t ks,
                        std::size_t digits, std::size_t n, u64 q, u64 r0, u64 r1) {
  const std::size_t c = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (c >= n) return;
  // accumulate reduced products (each < q) to stay within one word per sum
  u64 s0 = 0, s1 = 0;
  for (std::size_t j = 0; j < digits; ++j) {
    const u64 x = e[j * es + c];
    u64 lo, hi;
    mul128(x, b[j * ks + c], lo, hi);
    u64 p0 = barrett128(lo, hi, q, r0, r1);
    mul128(x, a[j * ks + c], lo, hi);
    u64 p1 = barrett128(lo, hi, q, r0, r1);
    s0 += p0; s0 = s0 >= q ? s0 - q : s0;
    s1 += p1; s1 = s1 >= q ? s1 - q : s1;
  }
  o0[c] = s0;
  o1[c] = s1;
}
constexpr unsigned kThreads = 256;
}  // namespace

void keyswitch_inner(std::uint64_t* o0, std::uint64_t* o1, const std::uint64_t* e, std::size_t e_stride,
                     const std::uint64_t* b, const std::uint64_t* a, std::size_t key_stride, std::size_t digits,
                     std::size_t n, std::uint64_t q, std::uint64_t r0, std::uint64_t r1) {
  if (!n) return;
  k_inner<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads>>>(o0, o1, e, e_stride, b, a, key_stride,
                                                                            digits, n, q, r0, r1);
  check_launch("keyswitch inner product");
}

}  // namespace cuda
}  // namespace medtwin
