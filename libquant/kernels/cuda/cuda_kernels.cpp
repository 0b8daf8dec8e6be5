// The GPU kernels of cuda_registry() (gpu.h): pack uploads the checkpoint's codes and the weight
// scales in the layout of the kernel's cuBLASLt scale mode; run quantizes X on the host with
// quantize_activations() (bit-identical to the CPU kernels' inputs), uploads codes and scales,
// runs one cuBLASLt matmul (f32 D) or, for INT8, the int32 matmul and qtool's dequant kernel,
// and downloads Y. Correctness first: every call synchronizes; nothing here is timed (bench.cpp
// times the GEMMs alone on device-resident data).
#include <cstring>

#include "libquant/kernels/cpu_common.h"
#include "libquant/kernels/cuda/elementwise.h"
#include "libquant/kernels/cuda/lt_gemm.h"
#include "libquant/kernels/gpu.h"

namespace qt::kernels::gpu {
namespace {

class CudaPacked final : public PackedWeights {
 public:
  CudaPacked(std::string_view kernel, const LinearDescriptor& d) : PackedWeights(kernel, d) {}
  size_t bytes() const override { return codes.size() + wscale.size(); }  // device bytes
  DeviceBuffer codes;   // [N, K] E4M3 or INT8, as in the checkpoint (already the TN layout)
  DeviceBuffer wscale;  // per kind: 1 float, [N] floats, or the BLK128x128 tensor
  std::vector<float> wscale_host;
  float input_scale = 0.0f;  // StaticTensor only
};

std::string_view summary_of(GemmKind k) {
  switch (k) {
    case GemmKind::Bf16: return "cuBLASLt BF16 x BF16 -> BF16 GEMM; the throughput baseline (runs no quantized layer)";
    case GemmKind::Fp8Tensor:
      return "cuBLASLt FP8 E4M3 GEMM with SCALAR_32F scales: per-tensor weight x per-tensor activation (sm_89+)";
    case GemmKind::Fp8ChannelToken:
      return "cuBLASLt FP8 E4M3 GEMM with OUTER_VEC_32F scales: per-channel weight x per-token activation (sm_90)";
    case GemmKind::Fp8Block:
      return "cuBLASLt FP8 E4M3 GEMM with BLK128x128_32F weight x VEC128_32F (1x128) activation scales (sm_90)";
    case GemmKind::Int8:
      return "cuBLASLt INT8 x INT8 -> INT32 GEMM, then qtool's per-token x per-channel f64 dequant kernel";
  }
  return "";
}

class CudaGemmKernel final : public CudaKernel {
 public:
  explicit CudaGemmKernel(GemmKind k) : kind_(k) {}
  GemmKind kind() const override { return kind_; }
  std::string_view name() const override { return kernel_name(kind_); }
  std::string_view summary() const override { return summary_of(kind_); }
  int priority() const override { return gpu::priority(kind_); }
  std::string can_implement(const LinearDescriptor& d) const override {
    return gpu::can_implement(kind_, d, device_info());
  }

  std::unique_ptr<PackedWeights> pack(const LinearDescriptor& d, const QuantizedWeightRef& w) const override {
    QT_ASSERT(can_implement(d).empty());
    detail::check_codes(d, w);
    std::vector<float> seg = detail::segment_weight_scales(d, w);  // [N, num_segments], validated
    auto p = std::make_unique<CudaPacked>(name(), d);
    p->input_scale = static_input_scale(d, w);
    use_device();
    p->codes.upload(w.codes, static_cast<size_t>(d.N * d.K));
    switch (kind_) {
      case GemmKind::Fp8Tensor: p->wscale_host = {seg[0]}; break;  // one scale: every entry equal
      case GemmKind::Fp8ChannelToken:
      case GemmKind::Int8:
        QT_ASSERT(d.num_segments() == 1);
        p->wscale_host = std::move(seg);  // [N]; per-tensor weights arrive broadcast
        break;
      case GemmKind::Fp8Block: p->wscale_host = blk128_weight_scales(seg, d.N, d.K); break;
      case GemmKind::Bf16: QT_ASSERT(false);
    }
    p->wscale.upload(p->wscale_host);
    return p;
  }

