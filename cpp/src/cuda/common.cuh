// Shared device helpers: checked launches and 64-bit modular arithmetic on the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "medtwin/cuda.h"

namespace medtwin {
namespace cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CudaError(std::string(what) + ": " + cudaGetErrorString(e));
}
/// Check the last kernel launch (configuration errors) of `what`.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

using u64 = std::uint64_t;

__device__ __forceinline__ u64 mul_shoup_lazy(u64 a, u64 w, u64 wp, u64 q) {
  u64 hi = __umul64hi(a, wp);
  return a * w - hi * q;
}

// x = (hi:lo) < q^2, Barrett with floor(2^128 / q) = r1:r0.
__device__ __forceinline__ u64 barrett128(u64 lo, u64 hi, u64 q, u64 r0, u64 r1) {
  // quotient estimate = floor(x * r / 2^128) using the upper words of the 256-bit product
  u64 c = __umul64hi(lo, r0);
  u64 t_lo = lo * r1, t_hi = __umul64hi(lo, r1);
  u64 s = t_lo + c;
  u64 carry = s < t_lo;
  u64 u_lo = hi * r0, u_hi = __umul64hi(hi, r0);
  u64 s2 = s + u_lo;
  u64 carry2 = s2 < s;
  u64 qe = hi * r1 + t_hi + u_hi + carry + carry2;
  u64 r = lo - qe * q;
  while (r >= q) r -= q;
  return r;
}

__device__ __forceinline__ void mul128(u64 a, u64 b, u64& lo, u64& hi) {
  lo = a * b;
  hi = __umul64hi(a, b);
}

}  // namespace cuda
}  // namespace medtwin
