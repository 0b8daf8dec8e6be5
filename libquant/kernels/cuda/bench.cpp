// Throughput of the GPU GEMMs (gpu.h bench_gemm) on synthetic device-resident data, following
// libquant/kernels/KERNELS.md §5.7 and rule 11: descriptors and the heuristic query outside the
// timed region; warm-up calls; CUDA events around repeats of several calls; median over repeats;
// every call on the next of several input/output sets (weights included) whose total exceeds twice
// the L2 cache, so no operand is served from L2. Activation quantization is not included (the codes
// and scales are already on the device): these are GEMM (INT8: GEMM + dequant) times.
//
// Data are random, never zeros (zeros run faster on Hopper; libquant/kernels/KERNELS.md §5.7): E4M3
// codes with magnitudes 2^-3..3.75 and random signs, INT8 codes uniform in [-127, 127], BF16 values
// uniform in [-1, 1], positive scales.
#include <algorithm>
#include <cstring>

#include "libquant/kernels/cuda/elementwise.h"
#include "libquant/kernels/cuda/lt_gemm.h"
#include "libquant/kernels/gpu.h"

namespace qt::kernels::gpu {
namespace {

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// `n` elements of the operand type of kind k (A and B share it), as bytes.
std::vector<uint8_t> random_operand(GemmKind k, int64_t n, uint64_t seed) {
  const size_t es = k == GemmKind::Bf16 ? 2 : 1;
  std::vector<uint8_t> v(static_cast<size_t>(n) * es);
  uint64_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = splitmix(s);
    if (k == GemmKind::Bf16) {
      // uniform in [-1, 1] as f32, truncated to its top 16 bits (a BF16 value)
      const float f = static_cast<float>(static_cast<double>(r >> 11) * 0x1p-53 * 2.0 - 1.0);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const uint16_t h = static_cast<uint16_t>(bits >> 16);
      std::memcpy(&v[static_cast<size_t>(i) * 2], &h, 2);
    } else if (k == GemmKind::Int8) {
      v[static_cast<size_t>(i)] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(r % 255) - 127));
    } else {
      // E4M3: sign | exponent field 4..8 (2^-3 .. 2^1) | mantissa; never the NaN codes 0x7F/0xFF
      const uint8_t sign = static_cast<uint8_t>((r >> 8) & 1), e = static_cast<uint8_t>(4 + (r >> 16) % 5),
                    m = static_cast<uint8_t>((r >> 24) & 7);
      v[static_cast<size_t>(i)] = static_cast<uint8_t>(sign << 7 | e << 3 | m);
    }
  }
  return v;
}

std::vector<float> random_scales(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed;
  for (auto& x : v) x = static_cast<float>(0.5 + 0.5 * static_cast<double>(splitmix(s) >> 11) * 0x1p-53) * 0.01f;
  return v;
}

struct Events {
  cudaEvent_t a = nullptr, b = nullptr;
  Events() {
    QT_CUDA(cudaEventCreate(&a));
    QT_CUDA(cudaEventCreate(&b));
  }
  ~Events() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
};

struct Set {
  DeviceBuffer A, B, D, Y;  // D: the GEMM output (INT8: int32 acc), Y: INT8's BF16 output
};

// Times `call(set_index)` per the config; fills the timing fields of `c`.
template <class F>
void time_calls(const BenchConfig& cfg, int sets, BenchCell& c, F&& call) {
  Events ev;
  int next = 0;
  auto one = [&] {
    call(next);
    next = (next + 1) % sets;
  };
  for (int i = 0; i < cfg.warmup_calls; ++i) one();
  QT_CUDA(cudaDeviceSynchronize());
  // Estimate: one pass over every set.
  QT_CUDA(cudaEventRecord(ev.a));
  for (int i = 0; i < sets; ++i) one();
  QT_CUDA(cudaEventRecord(ev.b));
  QT_CUDA(cudaEventSynchronize(ev.b));
  float ms = 0;
  QT_CUDA(cudaEventElapsedTime(&ms, ev.a, ev.b));
  const int cpr = calls_per_repeat(ms * 1e-3 / sets, cfg.min_repeat_seconds);
  std::vector<double> t;
  for (int r = 0; r < cfg.repeats; ++r) {
    QT_CUDA(cudaEventRecord(ev.a));
    for (int i = 0; i < cpr; ++i) one();
    QT_CUDA(cudaEventRecord(ev.b));
    QT_CUDA(cudaEventSynchronize(ev.b));
    QT_CUDA(cudaGetLastError());
    QT_CUDA(cudaEventElapsedTime(&ms, ev.a, ev.b));
    t.push_back(ms * 1e-3 / cpr);
  }
  c.seconds = median(t);
  c.seconds_min = *std::min_element(t.begin(), t.end());
  c.tflops = tflops(c.M, c.N, c.K, c.seconds);
  c.repeats = cfg.repeats;
  c.calls_per_repeat = cpr;
}

