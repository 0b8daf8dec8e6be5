// `qtool tiny-model OUT`: writes the bundled, seeded tiny Llama-shaped checkpoint (for the
// README's first command, tests and demos). Same seed, same bytes.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "tools/commands.h"

namespace qt {

void register_tiny_model(CLI::App& app, RunFn& run) {
  struct Opts {
    std::string out, dtype = "bf16"; uint64_t seed = 0; int shards = 1; bool tied = false;
    TinyModelOptions dims;  // sizes: defaults are the tiny model; larger ones are for bench/
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("tiny-model", "Write the bundled tiny Llama-shaped test model (seeded, deterministic)");
  sub->add_option("OUT", o->out, "Output folder")->required();
  sub->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  sub->add_option("--dtype", o->dtype, "Weight dtype")->capture_default_str()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  sub->add_option("--shards", o->shards, "Number of safetensors shards")->capture_default_str()->check(CLI::Range(1, 64));
  sub->add_flag("--tied", o->tied, "Tie lm_head to the embedding (no lm_head.weight tensor)");
  auto* g = sub->add_option_group("sizes", "Model sizes (for benchmarks; defaults make the tiny model)");
  g->add_option("--hidden", o->dims.hidden_size, "hidden_size")->capture_default_str();
  g->add_option("--intermediate", o->dims.intermediate_size, "intermediate_size")->capture_default_str();
  g->add_option("--layers", o->dims.num_layers, "num_hidden_layers")->capture_default_str();
  g->add_option("--heads", o->dims.num_heads, "num_attention_heads")->capture_default_str();
  g->add_option("--kv-heads", o->dims.num_kv_heads, "num_key_value_heads")->capture_default_str();
  g->add_option("--vocab", o->dims.vocab_size, "vocab_size")->capture_default_str();
  sub->callback([&run, o] {
    run = [o] {
      TinyModelOptions t = o->dims;
      t.seed = o->seed;
      t.dtype = o->dtype == "f16" ? DType::F16 : o->dtype == "f32" ? DType::F32 : DType::BF16;
      t.num_shards = o->shards;
      t.tie_word_embeddings = o->tied;
      write_tiny_model(o->out, t);
      spdlog::info("wrote tiny model to {}", o->out);
      return 0;
    };
  });
}

}  // namespace qt
