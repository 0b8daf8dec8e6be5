// The forward pass's packed f32 GEMM (libquant/gemm.h) alone, on one calibration sample's Linears:
// T tokens x the (N, K) shapes of a Llama layer. Best of R repeats per shape (the machine is
// shared; the best run is the least disturbed), GFLOP/s = 2 T N K / seconds. One JSON line per
// shape. Usage: bench_gemm_f32 [T=512] [THREADS=0] [REPEATS=20] [H=768] [I=2048] [KV=256] [f32|bf16]
// (QTOOL_ISA caps the ISA path, libquant/cpu_isa.h; the last line names the path used.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/gemm.h"

#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// The machine's f32 FMA peak, measured: 12 independent 8-wide FMA chains (more than latency x
// ports on any AVX2 core) per thread, all threads at once. GFLOP/s = 2 * 8 * fmas / seconds.
__attribute__((target("avx2,fma"))) static double fma_peak_gflops(int threads) {
  const int64_t iters = 200000000 / 12;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    float sink = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads()) reduction(+ : sink)
    {
      __m256 c[12];
      for (int j = 0; j < 12; ++j) c[j] = _mm256_set1_ps(static_cast<float>(j));
      const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
      for (int64_t i = 0; i < iters; ++i) {
        c[0] = _mm256_fmadd_ps(c[0], a, b); c[1] = _mm256_fmadd_ps(c[1], a, b); c[2] = _mm256_fmadd_ps(c[2], a, b);
        c[3] = _mm256_fmadd_ps(c[3], a, b); c[4] = _mm256_fmadd_ps(c[4], a, b); c[5] = _mm256_fmadd_ps(c[5], a, b);
        c[6] = _mm256_fmadd_ps(c[6], a, b); c[7] = _mm256_fmadd_ps(c[7], a, b); c[8] = _mm256_fmadd_ps(c[8], a, b);
        c[9] = _mm256_fmadd_ps(c[9], a, b); c[10] = _mm256_fmadd_ps(c[10], a, b); c[11] = _mm256_fmadd_ps(c[11], a, b);
      }
      float out[8];
      __m256 s = c[0];
      for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, c[j]);
      _mm256_storeu_ps(out, s);
      sink += out[0];
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int nth = 1;
#pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
#pragma omp single
    nth = omp_get_num_threads();
    best = std::max(best, 2.0 * 8 * 12 * static_cast<double>(iters) * nth / dt * 1e-9);
    if (sink == 12345.f) std::printf(" ");
  }
  return best;
}

int main(int argc, char** argv) {
  using namespace qt;
  const int64_t T = argc > 1 ? std::atoll(argv[1]) : 512;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 0;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 20;
  const int64_t H = argc > 4 ? std::atoll(argv[4]) : 768, I = argc > 5 ? std::atoll(argv[5]) : 2048,
                KV = argc > 6 ? std::atoll(argv[6]) : 256;
  qt::GemmPrecision prec = qt::GemmPrecision::F32;
  if (argc > 7 && !qt::parse_precision(argv[7], prec)) return 2;
  struct Shape { const char* name; int64_t n, k; };
  const Shape shapes[] = {{"qkv", H + 2 * KV, H}, {"o", H, H}, {"gate_up", 2 * I, H}, {"down", H, I}};
  double total_flop = 0, total_s = 0;
  for (const Shape& s : shapes) {
    std::vector<float> w(static_cast<size_t>(s.n * s.k)), x(static_cast<size_t>(T * s.k)), y(static_cast<size_t>(T * s.n));
    uint32_t r = 1;
    for (auto& v : w) v = static_cast<float>((r = r * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
    for (auto& v : x) v = static_cast<float>((r = r * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
    const PackedLinear p = pack_linear({{w.data(), s.n}}, s.k, threads, prec);
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      linear_packed(x.data(), T, p, nullptr, y.data(), s.n, threads);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double flop = 2.0 * T * s.n * s.k;
    total_flop += flop, total_s += best;
    std::printf("{\"shape\": \"%s\", \"T\": %lld, \"N\": %lld, \"K\": %lld, \"ms\": %.3f, \"gflops\": %.1f}\n", s.name,
                static_cast<long long>(T), static_cast<long long>(s.n), static_cast<long long>(s.k), best * 1e3, flop / best * 1e-9);
  }
  std::printf("{\"shape\": \"layer\", \"gflops\": %.1f, \"path\": \"%s\", \"fma_peak_gflops\": %.1f}\n",
              total_flop / total_s * 1e-9, qt::gemm_path_name(prec == qt::GemmPrecision::BF16).c_str(), fma_peak_gflops(threads));
}
