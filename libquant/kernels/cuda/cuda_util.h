// Small CUDA runtime helpers shared by libquant/kernels/cuda/*.cpp: checked calls that throw
// InputError(Unsupported) naming the call and the error (a GPU that refuses work is "well-formed
// input qtool cannot run here", exit 5), and owning device buffers. Internal.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "libquant/error.h"
#include "libquant/kernels/cuda/cublaslt_api.h"

namespace qt::kernels::gpu {

[[noreturn]] inline void cuda_fail(const char* what, cudaError_t e) {
  throw InputError(InputError::Kind::Unsupported, "", "",
                   std::string("CUDA: ") + what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
[[noreturn]] inline void lt_fail(const std::string& what, cublasStatus_t s) {
  throw InputError(InputError::Kind::Unsupported, "", "", "cuBLASLt: " + what + " failed: " + lt::status_text(s));
}

#define QT_CUDA(call)                                   \
  do {                                                  \
    const cudaError_t qt_e_ = (call);                   \
    if (qt_e_ != cudaSuccess) ::qt::kernels::gpu::cuda_fail(#call, qt_e_); \
  } while (0)
#define QT_LT(call)                                     \
  do {                                                  \
    const cublasStatus_t qt_s_ = (call);                \
    if (qt_s_ != CUBLAS_STATUS_SUCCESS) ::qt::kernels::gpu::lt_fail(#call, qt_s_); \
  } while (0)

// cudaMalloc'd bytes (256-byte aligned), freed on destruction. Never copied.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { resize(bytes); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  void resize(size_t bytes) {
    reset();
    if (bytes == 0) return;
    QT_CUDA(cudaMalloc(&p_, bytes));
    n_ = bytes;
  }
  void reset() {
    if (p_) cudaFree(p_);  // errors on free cannot be reported usefully
    p_ = nullptr;
    n_ = 0;
  }
  void* get() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }

  // Synchronous copies (the stream-0 semantics are enough for the accuracy path).
  void upload(const void* src, size_t bytes) {
    if (bytes > n_) resize(bytes);
    if (bytes) QT_CUDA(cudaMemcpy(p_, src, bytes, cudaMemcpyHostToDevice));
  }
  template <class T>
  void upload(const std::vector<T>& v) { upload(v.data(), v.size() * sizeof(T)); }
  void download(void* dst, size_t bytes) const {
    if (bytes) QT_CUDA(cudaMemcpy(dst, p_, bytes, cudaMemcpyDeviceToHost));
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Makes the device of device_info() current on the calling thread (cudaSetDevice is per thread).
void use_device();

}  // namespace qt::kernels::gpu
