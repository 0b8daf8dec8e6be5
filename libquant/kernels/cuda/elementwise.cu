// qtool's own device code: the INT8 dequant epilogue (see elementwise.h for the exact formula).
// Memory-bound: one thread per 4 consecutive outputs of a row (16-byte int32 loads when N % 4 == 0,
// which cuda_int8 guarantees); grid-stride loop.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "libquant/kernels/cuda/elementwise.h"

namespace qt::kernels::gpu {
namespace {

__device__ __forceinline__ float dequant_one(int32_t a, float sx, float sw) {
  // (f64(acc) * f64(sx)) * f64(sw), added to +0.0 (cpu_ref starts its sum at +0.0), then RNE to f32.
  const double t = __dmul_rn(__dmul_rn(static_cast<double>(a), static_cast<double>(sx)), static_cast<double>(sw));
  return __double2float_rn(__dadd_rn(0.0, t));
}

template <class Out>
__device__ __forceinline__ Out store_cast(float v);
template <>
__device__ __forceinline__ float store_cast<float>(float v) { return v; }
template <>
__device__ __forceinline__ uint16_t store_cast<uint16_t>(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <class Out>
__global__ void dequant_kernel(const int32_t* __restrict__ acc, const float* __restrict__ sx,
                               const float* __restrict__ sw, Out* __restrict__ y, int64_t M, int64_t N) {
  const int64_t quads = (N + 3) / 4, total = M * quads;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / quads, n0 = (i % quads) * 4;
    const float s = sx[m];
    const int64_t base = m * N + n0;
    if (n0 + 4 <= N && (N % 4) == 0) {
      const int4 a = *reinterpret_cast<const int4*>(acc + base);
      y[base + 0] = store_cast<Out>(dequant_one(a.x, s, sw[n0 + 0]));
      y[base + 1] = store_cast<Out>(dequant_one(a.y, s, sw[n0 + 1]));
      y[base + 2] = store_cast<Out>(dequant_one(a.z, s, sw[n0 + 2]));
      y[base + 3] = store_cast<Out>(dequant_one(a.w, s, sw[n0 + 3]));
    } else {
      for (int64_t n = n0; n < N && n < n0 + 4; ++n) y[m * N + n] = store_cast<Out>(dequant_one(acc[m * N + n], s, sw[n]));
    }
  }
}

template <class Out>
cudaError_t launch(const int32_t* acc, const float* sx, const float* sw, Out* y, int64_t M, int64_t N, cudaStream_t st) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  const int64_t work = M * ((N + 3) / 4);
  const int threads = 256;
  const int64_t blocks = (work + threads - 1) / threads;
  // A grid-stride loop: cap the grid (132 SMs x 16 resident blocks is plenty on H100).
  const unsigned grid = static_cast<unsigned>(blocks < 4096 ? blocks : 4096);
  dequant_kernel<Out><<<grid, threads, 0, st>>>(acc, sx, sw, y, M, N);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_dequant_i32_f32(const int32_t* acc, const float* sx, const float* sw, float* y, int64_t M,
                                   int64_t N, cudaStream_t stream) {
  return launch<float>(acc, sx, sw, y, M, N, stream);
}

cudaError_t launch_dequant_i32_bf16(const int32_t* acc, const float* sx, const float* sw, uint16_t* y, int64_t M,
                                    int64_t N, cudaStream_t stream) {
  return launch<uint16_t>(acc, sx, sw, y, M, N, stream);
}

}  // namespace qt::kernels::gpu
