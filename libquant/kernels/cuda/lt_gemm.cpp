#include "libquant/kernels/cuda/lt_gemm.h"

#include <mutex>

namespace qt::kernels::gpu {
namespace {

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const T& v, const char* what) {
  // Attribute sizes are checked by cuBLASLt (libquant/kernels/KERNELS.md rule 4): pass exactly the
  // documented type.
  const cublasStatus_t s = lt::api().MatmulDescSetAttribute(d, a, &v, sizeof(T));
  if (s != CUBLAS_STATUS_SUCCESS) lt_fail(std::string("setting ") + what, s);
}

std::string shape_text(const LtProblem& p) {
  return std::string(kernel_name(p.kind)) + " M=" + std::to_string(p.M) + " N=" + std::to_string(p.N) +
         " K=" + std::to_string(p.K) + (is_fp8(p.kind) ? (p.fast_accum ? " fast-accum" : " exact-accum") : "");
}

}  // namespace

cublasLtHandle_t lt_handle() {
  static std::once_flag once;
  static cublasLtHandle_t h = nullptr;
  static cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  std::call_once(once, [] {
    use_device();
    status = lt::api().Create(&h);
  });
  if (status != CUBLAS_STATUS_SUCCESS) lt_fail("cublasLtCreate", status);
  return h;  // never destroyed: it lives as long as the process (destroying it at exit races the driver's teardown)
}

void* lt_workspace() {
  static std::once_flag once;
  static DeviceBuffer* ws = nullptr;
  std::call_once(once, [] {
    use_device();
    ws = new DeviceBuffer(kWorkspaceBytes);  // leaked on purpose, like the handle
  });
  return ws->get();
}

LtGemm::LtGemm(const LtProblem& p) : p_(p) {
  QT_ASSERT(p.M > 0 && p.N > 0 && p.K > 0);
  const lt::Api& api = lt::api();
  use_device();
  cublasLtHandle_t h = lt_handle();
  const bool int8 = p.kind == GemmKind::Int8;
  const cudaDataType_t ab = p.kind == GemmKind::Bf16 ? CUDA_R_16BF : int8 ? CUDA_R_8I : CUDA_R_8F_E4M3;
  const cudaDataType_t out = int8 ? CUDA_R_32I : (p.f32_out && is_fp8(p.kind)) ? CUDA_R_32F : CUDA_R_16BF;
  try {
    // Compute and scale types (libquant/kernels/KERNELS.md §5.2): FP8/BF16 accumulate in f32 with
    // f32 alpha/beta; INT8 in int32 with int32 alpha/beta (the only IMMA combination with int32 D).
    QT_LT(api.MatmulDescCreate(&desc_, int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F, int8 ? CUDA_R_32I : CUDA_R_32F));
    set_desc(desc_, CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(CUBLAS_OP_T), "TRANSA");
    set_desc(desc_, CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(CUBLAS_OP_N), "TRANSB");
    if (is_fp8(p.kind)) {
      QT_ASSERT(p.a_scale && p.b_scale);
      int32_t amode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F, bmode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
      if (p.kind == GemmKind::Fp8ChannelToken) amode = bmode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      if (p.kind == GemmKind::Fp8Block) {
        amode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;  // weight: 128x128 tiles
        bmode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;      // activations: 1x128 groups
      }
      if (amode != CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F) {
        set_desc(desc_, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, amode, "A_SCALE_MODE");
        set_desc(desc_, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, bmode, "B_SCALE_MODE");
      }
      // Device pointers passed by address (libquant/kernels/KERNELS.md rule 3).
      set_desc(desc_, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(p.a_scale), "A_SCALE_POINTER");
      set_desc(desc_, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(p.b_scale), "B_SCALE_POINTER");
      set_desc(desc_, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(p.fast_accum ? 1 : 0), "FAST_ACCUM");
    }
    QT_LT(api.MatrixLayoutCreate(&a_, ab, static_cast<uint64_t>(p.K), static_cast<uint64_t>(p.N), p.K));
    QT_LT(api.MatrixLayoutCreate(&b_, ab, static_cast<uint64_t>(p.K), static_cast<uint64_t>(p.M), p.K));
    QT_LT(api.MatrixLayoutCreate(&d_, out, static_cast<uint64_t>(p.N), static_cast<uint64_t>(p.M), p.N));

    cublasLtMatmulPreference_t pref = nullptr;
    QT_LT(api.MatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    cublasStatus_t s = api.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t res[8] = {};
    int returned = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
      s = api.MatmulAlgoGetHeuristic(h, desc_, a_, b_, d_, d_, pref, 8, res, &returned);
    api.MatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS) lt_fail("heuristic query for " + shape_text(p), s);
    int pick = -1;
    for (int i = 0; i < returned && pick < 0; ++i)
      if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= kWorkspaceBytes) pick = i;
    if (pick < 0)
      throw InputError(InputError::Kind::Unsupported, "", "",
                       "cuBLASLt has no algorithm for " + shape_text(p) + " on this GPU (heuristic returned " +
                           std::to_string(returned) + " candidate(s))");
    algo_ = res[pick].algo;
    ws_ = res[pick].workspaceSize;
    int32_t id = -1, splitk = 1;
    uint32_t tile = 0, stages = 0;
    size_t w = 0;
    api.MatmulAlgoConfigGetAttribute(&algo_, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    api.MatmulAlgoConfigGetAttribute(&algo_, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    api.MatmulAlgoConfigGetAttribute(&algo_, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    api.MatmulAlgoConfigGetAttribute(&algo_, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    algo_text_ = "algo " + std::to_string(id) + ", tile " + std::to_string(tile) + ", stages " + std::to_string(stages) +
                 ", split-K " + std::to_string(splitk) + ", workspace " + std::to_string(ws_) + " B, waves " +
                 std::to_string(res[pick].wavesCount).substr(0, 4);
  } catch (...) {
    destroy();
    throw;
  }
}

LtGemm::~LtGemm() { destroy(); }

void LtGemm::destroy() {
  const lt::Api& api = lt::api();
  if (d_) api.MatrixLayoutDestroy(d_);
  if (b_) api.MatrixLayoutDestroy(b_);
  if (a_) api.MatrixLayoutDestroy(a_);
  if (desc_) api.MatmulDescDestroy(desc_);
  d_ = b_ = a_ = nullptr;
  desc_ = nullptr;
}

void LtGemm::run(const void* A, const void* B, void* D, cudaStream_t stream) const {
  const float falpha = 1.0f, fbeta = 0.0f;
  const int32_t ialpha = 1, ibeta = 0;
  const bool int8 = p_.kind == GemmKind::Int8;
  const void* alpha = int8 ? static_cast<const void*>(&ialpha) : static_cast<const void*>(&falpha);
  const void* beta = int8 ? static_cast<const void*>(&ibeta) : static_cast<const void*>(&fbeta);
  // beta = 0: C is never read; it is given as D with D's layout (same type, shape and order).
  const cublasStatus_t s = lt::api().Matmul(lt_handle(), desc_, alpha, A, a_, B, b_, beta, D, d_, D, d_, &algo_,
                                            lt_workspace(), ws_, stream);
  if (s != CUBLAS_STATUS_SUCCESS) lt_fail("cublasLtMatmul for " + shape_text(p_), s);
}

}  // namespace qt::kernels::gpu
