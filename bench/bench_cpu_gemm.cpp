// GFLOP/s of the CPU GEMM kernels (libquant/kernels) next to Eigen's f32 GEMM at Llama-like
// shapes: M tokens in {1, 16, 128}, N = K in {1024, 2048}.
//
//   FP8  : scheme fp8-dynamic  (E4M3 per-channel weights, E4M3 dynamic per-token activations)
//   INT8 : scheme int8-dynamic (INT8 per-channel weights, INT8 dynamic per-token activations)
//   Eigen: Y = X * W^T in f32 (row-major X [M,K], W [N,K]), the same threads (OpenMP)
// A kernel's time is Kernel::run: activation quantization + GEMM + epilogue (what a verify run
// pays per call); packing the weight happens once, outside the timing. FLOPs = 2 M N K.
// Each cell: ">= 5 timed runs (after one warm-up) for >= 0.3 s", printed as "best / median"
// GFLOP/s (best = fastest run: on a shared machine the least disturbed one).
//
// Usage: bench_cpu_gemm [--quick]   (--quick: M = 16 only, for smoke tests)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Dense>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "libquant/float_formats.h"
#include "libquant/kernels/registry.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"

using namespace qt;
using namespace qt::kernels;

namespace {

struct Timing {
  double best = 0, median = 0;  // seconds
};

Timing time_it(const std::function<void()>& f) {
  f();  // warm-up (also faults in buffers)
  std::vector<double> t;
  double total = 0.0;
  while (t.size() < 5 || total < 0.3) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    t.push_back(s);
    total += s;
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

// "best / median" in GFLOP/s for 2 M N K flops.
std::string gflops(const Timing& t, int64_t M, int64_t N, int64_t K) {
  if (t.best <= 0) return "n/a";
  const double f = 2.0 * static_cast<double>(M * N * K) * 1e-9;
  char b[64];
  std::snprintf(b, sizeof b, "%.1f / %.1f", f / t.best, f / t.median);
  return b;
}

struct Weight {
  std::vector<uint16_t> bits;  // bf16 [N, K]
  TensorView view;
};

Weight make_weight(int64_t N, int64_t K) {
  Weight w;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  w.bits.resize(static_cast<size_t>(N * K));
  for (uint16_t& b : w.bits) b = bf16_from_f32(nd(rng));
  w.view.name = "bench.weight";
  w.view.dtype = DType::BF16;
  w.view.shape = {N, K};
  w.view.bytes = {reinterpret_cast<const uint8_t*>(w.bits.data()), w.bits.size() * 2};
  return w;
}

Timing kernel_time(const Kernel& k, const char* scheme, const Weight& w, int64_t M, int64_t N,
                   int64_t K, const std::vector<float>& x) {
  const Scheme* s = find_scheme(scheme);
  LinearDescriptor d = descriptor_from_args(s->weights, s->input, N, K);
  if (!k.can_implement(d).empty()) return {};
  QuantizedWeight q = quantize_weight(w.view, s->weights);
  auto p = k.pack(d, weight_ref(q, d));
  std::vector<float> y(static_cast<size_t>(M * N));
  return time_it([&] { k.run(*p, x.data(), M, y.data()); });
}

Timing eigen_time(const Weight& w, int64_t M, int64_t N, int64_t K, const std::vector<float>& x) {
  using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RM X(M, K), W(N, K), Y(M, N);
  std::memcpy(X.data(), x.data(), x.size() * sizeof(float));
  for (int64_t i = 0; i < N * K; ++i) W.data()[i] = f32_from_bf16(w.bits[static_cast<size_t>(i)]);
  return time_it([&] { Y.noalias() = X * W.transpose(); });
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
#if defined(EIGEN_VECTORIZE_AVX2) && defined(EIGEN_VECTORIZE_FMA)
  const char* simd = "AVX2+FMA";
#else
  const char* simd = Eigen::SimdInstructionSetsInUse();
#endif
  std::printf("threads: %d (OpenMP), Eigen %d.%d.%d (%s), GFLOP/s as best / median\n", threads,
              EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, simd);
  {
    const Scheme* fp8 = find_scheme("fp8-dynamic");
    const std::string why = cpu_fast_kernel().can_implement(descriptor_from_args(fp8->weights, fp8->input, 16, 16));
    if (!why.empty()) std::printf("note: cpu_fast unavailable (%s)\n", why.c_str());
  }
  std::printf("\n| M | N = K | cpu_fast FP8 | cpu_fast INT8 | Eigen f32 | cpu_portable FP8 | cpu_portable INT8 |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  const std::vector<int64_t> Ms = quick ? std::vector<int64_t>{16} : std::vector<int64_t>{1, 16, 128};
  for (int64_t NK : {1024, 2048}) {
    const Weight w = make_weight(NK, NK);
    for (int64_t M : Ms) {
      std::mt19937 rng(static_cast<uint32_t>(M));
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(M * NK));
      for (float& v : x) v = nd(rng);
      const Timing f8 = kernel_time(cpu_fast_kernel(), "fp8-dynamic", w, M, NK, NK, x);
      const Timing i8 = kernel_time(cpu_fast_kernel(), "int8-dynamic", w, M, NK, NK, x);
      const Timing ei = eigen_time(w, M, NK, NK, x);
      const Timing pf8 = kernel_time(cpu_portable_kernel(), "fp8-dynamic", w, M, NK, NK, x);
      const Timing pi8 = kernel_time(cpu_portable_kernel(), "int8-dynamic", w, M, NK, NK, x);
      std::printf("| %lld | %lld | %s | %s | %s | %s | %s |\n", static_cast<long long>(M),
                  static_cast<long long>(NK), gflops(f8, M, NK, NK).c_str(),
                  gflops(i8, M, NK, NK).c_str(), gflops(ei, M, NK, NK).c_str(),
                  gflops(pf8, M, NK, NK).c_str(), gflops(pi8, M, NK, NK).c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
