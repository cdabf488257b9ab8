// CUDA kernels for the engine's primitives (built with -DMEDTWIN_CUDA=ON; never required).
// Host functions take device pointers; every launch is checked and errors throw CudaError.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace medtwin {
namespace cuda {

struct CudaError : std::runtime_error { using std::runtime_error::runtime_error; };

/// Number of visible CUDA devices (0 when none or no driver).
int device_count();

/// RAII device buffer of u64 words.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t words);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  std::uint64_t* data() { return p_; }
  const std::uint64_t* data() const { return p_; }
  std::size_t size() const { return n_; }
  void upload(const std::uint64_t* host, std::size_t words);
  void download(std::uint64_t* host, std::size_t words) const;

 private:
  std::uint64_t* p_ = nullptr;
  std::size_t n_ = 0;
};

/// NTT tables of one modulus on the device (same layout as NTTTables: bit-reversed powers).
struct DeviceNTT {
  std::size_t n = 0;
  std::uint64_t q = 0, ninv = 0, ninvp = 0;
  DeviceBuffer w, wp, iw, iwp;
};
/// w, wp, iw, iwp: n words each (NTTTables' tables).
DeviceNTT upload_ntt(std::size_t n, std::uint64_t q, const std::uint64_t* w, const std::uint64_t* wp,
                     const std::uint64_t* iw, const std::uint64_t* iwp, std::uint64_t ninv, std::uint64_t ninvp);
/// In-place forward / inverse NTT of `batch` consecutive polynomials of length t.n (OpenFHE order).
void ntt_forward(const DeviceNTT& t, std::uint64_t* a, std::size_t batch);
void ntt_inverse(const DeviceNTT& t, std::uint64_t* a, std::size_t batch);

/// Element-wise out = a * b mod q and out = a + b mod q (Barrett constants r1:r0 = floor(2^128/q)).
void modmul(std::uint64_t* out, const std::uint64_t* a, const std::uint64_t* b, std::size_t n,
            std::uint64_t q, std::uint64_t r0, std::uint64_t r1);
void modadd(std::uint64_t* out, const std::uint64_t* a, const std::uint64_t* b, std::size_t n, std::uint64_t q);

/// Key-switching inner product on one tower: o0 = sum_j e_j * b_j, o1 = sum_j e_j * a_j (mod q),
/// e/b/a laid out [digit][n] with the given digit strides.
void keyswitch_inner(std::uint64_t* o0, std::uint64_t* o1, const std::uint64_t* e, std::size_t e_stride,
                     const std::uint64_t* b, const std::uint64_t* a, std::size_t key_stride, std::size_t digits,
                     std::size_t n, std::uint64_t q, std::uint64_t r0, std::uint64_t r1);

}  // namespace cuda
}  // namespace medtwin
