// RAII device buffers and device discovery.
#include "common.cuh"

namespace medtwin {
namespace cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

DeviceBuffer::DeviceBuffer(std::size_t words) : n_(words) {
  if (words) check(cudaMalloc(reinterpret_cast<void**>(&p_), words * sizeof(std::uint64_t)), "cudaMalloc");
}

DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

void DeviceBuffer::upload(const std::uint64_t* host, std::size_t words) {
  if (words > n_) throw CudaError("upload larger than the device buffer");
  check(cudaMemcpy(p_, host, words * sizeof(std::uint64_t), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

void DeviceBuffer::download(std::uint64_t* host, std::size_t words) const {
  if (words > n_) throw CudaError("download larger than the device buffer");
  check(cudaMemcpy(host, p_, words * sizeof(std::uint64_t), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

}  // namespace cuda
}  // namespace medtwin
