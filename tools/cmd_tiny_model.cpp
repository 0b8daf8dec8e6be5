// `qtool tiny-model OUT`: writes the bundled, seeded tiny Llama-shaped checkpoint (for the
// README's first command, tests and demos), or a mixture-of-experts one (--arch). Same seed,
// same bytes.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "tools/commands.h"

namespace qt {

void register_tiny_model(CLI::App& app, RunFn& run) {
  struct Opts {
    std::string out, dtype = "bf16"; uint64_t seed = 0; int shards = 1; bool tied = false, json = false;
    TinyModelOptions dims;  // sizes: defaults are the tiny model; larger ones are for bench/
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("tiny-model", "Write the bundled tiny Llama-shaped (or mixture-of-experts) test model (seeded, deterministic)");
  sub->add_option("OUT", o->out, "Output folder")->required();
  sub->add_option("--arch", o->dims.arch,
                  "Architecture: llama (LlamaForCausalLM), mixtral (MixtralForCausalLM), qwen3_moe "
                  "(Qwen3MoeForCausalLM), qwen2_moe (Qwen2MoeForCausalLM, with a shared expert)")
      ->capture_default_str()->check(CLI::IsMember(tiny_model_architectures()));
  sub->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  sub->add_option("--dtype", o->dtype, "Weight dtype")->capture_default_str()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  sub->add_option("--shards", o->shards, "Number of safetensors shards")->capture_default_str()->check(CLI::Range(1, 64));
  sub->add_flag("--tied", o->tied, "Tie lm_head to the embedding (no lm_head.weight tensor)");
  sub->add_flag("--json", o->json, "Print what was written as JSON on stdout (folder, files, parameters, bytes, config)");
  auto* g = sub->add_option_group("sizes", "Model sizes (for benchmarks; defaults make the tiny model)");
  g->add_option("--hidden", o->dims.hidden_size, "hidden_size")->capture_default_str();
  g->add_option("--intermediate", o->dims.intermediate_size, "intermediate_size")->capture_default_str();
  g->add_option("--layers", o->dims.num_layers, "num_hidden_layers")->capture_default_str();
  g->add_option("--heads", o->dims.num_heads, "num_attention_heads")->capture_default_str();
  g->add_option("--kv-heads", o->dims.num_kv_heads, "num_key_value_heads")->capture_default_str();
  g->add_option("--head-dim", o->dims.head_dim, "head_dim (0: hidden / heads; Qwen3-30B-A3B has 128 with hidden 2048 and 32 heads)")->capture_default_str();
  g->add_option("--vocab", o->dims.vocab_size, "vocab_size")->capture_default_str();
  auto* m = sub->add_option_group("experts", "Mixture-of-experts sizes (--arch mixtral, qwen3_moe, qwen2_moe)");
  m->add_option("--experts", o->dims.num_experts, "Experts per MoE layer")->capture_default_str();
  m->add_option("--experts-per-token", o->dims.experts_per_token, "Experts each token is routed to (top-k)")->capture_default_str();
  m->add_option("--moe-intermediate", o->dims.moe_intermediate_size, "Intermediate size of one expert")->capture_default_str();
  m->add_option("--shared-intermediate", o->dims.shared_intermediate_size, "Intermediate size of qwen2_moe's shared expert")->capture_default_str();
  m->add_option("--mlp-only-layers", o->dims.mlp_only_layers, "qwen3_moe / qwen2_moe: layers with a dense MLP instead of experts");
  sub->callback([&run, o] {
    run = [o] {
      TinyModelOptions t = o->dims;
      t.seed = o->seed;
      t.dtype = o->dtype == "f16" ? DType::F16 : o->dtype == "f32" ? DType::F32 : DType::BF16;
      t.num_shards = o->shards;
      t.tie_word_embeddings = o->tied;
      for (const auto& n : publish_tiny_model(o->out, t)) spdlog::info("{}", n);
      if (o->json) {
        uint64_t params = 0, bytes = 0;
        for (const auto& s : tiny_model_tensor_specs(t)) {
          uint64_t n = 1;
          for (auto d : s.shape) n *= static_cast<uint64_t>(d);
          params += n;
          bytes += *dtype_nbytes(s.dtype, n);
        }
        std::vector<std::string> files;
        for (const auto& e : std::filesystem::directory_iterator(o->out)) files.push_back(e.path().filename().string());
        std::sort(files.begin(), files.end());
        const nlohmann::json j = {{"output", o->out}, {"files", files}, {"parameters", params},
                                  {"tensor_bytes", bytes}, {"config", tiny_model_config(t)}};
        std::printf("%s\n", j.dump(2).c_str());
      } else {
        spdlog::info("wrote tiny model to {}", o->out);
      }
      return 0;
    };
  });
}

}  // namespace qt
