// One configured cuBLASLt matmul (internal to libquant/kernels/cuda): descriptors, layouts and the
// heuristic's algorithm, built once and run many times (libquant/kernels/KERNELS.md §5.5, rule 11:
// never query the heuristic inside a timed loop).
//
// Orientation (gpu.h, KERNELS.md §5.1): A = weight [N, K] row-major = (K x N, ld K) with OP_T,
// B = activations [M, K] row-major = (K x M, ld K) with OP_N, C = D = Y [M, N] row-major
// = (N x M, ld N). Scale pointers (device memory, read at execution time) are fixed at
// construction: a_scale belongs to the weight (per-tensor scalar, [N] outer vector, or BLK128x128
// tensor), b_scale to the activations (scalar, [M] vector, or VEC128 tensor).
#pragma once

#include <cstdint>
#include <string>

#include "libquant/kernels/cuda/cuda_util.h"
#include "libquant/kernels/gpu.h"

namespace qt::kernels::gpu {

struct LtProblem {
  GemmKind kind = GemmKind::Bf16;
  int64_t M = 0, N = 0, K = 0;  // M: columns of B and D as cuBLASLt sees them (padded for Fp8Block)
  bool fast_accum = false;      // FP8 only
  bool f32_out = false;         // FP8: D (and C) FP32 instead of BF16; Int8: D is always INT32
  const float* a_scale = nullptr;  // FP8 only (device)
  const float* b_scale = nullptr;  // FP8 only (device)
};

// The process's cuBLASLt handle and a 32 MiB workspace (KERNELS.md §5.5: 32 MiB on Hopper,
// else split-K algorithms disappear), created on first use. All work goes to the legacy
// default stream, which serializes every user of the shared workspace.
cublasLtHandle_t lt_handle();
void* lt_workspace();
inline constexpr size_t kWorkspaceBytes = size_t{32} << 20;

class LtGemm {
 public:
  // Throws InputError(Unsupported) when cuBLASLt rejects the configuration or its heuristic
  // returns no algorithm (naming the kernel, the shape and the status).
  explicit LtGemm(const LtProblem& p);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Enqueues D = op(A) op(B) (with the scales) on `stream`. A, B, D: device pointers, 256-byte
  // aligned (cudaMalloc). Does not synchronize.
  void run(const void* A, const void* B, void* D, cudaStream_t stream = nullptr) const;
  // "algo 66, tile 20, stages 19, split-K 1, workspace 0 B, waves 0.97"
  const std::string& algo_text() const { return algo_text_; }
  const LtProblem& problem() const { return p_; }

 private:
  LtProblem p_;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, d_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  size_t ws_ = 0;
  std::string algo_text_;
  void destroy();
};

}  // namespace qt::kernels::gpu