  void run_with(const PackedWeights& pw, const float* X, int64_t M, float* Y, bool fast_accum) const override {
    QT_ASSERT(pw.kernel() == name());
    const auto& p = static_cast<const CudaPacked&>(pw);
    const LinearDescriptor& d = p.descriptor();
    if (M == 0) return;
    const QuantizedActivations qa = quantize_activations(d, X, M, p.input_scale);
    use_device();
    if (kind_ == GemmKind::Int8) {
      DeviceBuffer acc = int32_gemm(p, qa);
      DeviceBuffer sx, y(static_cast<size_t>(M * d.N) * sizeof(float));
      sx.upload(outer_vec_act_scales(qa));
      QT_CUDA(launch_dequant_i32_f32(acc.as<int32_t>(), sx.as<float>(), p.wscale.as<float>(), y.as<float>(), M, d.N,
                                     nullptr));
      QT_CUDA(cudaDeviceSynchronize());
      y.download(Y, static_cast<size_t>(M * d.N) * sizeof(float));
      return;
    }
    // FP8: B = activation codes (padded to a multiple of 4 rows for the VEC128 mode).
    const int64_t rows = kind_ == GemmKind::Fp8Block ? vec128_rows(M) : M;
    std::vector<uint8_t> codes = qa.codes;
    codes.resize(static_cast<size_t>(rows * d.K), 0);  // E4M3 0x00 = +0
    std::vector<float> sx;
    if (kind_ == GemmKind::Fp8Tensor) sx = {qa.scales[0]};  // per-tensor: repeated per row
    else if (kind_ == GemmKind::Fp8ChannelToken) sx = outer_vec_act_scales(qa);
    else sx = vec128_act_scales(qa);
    DeviceBuffer b, bs, y(static_cast<size_t>(rows * d.N) * sizeof(float));
    b.upload(codes);
    bs.upload(sx);
    LtProblem prob;
    prob.kind = kind_;
    prob.M = rows;
    prob.N = d.N;
    prob.K = d.K;
    prob.fast_accum = fast_accum;
    prob.f32_out = true;
    prob.a_scale = p.wscale.as<float>();
    prob.b_scale = bs.as<float>();
    const LtGemm g(prob);
    g.run(p.codes.get(), b.get(), y.get());
    QT_CUDA(cudaDeviceSynchronize());
    y.download(Y, static_cast<size_t>(M * d.N) * sizeof(float));  // the padded rows are dropped
  }

  void run_int32(const PackedWeights& pw, const float* X, int64_t M, int32_t* acc) const override {
    QT_ASSERT(pw.kernel() == name());
    if (kind_ != GemmKind::Int8) CudaKernel::run_int32(pw, X, M, acc);
    const auto& p = static_cast<const CudaPacked&>(pw);
    if (M == 0) return;
    use_device();
    const DeviceBuffer a = int32_gemm(p, quantize_activations(p.descriptor(), X, M, p.input_scale));
    QT_CUDA(cudaDeviceSynchronize());
    a.download(acc, static_cast<size_t>(M * p.descriptor().N) * sizeof(int32_t));
  }

 private:
  GemmKind kind_;

  // acc[M, N] int32 on the device (enqueued, not synchronized).
  DeviceBuffer int32_gemm(const CudaPacked& p, const QuantizedActivations& qa) const {
    const LinearDescriptor& d = p.descriptor();
    DeviceBuffer b, acc(static_cast<size_t>(qa.M * d.N) * sizeof(int32_t));
    b.upload(qa.codes);
    LtProblem prob;
    prob.kind = GemmKind::Int8;
    prob.M = qa.M;
    prob.N = d.N;
    prob.K = d.K;
    const LtGemm g(prob);
    g.run(p.codes.get(), b.get(), acc.get());
    QT_CUDA(cudaDeviceSynchronize());  // before `b` and the descriptors go away
    return acc;
  }
};

}  // namespace

void CudaKernel::run_int32(const PackedWeights&, const float*, int64_t, int32_t*) const {
  throw InputError(InputError::Kind::Unsupported, "", "",
                   std::string(name()) + " has no int32 accumulators (INT8 kernels only)");
}

const Registry& cuda_registry() {
  static const CudaGemmKernel bf16(GemmKind::Bf16), t(GemmKind::Fp8Tensor), ct(GemmKind::Fp8ChannelToken),
      blk(GemmKind::Fp8Block), i8(GemmKind::Int8);
  static const Registry r({&t, &ct, &blk, &i8, &bf16});
  return r;
}

}  // namespace qt::kernels::gpu
