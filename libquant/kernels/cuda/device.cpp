// Device discovery for gpu.h (CUDA build). Every failure becomes DeviceInfo::error, never a crash:
// cudart (linked statically) loads the driver's libcuda.so.1 itself and reports its absence as an
// error code.
#include <cstdlib>
#include <mutex>

#include "libquant/kernels/cuda/cuda_util.h"
#include "libquant/kernels/gpu.h"

namespace qt::kernels::gpu {
namespace {

std::string err_text(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

DeviceInfo probe() {
  DeviceInfo d;
  if (const char* e = std::getenv("QTOOL_CUDA_DEVICE"); e && *e) d.ordinal = std::atoi(e);
  cudaRuntimeGetVersion(&d.runtime_version);
  // cudaDriverGetVersion reports 0 (success) when no driver is installed.
  if (cudaDriverGetVersion(&d.driver_version) != cudaSuccess || d.driver_version == 0) {
    cudaGetLastError();
    d.error = "no NVIDIA driver found (the CUDA runtime could not load libcuda.so.1)";
    return d;
  }
  int n = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess) {
    cudaGetLastError();
    if (e == cudaErrorInsufficientDriver)
      d.error = "the NVIDIA driver supports CUDA " + std::to_string(d.driver_version / 1000) + "." +
                std::to_string((d.driver_version % 1000) / 10) + ", older than this build's CUDA runtime " +
                std::to_string(d.runtime_version / 1000) + "." + std::to_string((d.runtime_version % 1000) / 10);
    else
      d.error = "no CUDA device (cudaGetDeviceCount: " + err_text(e) + ")";
    return d;
  }
  if (n == 0) {
    d.error = "no CUDA device visible (cudaGetDeviceCount returned 0; check CUDA_VISIBLE_DEVICES)";
    return d;
  }
  if (d.ordinal < 0 || d.ordinal >= n) {
    d.error = "QTOOL_CUDA_DEVICE=" + std::to_string(d.ordinal) + " but only " + std::to_string(n) + " device(s) exist";
    return d;
  }
  cudaDeviceProp p{};
  if (const cudaError_t e = cudaGetDeviceProperties(&p, d.ordinal); e != cudaSuccess) {
    cudaGetLastError();
    d.error = "cudaGetDeviceProperties(" + std::to_string(d.ordinal) + ") failed: " + err_text(e);
    return d;
  }
  d.name = p.name;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.sm_count = p.multiProcessorCount;
  d.l2_bytes = p.l2CacheSize;
  d.memory_bytes = static_cast<int64_t>(p.totalGlobalMem);
  cudaDeviceGetAttribute(&d.clock_khz, cudaDevAttrClockRate, d.ordinal);
  cudaGetLastError();
  const lt::Api& a = lt::api();
  if (!a.ok()) {
    d.error = a.error;
    return d;
  }
  d.cublaslt_path = a.path;
  d.cublaslt_version = static_cast<int64_t>(a.GetVersion());
  d.usable = true;
  return d;
}

}  // namespace

bool built_with_cuda() { return true; }

const DeviceInfo& device_info() {
  static const DeviceInfo d = probe();
  return d;
}

void use_device() {
  thread_local bool done = false;
  if (done) return;
  QT_CUDA(cudaSetDevice(require_device().ordinal));
  done = true;
}

}  // namespace qt::kernels::gpu
