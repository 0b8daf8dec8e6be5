// Calibration forward throughput: qtool's layer-by-layer CPU forward pass (calib/forward.h) over
// N samples x L tokens of a model folder, observing every Linear input like calibration does.
// Prints one JSON line. Usage: bench_forward MODEL_DIR SAMPLES SEQ_LEN [THREADS] [f32|bf16] [all|routed]
// (all|routed: the mixture-of-experts calibration policy, --moe-calibration; default all. The
// FLOP count of a sparse layer is what the policy computes: `all` runs every expert's gate/up on
// every token and down_proj on the routed tokens; `routed` gate/up/down on the routed tokens.)
// (QTOOL_ISA=avx2 etc. caps the ISA path, libquant/cpu_isa.h; the line names the path used.)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <random>

#include "calib/observers.h"
#include "calib/forward.h"
#include "calib/model_config.h"
#include "formats/model_folder.h"
#include "libquant/cpu_isa.h"
#include "libquant/gemm.h"
#include "libquant/parallel.h"

int main(int argc, char** argv) {
  if (argc < 4) { std::fprintf(stderr, "usage: bench_forward MODEL_DIR SAMPLES SEQ_LEN [THREADS] [f32|bf16]\n"); return 2; }
  using namespace qt;
  ModelFolder m = ModelFolder::open(argv[1]);
  const int64_t n = std::atoll(argv[2]), len = std::atoll(argv[3]);
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  // As `qtool -j N` does: every parallel region (the observers' too, which take no thread
  // argument) runs on THREADS threads. Run with OMP_WAIT_POLICY=passive to match the CLI's
  // default (tools/main.cpp), which bench/bench_calibrate.sh sets.
  set_default_threads(threads);
  calib::ModelConfig cfg = calib::ModelConfig::from_json(m.config(), m.config_path());
  const Checkpoint& ck = m.checkpoint();
  auto weights = calib::make_view_weight_provider([&ck](const std::string& s) { return ck.find(s); }, m.dir());
  // The same token ids the PyTorch baseline uses: seeded uniform ids (bench/bench_forward_torch.py
  // reads them from the file written here).
  std::vector<std::vector<int32_t>> samples(static_cast<size_t>(n), std::vector<int32_t>(static_cast<size_t>(len)));
  std::mt19937 rng(1234);
  for (auto& s : samples) for (auto& t : s) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(cfg.vocab_size));
  if (FILE* f = std::fopen("bench_forward_ids.bin", "wb")) {
    for (auto& s : samples) std::fwrite(s.data(), 4, s.size(), f);
    std::fclose(f);
  }
  calib::AbsMaxObserver obs;
  calib::ForwardOptions fo;
  fo.observer = &obs;
  fo.num_threads = threads;
  if (argc > 5 && !parse_precision(argv[5], fo.precision)) { std::fprintf(stderr, "precision: f32 or bf16\n"); return 2; }
  if (argc > 6) {
    const std::string p = argv[6];
    if (p != "all" && p != "routed") { std::fprintf(stderr, "policy: all or routed\n"); return 2; }
    fo.moe_all_experts = p == "all";
  }
  fo.lm_head_tied = cfg.lm_head_tied(ck.find("lm_head.weight") != nullptr);
  calib::ForwardStats st = calib::run_forward(cfg, weights, samples, fo);
  // Matmul FLOPs per token: 2 x (Linear parameters of the decoder); attention: 4 x seq x q_dim per
  // layer on average (QK^T and PV over a causal mask ~ half of len).
  const double H = static_cast<double>(cfg.hidden_size);
  double lin = 0.0;
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    lin += 2.0 * (H * (cfg.q_dim() + 2 * cfg.kv_dim()) + cfg.q_dim() * H);
    if (!cfg.layer_is_sparse(l)) {
      lin += 2.0 * 3.0 * H * cfg.intermediate_size;
      continue;
    }
    const double E = static_cast<double>(cfg.moe.num_experts), k = static_cast<double>(cfg.moe.top_k);
    const double ei = static_cast<double>(cfg.moe.expert_intermediate), si = static_cast<double>(cfg.moe.shared_intermediate);
    const double gate_up = fo.moe_all_experts ? E : k;  // experts whose gate/up see each token
    lin += 2.0 * (H * E + gate_up * 2.0 * H * ei + k * H * ei + 3.0 * H * si + (si > 0 ? H : 0.0));
  }
  const double attn = 2.0 * cfg.num_layers * 2.0 * (len / 2.0) * cfg.q_dim();
  const double flops = (lin + attn) * static_cast<double>(st.tokens);
  std::printf("{\"engine\": \"qtool\", \"samples\": %lld, \"seq_len\": %lld, \"tokens\": %lld, \"seconds\": %.3f, "
              "\"tokens_per_s\": %.1f, \"gflops\": %.1f, \"layer_seconds\": %.3f, \"weight_seconds\": %.3f, "
              "\"precision\": \"%s\", \"isa\": \"%s\", \"moe\": \"%s\"}\n",
              (long long)n, (long long)len, (long long)st.tokens, st.seconds, st.tokens_per_second(),
              flops / st.seconds / 1e9, st.layer_seconds, st.weight_seconds, precision_name(fo.precision),
              gemm_path_name(fo.precision == GemmPrecision::BF16).c_str(),
              cfg.is_moe() ? (fo.moe_all_experts ? "all" : "routed") : "none");
  return 0;
}
