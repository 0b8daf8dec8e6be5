#include "libquant/kernels/cuda/cublaslt_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

namespace qt::kernels::gpu::lt {
namespace {

// The CUDA major version whose cuBLASLt ABI the header describes (cublasLt.h: CUBLAS_VER_MAJOR).
#define QTOOL_STR2(x) #x
#define QTOOL_STR(x) QTOOL_STR2(x)
constexpr const char* kSoname = "libcublasLt.so." QTOOL_STR(CUBLAS_VER_MAJOR);

template <class F>
void load(void* h, const char* name, F& f, std::string& missing) {
  f = reinterpret_cast<F>(dlsym(h, name));
  if (!f) missing += (missing.empty() ? "" : ", ") + std::string(name);
}

Api open_api() {
  Api a;
  std::vector<std::string> tries;
  if (const char* e = std::getenv("QTOOL_CUBLASLT"); e && *e) tries.emplace_back(e);
  tries.emplace_back(kSoname);
  for (const char* dir : {"/usr/local/cuda/lib64/", "/usr/local/cuda/targets/x86_64-linux/lib/"})
    tries.push_back(std::string(dir) + kSoname);
#ifdef QTOOL_CUDA_LIB_DIR
  tries.push_back(std::string(QTOOL_CUDA_LIB_DIR) + "/" + kSoname);
#endif
  void* h = nullptr;
  std::string first_error;
  for (const std::string& t : tries) {
    h = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) {
      a.path = t;
      break;
    }
    if (first_error.empty()) {
      const char* e = dlerror();
      first_error = e ? e : "unknown dlopen error";
    }
  }
  if (!h) {
    a.error = std::string("cannot load ") + kSoname + " (cuBLASLt, part of the CUDA toolkit or the nvidia-cublas " +
              "wheel): " + first_error + "; set LD_LIBRARY_PATH to its folder or QTOOL_CUBLASLT to the file";
    return a;
  }
  std::string missing;
  load(h, "cublasLtCreate", a.Create, missing);
  load(h, "cublasLtDestroy", a.Destroy, missing);
  load(h, "cublasLtGetVersion", a.GetVersion, missing);
  load(h, "cublasLtGetStatusName", a.GetStatusName, missing);
  load(h, "cublasLtMatmulDescCreate", a.MatmulDescCreate, missing);
  load(h, "cublasLtMatmulDescDestroy", a.MatmulDescDestroy, missing);
  load(h, "cublasLtMatmulDescSetAttribute", a.MatmulDescSetAttribute, missing);
  load(h, "cublasLtMatrixLayoutCreate", a.MatrixLayoutCreate, missing);
  load(h, "cublasLtMatrixLayoutDestroy", a.MatrixLayoutDestroy, missing);
  load(h, "cublasLtMatmulPreferenceCreate", a.MatmulPreferenceCreate, missing);
  load(h, "cublasLtMatmulPreferenceDestroy", a.MatmulPreferenceDestroy, missing);
  load(h, "cublasLtMatmulPreferenceSetAttribute", a.MatmulPreferenceSetAttribute, missing);
  load(h, "cublasLtMatmulAlgoGetHeuristic", a.MatmulAlgoGetHeuristic, missing);
  load(h, "cublasLtMatmulAlgoConfigGetAttribute", a.MatmulAlgoConfigGetAttribute, missing);
  load(h, "cublasLtMatmul", a.Matmul, missing);
  if (!missing.empty()) a.error = a.path + " lacks " + missing + " (too old a cuBLASLt; CUDA 13 is needed)";
  // The handle stays open for the life of the process (cuBLASLt keeps device state).
  return a;
}

}  // namespace

const Api& api() {
  static const Api a = open_api();
  return a;
}

std::string status_text(cublasStatus_t s) {
  const Api& a = api();
  const char* n = a.GetStatusName ? a.GetStatusName(s) : nullptr;
  return std::string(n ? n : "CUBLAS_STATUS_?") + " (" + std::to_string(static_cast<int>(s)) + ")";
}

}  // namespace qt::kernels::gpu::lt