void bench_one_m(GemmKind k, int64_t N, int64_t K, int64_t M, const BenchConfig& cfg, std::vector<BenchCell>& out) {
  const DeviceInfo& dev = require_device();
  use_device();
  const int64_t rows = k == GemmKind::Fp8Block ? vec128_rows(M) : M;
  const int sets = rotation_sets(gemm_bytes(k, M, N, K), dev.l2_bytes, cfg.budget_bytes);
  const size_t out_es = k == GemmKind::Int8 ? 4 : 2;
  std::vector<Set> s(static_cast<size_t>(sets));
  {
    const std::vector<uint8_t> a = random_operand(k, N * K, cfg.seed * 7919 + 1);
    std::vector<uint8_t> b = random_operand(k, rows * K, cfg.seed * 7919 + 2);
    for (Set& x : s) {
      x.A.upload(a);
      x.B.upload(b);
      x.D.resize(static_cast<size_t>(rows * N) * out_es);
      if (k == GemmKind::Int8) x.Y.resize(static_cast<size_t>(rows * N) * 2);
    }
  }
  // Scales, shared by every set (kilobytes: they would sit in L2 in a real model too).
  DeviceBuffer as, bs;
  if (k == GemmKind::Fp8Tensor) {
    as.upload(random_scales(1, 11));
    bs.upload(random_scales(1, 12));
  } else if (k == GemmKind::Fp8ChannelToken || k == GemmKind::Int8) {
    as.upload(random_scales(static_cast<size_t>(N), 13));
    bs.upload(random_scales(static_cast<size_t>(rows), 14));
  } else if (k == GemmKind::Fp8Block) {
    as.upload(random_scales(static_cast<size_t>(blk128_ld(K) * ((N + 127) / 128)), 15));
    bs.upload(random_scales(static_cast<size_t>(rows * blk128_k_blocks(K)), 16));
  }

  struct Variant {
    std::string name;
    bool fast = false, dequant = false;
  };
  std::vector<Variant> variants;
  // Block scaling: exact accumulation only (PyTorch's _scaled_mm refuses fast accumulation with
  // 1x128 / 128x128 block scales; a cell cuBLASLt might silently run exact would be mislabelled).
  if (k == GemmKind::Fp8Block) variants = {{"exact accum", false, false}};
  else if (is_fp8(k)) variants = {{"fast accum", true, false}, {"exact accum", false, false}};
  else if (k == GemmKind::Int8) variants = {{"gemm+dequant", false, true}, {"gemm only", false, false}};
  else variants = {{"", false, false}};

  for (const Variant& v : variants) {
    BenchCell c;
    c.kind = k;
    c.variant = v.name;
    c.M = M;
    c.N = N;
    c.K = K;
    c.sets = sets;
    try {
      LtProblem p;
      p.kind = k;
      p.M = rows;
      p.N = N;
      p.K = K;
      p.fast_accum = v.fast;
      p.a_scale = as.as<float>();
      p.b_scale = bs.as<float>();
      const LtGemm g(p);
      c.algo = g.algo_text();
      time_calls(cfg, sets, c, [&](int i) {
        Set& x = s[static_cast<size_t>(i)];
        g.run(x.A.get(), x.B.get(), x.D.get());
        if (v.dequant)
          QT_CUDA(launch_dequant_i32_bf16(x.D.as<int32_t>(), bs.as<float>(), as.as<float>(), x.Y.as<uint16_t>(), rows,
                                          N, nullptr));
      });
    } catch (const InputError& e) {
      c.error = e.problem();
      cudaGetLastError();
    }
    out.push_back(std::move(c));
  }
}

}  // namespace

std::vector<BenchCell> bench_gemm(GemmKind k, int64_t N, int64_t K, std::span<const int64_t> Ms, const BenchConfig& cfg) {
  const DeviceInfo& dev = require_device();
  std::vector<BenchCell> out;
  const std::string why = shape_reason(k, N, K, dev);
  for (int64_t M : Ms) {
    if (!why.empty()) {
      BenchCell c;
      c.kind = k;
      c.M = M;
      c.N = N;
      c.K = K;
      c.error = why;
      out.push_back(c);
      continue;
    }
    try {
      bench_one_m(k, N, K, M, cfg, out);
    } catch (const InputError& e) {  // out of memory for the sets, ...
      BenchCell c;
      c.kind = k;
      c.M = M;
      c.N = N;
      c.K = K;
      c.error = e.problem();
      cudaGetLastError();
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace qt::kernels::gpu
