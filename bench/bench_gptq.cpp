// GPTQ's column updates (libquant/gptq.h gptq_quantize after the factorization) alone, on one
// weight shape: a seeded BF16 weight [OUT, N] and the Hessian of seeded inputs (2N tokens, column
// scales spread over 100x so that activation ordering matters). Prints one JSON line: the best of
// REPEATS update times (the machine is shared; the best run is the least disturbed) and an FNV-1a
// hash of the codes and the dequantized weight, so that two builds can be shown to give the same
// bits. Usage: bench_gptq OUT N [REPEATS=3] [THREADS=0] [BITS=4 (w4a16 group 128) | 8 (w8a16)]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "libquant/float_formats.h"
#include "libquant/gptq.h"
#include "libquant/schemes.h"

namespace {
uint64_t rng_state = 0x9E3779B97F4A7C15ull;
float uniform() {  // splitmix64 -> [-1, 1)
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) / static_cast<double>(1ull << 23) - 1.0);
}
uint64_t fnv(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001B3ull;
  return h;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_gptq OUT N [REPEATS=3] [THREADS=0] [BITS=4|8]\n");
    return 2;
  }
  const int64_t out = std::atoll(argv[1]), n = std::atoll(argv[2]);
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  const int bits = argc > 5 ? std::atoi(argv[5]) : 4;
  const qt::QuantArgs args = qt::find_scheme(bits == 8 ? "w8a16" : "w4a16")->weights;

  std::vector<uint16_t> wb(static_cast<size_t>(out * n));
  const float wscale = 1.0f / std::sqrt(static_cast<float>(n));
  for (auto& v : wb) v = qt::bf16_from_f32(uniform() * wscale);
  qt::TensorView w;
  w.name = "bench.weight";
  w.dtype = qt::DType::BF16;
  w.shape = {out, n};
  w.bytes = {reinterpret_cast<const uint8_t*>(wb.data()), wb.size() * 2};

  const int64_t T = 2 * n;
  std::vector<float> colscale(static_cast<size_t>(n)), x(static_cast<size_t>(T * n));
  for (auto& c : colscale) c = std::pow(10.0f, uniform());  // 0.1 .. 10
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(t * n + j)] = uniform() * colscale[static_cast<size_t>(j)];
  qt::Hessian h(n);
  h.add_sample(x.data(), T, threads);
  std::vector<float>().swap(x);
  qt::GptqOptions opts;
  const qt::GptqFactor f = qt::gptq_factor(h.normalized(), n, opts, threads);

  double best = 1e30;
  uint64_t hash = 0;
  for (int r = 0; r < repeats; ++r) {
    const qt::GptqResult g = qt::gptq_quantize(w, args, f, opts, threads);
    best = std::min(best, g.update_seconds);
    uint64_t hh = fnv(0xcbf29ce484222325ull, g.q.codes.data(), g.q.codes.size());
    hh = fnv(hh, g.dequant.data(), g.dequant.size() * sizeof(float));
    if (r > 0 && hh != hash) std::fprintf(stderr, "bench_gptq: repeat %d gave other bits\n", r);
    hash = hh;
  }
  std::printf("{\"out\": %lld, \"n\": %lld, \"bits\": %d, \"threads\": %d, \"factor_s\": %.3f, \"update_s_best\": %.3f, "
              "\"hash\": \"%016llx\"}\n",
              static_cast<long long>(out), static_cast<long long>(n), bits, threads, f.seconds, best,
              static_cast<unsigned long long>(hash));
  return 0;
}
