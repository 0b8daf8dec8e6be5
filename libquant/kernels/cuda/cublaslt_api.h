// cuBLASLt through dlopen: the functions qtool calls, resolved from libcublasLt.so.13 at first use.
// Why not link it: the library is 540 MB and its absence must not stop qtool from starting (every
// CPU command works on a machine without CUDA libraries; `verify --device cuda` reports what is
// missing). The types come from the toolkit's cublasLt.h, so every call is type-checked.
// Internal to libquant/kernels/cuda.
#pragma once

#include <cublasLt.h>

#include <string>

namespace qt::kernels::gpu::lt {

struct Api {
  decltype(&cublasLtCreate) Create = nullptr;
  decltype(&cublasLtDestroy) Destroy = nullptr;
  decltype(&cublasLtGetVersion) GetVersion = nullptr;
  decltype(&cublasLtGetStatusName) GetStatusName = nullptr;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate = nullptr;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic = nullptr;
  decltype(&cublasLtMatmulAlgoConfigGetAttribute) MatmulAlgoConfigGetAttribute = nullptr;
  decltype(&cublasLtMatmul) Matmul = nullptr;

  std::string path;   // the file that was opened
  std::string error;  // "" when every symbol was found; else what is missing
  bool ok() const { return error.empty(); }
};

// Opens the library once (thread-safe) and never throws. Search order: $QTOOL_CUBLASLT (a file),
// "libcublasLt.so.13" through the dynamic loader (LD_LIBRARY_PATH, ld.so.cache), then
// /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib and the CUDA toolkit this
// binary was built against.
const Api& api();

// "CUBLAS_STATUS_NOT_SUPPORTED (15)".
std::string status_text(cublasStatus_t s);

}  // namespace qt::kernels::gpu::lt
