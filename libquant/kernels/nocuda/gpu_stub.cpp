// gpu.h in a build without CUDA (CMake found no nvcc / cuBLASLt, or -DQTOOL_CUDA=OFF): no device,
// an empty registry, and errors that say how to get a CUDA build.
#include "libquant/error.h"
#include "libquant/kernels/gpu.h"

namespace qt::kernels::gpu {

bool built_with_cuda() { return false; }

const DeviceInfo& device_info() {
  static const DeviceInfo d = [] {
    DeviceInfo i;
    i.error = "qtool was built without CUDA (CMake found no nvcc and cuBLASLt, or -DQTOOL_CUDA=OFF); "
              "rebuild on a machine with the CUDA 13 toolkit (-DQTOOL_CUDA=ON)";
    return i;
  }();
  return d;
}

void CudaKernel::run_int32(const PackedWeights&, const float*, int64_t, int32_t*) const {
  throw InputError(InputError::Kind::Unsupported, "", "", device_info().error);
}

const Registry& cuda_registry() {
  static const Registry r({});
  return r;
}

std::vector<BenchCell> bench_gemm(GemmKind, int64_t, int64_t, std::span<const int64_t>, const BenchConfig&) {
  throw InputError(InputError::Kind::Unsupported, "", "", device_info().error);
}

}  // namespace qt::kernels::gpu
