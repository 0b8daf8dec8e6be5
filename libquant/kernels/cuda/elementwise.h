// Launchers of qtool's own device kernels (elementwise.cu). Plain C++ interface so that the .cu
// file includes no qtool header. All asynchronous on `stream`; errors via cudaGetLastError().
// Internal to libquant/kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace qt::kernels::gpu {

// INT8 dequant after the cuBLASLt int32 GEMM (acc is [M, N] row-major, i.e. cuBLASLt's N x M
// column-major D): for every (m, n)
//   y[m, n] = f32( +0.0 + (f64(acc[m, n]) * f64(sx[m])) * f64(sw[n]) )
// exactly cpu_ref's epilogue for a single K-segment (cpu_common.h epilogue_term; IEEE f64
// multiplies and add rounded to nearest even via __dmul_rn / __dadd_rn, then one RNE conversion
// to f32), so Y is bit-identical to cpu_ref's.
cudaError_t launch_dequant_i32_f32(const int32_t* acc, const float* sx, const float* sw, float* y,
                                   int64_t M, int64_t N, cudaStream_t stream);
// The same value rounded to BF16 (RNE from the f32 result), the deployed output type; used for
// throughput.
cudaError_t launch_dequant_i32_bf16(const int32_t* acc, const float* sx, const float* sw, uint16_t* y,
                                    int64_t M, int64_t N, cudaStream_t stream);

}  // namespace qt::kernels::gpu
