// Tests for calib/model_config and calib/forward: the CPU forward pass against transformers
// goldens (testdata/forward/, made by testdata/forward/make_goldens.py), against a naive
// double-precision reference written here from calib/MODELS.md §2-§5 (tile remainders), RoPE
// scaling against transformers and hand derivations, config parsing and error reporting.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/observers.h"
#include "calib/forward.h"
#include "libquant/cpu_isa.h"
#include "libquant/kernels/gemm_onednn.h"
#include "libquant/gemm.h"
#include "libquant/vmath.h"
#include "calib/model_config.h"
#include "formats/model_folder.h"
#include "libquant/error.h"
#include "tests/support/forward_golden.h"
#include "tests/support/test_support.h"

namespace {

using nlohmann::json;
using qt::InputError;
using qt::ActivationStats;
using qt::calib::AbsMaxObserver;
using qt::calib::update_channel_range;
using qt::calib::ForwardOptions;
using qt::calib::ModelConfig;
using qt::calib::Observer;
using qt::calib::WeightProvider;

using qt::test::read_f32;
using qt::test::rel_max_diff;
using Golden = qt::test::GoldenModel;

using qt::test::forward_golden_dir;

struct RunResult {
  std::vector<float> logits;  // all samples' logits, concatenated in sample order
  qt::ActivationStats stats;
  qt::calib::ForwardStats fstats;
};

RunResult run(const Golden& g, const std::vector<std::vector<int32_t>>& tokens, int threads = 0,
              int64_t chunk = 256, const qt::calib::ActivationTransform& transform = {},
              const qt::calib::HiddenSpill& spill = {}) {
  RunResult r;
  AbsMaxObserver obs;
  ForwardOptions o;
  o.hidden_spill = spill;
  o.observer = &obs;
  o.transform = transform;
  o.num_threads = threads;
  o.lm_head_tied = g.tied;
  o.logits_chunk_tokens = chunk;
  o.on_logits = [&](size_t, int64_t, const float* l, int64_t t, int64_t v) {
    r.logits.insert(r.logits.end(), l, l + t * v);
  };
  r.fstats = qt::calib::run_forward(g.cfg, g.weights, tokens, o);
  r.stats = obs.stats();
  return r;
}

// Every key of the golden map is present with a value equal within `rel`, and no extra keys.
void expect_absmax_match(const json& golden, const std::map<std::string, float>& got, double rel,
                         const std::string& what) {
  EXPECT_EQ(got.size(), golden.size()) << what;
  for (const auto& [name, v] : golden.items()) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << what << ": no statistics for " << name;
    const double ref = v.get<double>();
    EXPECT_LE(std::fabs(it->second - ref), rel * ref) << what << " " << name << ": " << it->second << " vs " << ref;
  }
}

// ---- goldens: the four architectures vs transformers 5.23 (float32, eager attention) --------

class ForwardGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ForwardGolden, LogitsMatchTransformersWithin1e4Relative) {
  Golden g(GetParam());
  const json stats = qt::read_json_file(forward_golden_dir(GetParam()) + "/stats.json");
  const auto tokens = stats.at("tokens").get<std::vector<std::vector<int32_t>>>();
  const RunResult r = run(g, tokens);
  const std::vector<float> ref = read_f32(forward_golden_dir(GetParam()) + "/logits.bin");
  ASSERT_EQ(r.logits.size(), ref.size());
  const double diff = rel_max_diff(r.logits, ref);
  { char buf[32]; std::snprintf(buf, sizeof buf, "%.3g", diff); RecordProperty("max_rel_diff", buf); }  // 1.9e-7 .. 4.6e-7 on 2026-11-22; README says "within 1e-6"
  EXPECT_LE(diff, 1e-4);
  EXPECT_EQ(r.fstats.tokens, 19);
  EXPECT_EQ(r.fstats.samples, 2);
}

TEST_P(ForwardGolden, LinearInputAndKvAbsmaxMatchTransformersWithin1e5Relative) {
  Golden g(GetParam());
  const json stats = qt::read_json_file(forward_golden_dir(GetParam()) + "/stats.json");
  const RunResult r = run(g, stats.at("tokens").get<std::vector<std::vector<int32_t>>>());
  expect_absmax_match(stats.at("input_absmax"), r.stats.input_absmax, 1e-5, "input");
  expect_absmax_match(stats.at("k_absmax"), r.stats.k_absmax, 1e-5, "k");
  expect_absmax_match(stats.at("v_absmax"), r.stats.v_absmax, 1e-5, "v");
}

TEST_P(ForwardGolden, ResultsAreBitIdenticalForOneTwoAndThreeThreads) {
  Golden g(GetParam());
  const auto tokens = qt::read_json_file(forward_golden_dir(GetParam()) + "/stats.json")
                          .at("tokens").get<std::vector<std::vector<int32_t>>>();
  const RunResult a = run(g, tokens, 1), b = run(g, tokens, 2), c = run(g, tokens, 3);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * 4), 0);
  EXPECT_EQ(std::memcmp(a.logits.data(), c.logits.data(), a.logits.size() * 4), 0);
  EXPECT_EQ(a.stats.input_absmax, b.stats.input_absmax);
  EXPECT_EQ(a.stats.k_absmax, c.stats.k_absmax);
}

INSTANTIATE_TEST_SUITE_P(Architectures, ForwardGolden,
                         ::testing::Values("llama", "mistral", "qwen2", "qwen3"),
                         [](const auto& info) { return info.param; });

// 300 tokens cross the 64-query attention blocks and the 256-token GEMM row blocks, and the
// Qwen3 model's second layer has a 70-token window reaching across query blocks.
TEST(ForwardGoldenLong, Qwen3SampleCrossingTileBoundariesMatchesTransformers) {
  Golden g("qwen3");
  ASSERT_EQ(g.cfg.sliding_window, (std::vector<int64_t>{0, 70}));
  const json lj = qt::read_json_file(forward_golden_dir("qwen3") + "/long.json");
  const auto tokens = lj.at("tokens").get<std::vector<int32_t>>();
  ASSERT_EQ(tokens.size(), 300u);
  const RunResult r = run(g, {tokens}, 0, 128);
  const int64_t tail = lj.at("tail").get<int64_t>(), vocab = lj.at("vocab").get<int64_t>();
  const std::vector<float> got(r.logits.end() - tail * vocab, r.logits.end());
  EXPECT_LE(rel_max_diff(got, read_f32(forward_golden_dir("qwen3") + "/long_logits_tail.bin")), 1e-4);
  expect_absmax_match(lj.at("input_absmax"), r.stats.input_absmax, 1e-5, "input");
  expect_absmax_match(lj.at("k_absmax"), r.stats.k_absmax, 1e-5, "k");
  expect_absmax_match(lj.at("v_absmax"), r.stats.v_absmax, 1e-5, "v");
}

// ---- hooks ------------------------------------------------------------------------------------

struct CountingObserver : Observer {
  std::map<std::string, int> linear, kv;
  std::map<std::string, int64_t> in_features;
  int64_t expected_kv_dim = 0;
  void on_linear_input(const std::string& m, const float*, int64_t, int64_t in) override {
    ++linear[m];
    in_features[m] = in;
  }
  void on_kv(const std::string& m, const float*, const float*, int64_t, int64_t kv_dim) override {
    ++kv[m];
    EXPECT_EQ(kv_dim, expected_kv_dim);
  }
};

TEST(ForwardHooks, ObserverSeesEachLinearOncePerLayerAndSample) {
  Golden g("qwen3");
  CountingObserver obs;
  obs.expected_kv_dim = 2 * 16;  // 2 kv heads of head_dim 16
  ForwardOptions o;
  o.observer = &obs;
  o.on_logits = [](size_t, int64_t, const float*, int64_t, int64_t) {};
  qt::calib::run_forward(g.cfg, g.weights, {{1, 2, 3}, {4, 5}, {6}}, o);
  EXPECT_EQ(obs.linear.size(), 2u * 7u + 1u);  // 7 Linears per layer + lm_head
  for (const auto& [m, n] : obs.linear) EXPECT_EQ(n, 3) << m;
  EXPECT_EQ(obs.in_features.at("model.layers.1.self_attn.o_proj"), 4 * 16);  // nH * head_dim != hidden
  EXPECT_EQ(obs.in_features.at("model.layers.0.mlp.down_proj"), 64);
  EXPECT_EQ(obs.kv, (std::map<std::string, int>{{"model.layers.0.self_attn", 3}, {"model.layers.1.self_attn", 3}}));
}

TEST(ForwardHooks, WithoutLogitsCallbackTheHeadIsSkipped) {
  Golden g("llama");
  CountingObserver obs;
  obs.expected_kv_dim = 2 * 12;
  ForwardOptions o;
  o.observer = &obs;
  qt::calib::run_forward(g.cfg, g.weights, {{1, 2, 3}}, o);
  EXPECT_EQ(obs.linear.count("lm_head"), 0u);
  EXPECT_EQ(obs.linear.size(), 14u);
}

// Without logits the last layer's down_proj is skipped (nothing reads its output); every
// statistic calibration records must be exactly what a full run records.
TEST(ForwardHooks, StatisticsAreIdenticalWithAndWithoutTheLastDownProjection) {
  Golden g("llama");
  AbsMaxObserver with_logits, without;
  ForwardOptions o;
  o.observer = &without;
  qt::calib::run_forward(g.cfg, g.weights, {{1, 2, 3, 4, 5}}, o);
  o.observer = &with_logits;
  o.on_logits = [](size_t, int64_t, const float*, int64_t, int64_t) {};
  qt::calib::run_forward(g.cfg, g.weights, {{1, 2, 3, 4, 5}}, o);
  auto strip_head = with_logits.stats().input_absmax;
  strip_head.erase("lm_head");
  EXPECT_EQ(without.stats().input_absmax, strip_head);
  EXPECT_EQ(without.stats().k_absmax, with_logits.stats().k_absmax);
  EXPECT_EQ(without.stats().v_absmax, with_logits.stats().v_absmax);
}

TEST(ForwardHooks, IdentityTransformLeavesResultsBitIdentical) {
  Golden g("llama");
  const std::vector<std::vector<int32_t>> toks{{1, 17, 42, 99, 5}};
  std::map<std::string, int> seen;
  const RunResult a = run(g, toks);
  const RunResult b = run(g, toks, 0, 256, [&](const std::string& m, float*, int64_t, int64_t) { ++seen[m]; });
  EXPECT_EQ(a.logits, b.logits);
  EXPECT_EQ(seen.size(), 15u);  // every Linear, lm_head included
  EXPECT_EQ(seen.at("model.layers.0.self_attn.k_proj"), 1);
}

TEST(ForwardHooks, TransformChangesTheMatmulInputButNotWhatTheObserverSees) {
  Golden g("llama");
  const std::vector<std::vector<int32_t>> toks{{1, 17, 42, 99, 5}};
  const RunResult a = run(g, toks);
  // Zero only layer 1's down_proj input: its output becomes exactly its bias.
  const RunResult b = run(g, toks, 0, 256, [](const std::string& m, float* x, int64_t t, int64_t in) {
    if (m == "model.layers.1.mlp.down_proj") std::fill(x, x + t * in, 0.0f);
  });
  EXPECT_GT(rel_max_diff(b.logits, a.logits), 1e-3);
  // Observers see inputs before the transform, and nothing upstream of the transform changed.
  EXPECT_EQ(a.stats.input_absmax.at("model.layers.1.mlp.down_proj"),
            b.stats.input_absmax.at("model.layers.1.mlp.down_proj"));
  EXPECT_EQ(a.stats.k_absmax, b.stats.k_absmax);
}

TEST(ForwardHiddenSpill, HiddenStatesInATemporaryFileGiveBitIdenticalResultsAndLeaveNothing) {
  Golden g("qwen2");
  const std::vector<std::vector<int32_t>> toks{{1, 17, 42, 99, 5, 127, 64}, {2, 120, 0}};
  qt::test::TempDir d;
  const RunResult ram = run(g, toks);
  EXPECT_FALSE(ram.fstats.hidden_spilled);
  EXPECT_EQ(ram.fstats.hidden_bytes, 10u * 48u * 4u);  // 10 tokens x hidden 48 x f32
  const RunResult file = run(g, toks, 0, 256, {}, {d.str(), 0});  // spill anything
  EXPECT_TRUE(file.fstats.hidden_spilled);
  EXPECT_EQ(file.logits, ram.logits);
  EXPECT_EQ(file.stats.input_absmax, ram.stats.input_absmax);
  EXPECT_EQ(file.stats.channel_max, ram.stats.channel_max);
  EXPECT_TRUE(std::filesystem::is_empty(d.path())) << "the spill file must be unlinked";
  // Under the limit: RAM.
  EXPECT_FALSE(run(g, toks, 0, 256, {}, {d.str(), 1u << 20}).fstats.hidden_spilled);
}

TEST(ForwardHiddenSpill, AnUnusableSpillDirectoryIsAnIoErrorNamingIt) {
  Golden g("qwen2");
  try {
    run(g, {{1, 2, 3}}, 0, 256, {}, {"/nonexistent/qtool-spill", 0});
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/qtool-spill: cannot create the calibration spill file"),
              std::string::npos) << e.what();
  }
}

TEST(ForwardHooks, LogitsArriveInChunksOfTheRequestedSizeAndEqualOneChunk) {
  Golden g("mistral");
  const std::vector<std::vector<int32_t>> toks{{1, 17, 42, 99, 5, 127, 64, 3, 88, 42, 42, 7}, {2, 3}};
  std::vector<std::tuple<size_t, int64_t, int64_t>> calls;
  std::vector<float> chunked;
  ForwardOptions o;
  o.logits_chunk_tokens = 5;
  o.on_logits = [&](size_t s, int64_t first, const float* l, int64_t t, int64_t v) {
    calls.emplace_back(s, first, t);
    chunked.insert(chunked.end(), l, l + t * v);
  };
  qt::calib::run_forward(g.cfg, g.weights, toks, o);
  using C = std::tuple<size_t, int64_t, int64_t>;
  EXPECT_EQ(calls, (std::vector<C>{C{0, 0, 5}, C{0, 5, 5}, C{0, 10, 2}, C{1, 0, 2}}));
  // Bit-identical: every logit is one FMA chain over its own row (gemm.h), whatever the chunk.
  const std::vector<float> whole = run(g, toks, 0, 0).logits;
  ASSERT_EQ(chunked.size(), whole.size());
  EXPECT_EQ(std::memcmp(chunked.data(), whole.data(), whole.size() * sizeof(float)), 0);
}

TEST(ForwardHooks, TiedModelWithoutLmHeadUsesTheEmbedding) {
  Golden g("qwen2");  // saved with tie_word_embeddings: no lm_head.weight in the file
  EXPECT_EQ(g.folder.checkpoint().find("lm_head.weight"), nullptr);
  EXPECT_TRUE(g.tied);
  ForwardOptions o;
  o.lm_head_tied = false;  // a caller that forgot to resolve tying gets a clear error
  o.on_logits = [](size_t, int64_t, const float*, int64_t, int64_t) {};
  try {
    qt::calib::run_forward(g.cfg, g.weights, {{1}}, o);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Missing);
    EXPECT_EQ(e.tensor(), "lm_head.weight");
    EXPECT_EQ(e.file(), g.folder.dir());
  }
}

// ---- the tensors a forward pass loads ----------------------------------------------------------

// forward_weights() is what calibration validates before it starts; it must name every tensor
// run_forward then asks for, in order, with the shapes it checks (run_forward also asserts it).
TEST(ForwardWeights, ListsExactlyTheTensorsRunForwardLoadsInOrderForEveryArchitecture) {
  for (const char* name : {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "qwen2_moe"}) {
    Golden g(name);
    for (bool logits : {false, true}) {
      std::vector<qt::calib::WeightSpec> loaded;
      WeightProvider rec = [&](const std::string& n, std::vector<float>& out, std::vector<int64_t>& shape) {
        g.weights(n, out, shape);
        loaded.push_back({n, shape});
      };
      ForwardOptions o;
      o.lm_head_tied = g.tied;
      if (logits) o.on_logits = [](size_t, int64_t, const float*, int64_t, int64_t) {};
      qt::calib::run_forward(g.cfg, rec, {{1, 2, 3}}, o);
      const std::vector<qt::calib::WeightSpec> listed = qt::calib::forward_weights(g.cfg, logits, g.tied);
      ASSERT_EQ(listed.size(), loaded.size()) << name;
      for (size_t i = 0; i < listed.size(); ++i) {
        EXPECT_EQ(listed[i].name, loaded[i].name) << name << " #" << i;
        EXPECT_EQ(listed[i].shape, loaded[i].shape) << name << " " << listed[i].name;
      }
    }
  }
}

// ---- input errors -----------------------------------------------------------------------------

TEST(ForwardErrors, RejectsTokenIdOutsideTheEmbedding) {
  Golden g("llama");
  try {
    qt::calib::run_forward(g.cfg, g.weights, {{1, 2}, {3, 128}}, {});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::BadValue);
    EXPECT_NE(std::string(e.what()).find("sample 1"), std::string::npos) << e.what();
    EXPECT_EQ(e.got(), "128");
  }
  EXPECT_THROW(qt::calib::run_forward(g.cfg, g.weights, {{-1}}, {}), InputError);
}

TEST(ForwardErrors, RejectsAnEmptySample) {
  Golden g("llama");
  EXPECT_THROW(qt::calib::run_forward(g.cfg, g.weights, {{1}, {}}, {}), InputError);
}

TEST(ForwardErrors, ReportsATensorWhoseShapeDisagreesWithTheConfig) {
  Golden g("llama");
  WeightProvider bad = [&](const std::string& n, std::vector<float>& out, std::vector<int64_t>& shape) {
    g.weights(n, out, shape);
    if (n == "model.layers.1.self_attn.k_proj.weight") std::swap(shape[0], shape[1]);
  };
  ForwardOptions o;
  o.source = "/models/x";
  try {
    qt::calib::run_forward(g.cfg, bad, {{1, 2}}, o);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
    EXPECT_EQ(e.file(), "/models/x");
    EXPECT_EQ(e.tensor(), "model.layers.1.self_attn.k_proj.weight");
    EXPECT_EQ(e.expected(), "[24,48]");
    EXPECT_EQ(e.got(), "[48,24]");
  }
}

TEST(ForwardErrors, ViewProviderReportsAMissingTensorAndItsCheckpoint) {
  auto p = qt::calib::make_view_weight_provider([](const std::string&) { return nullptr; }, "/m");
  std::vector<float> out;
  std::vector<int64_t> shape;
  try {
    p("model.norm.weight", out, shape);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Missing);
    EXPECT_EQ(std::string(e.what()), "/m: tensor 'model.norm.weight': tensor is missing from the checkpoint");
  }
}

TEST(ForwardErrors, ViewProviderDecodesBf16ExactlyAndRefusesUndecodableDtypes) {
  // bf16 0x3FC0 = 1.5, 0xC000 = -2
  const std::vector<uint8_t> bf16{0xC0, 0x3F, 0x00, 0xC0};
  qt::TensorView tv{"w", qt::DType::BF16, {2}, std::span<const uint8_t>(bf16), "f.safetensors"};
  auto p = qt::calib::make_view_weight_provider([&](const std::string&) { return &tv; }, "/m");
  std::vector<float> out;
  std::vector<int64_t> shape;
  p("w", out, shape);
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(shape, (std::vector<int64_t>{2}));
  const std::vector<uint8_t> u16(4);
  qt::TensorView tu{"u", qt::DType::U16, {2}, std::span<const uint8_t>(u16), "f.safetensors"};
  auto q = qt::calib::make_view_weight_provider([&](const std::string&) { return &tu; }, "/m");
  try {
    q("u", out, shape);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Unsupported);
    EXPECT_EQ(e.file(), "f.safetensors");
    EXPECT_EQ(e.got(), "U16");
  }
}

// ---- naive reference: tiling remainders ---------------------------------------------------

// Straight from calib/MODELS.md §1-§5 in double precision, plain loops, no tiling:
// the independent check that qtool's blocked GEMMs / attention handle every remainder.
// Default RoPE only (inv_freq[i] = theta^(-2i/D) in double).
// Operands (bf16 precision, forward.h): `linears_bf16` rounds every Linear's input and weight to
// bf16 before its product (the head's too), `attention_bf16` also q and k (after RoPE), the
// softmax probabilities and v; everything else stays double.
double to_bf16(double x) {  // round to nearest even at 8 significant bits (x normal and finite)
  const float f = static_cast<float>(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
std::vector<double> reference_logits(const ModelConfig& c, const WeightProvider& wp,
                                     const std::vector<int32_t>& ids, bool linears_bf16 = false,
                                     bool attention_bf16 = false) {
  auto op = [](double x, bool round) { return round ? to_bf16(x) : x; };
  auto W = [&](const std::string& n) {
    std::vector<float> f;
    std::vector<int64_t> s;
    wp(n, f, s);
    return std::vector<double>(f.begin(), f.end());
  };
  const int64_t T = static_cast<int64_t>(ids.size()), H = c.hidden_size, D = c.head_dim;
  const int64_t nH = c.num_heads, nKV = c.num_kv_heads, I = c.intermediate_size;
  using Mat = std::vector<std::vector<double>>;
  auto rms = [&](std::vector<double> x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / x.size() + c.rms_norm_eps);
    for (size_t i = 0; i < x.size(); ++i) x[i] = w[i] * x[i] * r;
    return x;
  };
  auto lin = [&](const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>* b,
                 int64_t out) {
    const int64_t in = static_cast<int64_t>(x.size());
    std::vector<double> y(out);
    for (int64_t o = 0; o < out; ++o) {
      double s = 0.0;
      for (int64_t i = 0; i < in; ++i) s += op(x[i], linears_bf16) * op(w[o * in + i], linears_bf16);
      if (b) s += (*b)[o];
      y[o] = s;
    }
    return y;
  };
  auto rope = [&](std::vector<double>& x, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < D / 2; ++d) {
        const double ang = pos * std::pow(c.rope.theta, -2.0 * d / D);
        const double x1 = x[h * D + d], x2 = x[h * D + d + D / 2];
        x[h * D + d] = x1 * std::cos(ang) - x2 * std::sin(ang);
        x[h * D + d + D / 2] = x2 * std::cos(ang) + x1 * std::sin(ang);
      }
  };
  const std::vector<double> E = W("model.embed_tokens.weight");
  Mat h(T);
  for (int64_t t = 0; t < T; ++t) h[t].assign(E.begin() + ids[t] * H, E.begin() + (ids[t] + 1) * H);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto in_n = W(p + "input_layernorm.weight"), post_n = W(p + "post_attention_layernorm.weight");
    const auto wq = W(p + "self_attn.q_proj.weight"), wk = W(p + "self_attn.k_proj.weight");
    const auto wv = W(p + "self_attn.v_proj.weight"), wo = W(p + "self_attn.o_proj.weight");
    std::vector<double> bq, bk, bv, bo, qn, kn;
    if (c.qkv_bias) bq = W(p + "self_attn.q_proj.bias"), bk = W(p + "self_attn.k_proj.bias"), bv = W(p + "self_attn.v_proj.bias");
    if (c.o_bias) bo = W(p + "self_attn.o_proj.bias");
    if (c.qk_norm) qn = W(p + "self_attn.q_norm.weight"), kn = W(p + "self_attn.k_norm.weight");
    const auto wg = W(p + "mlp.gate_proj.weight"), wu = W(p + "mlp.up_proj.weight"), wd = W(p + "mlp.down_proj.weight");
    const int64_t win = c.sliding_window[l];
    Mat q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      const auto x = rms(h[t], in_n);
      q[t] = lin(x, wq, c.qkv_bias ? &bq : nullptr, nH * D);
      k[t] = lin(x, wk, c.qkv_bias ? &bk : nullptr, nKV * D);
      v[t] = lin(x, wv, c.qkv_bias ? &bv : nullptr, nKV * D);
      if (c.qk_norm) {
        for (int64_t hh = 0; hh < nH; ++hh) {
          auto seg = rms(std::vector<double>(q[t].begin() + hh * D, q[t].begin() + (hh + 1) * D), qn);
          std::copy(seg.begin(), seg.end(), q[t].begin() + hh * D);
        }
        for (int64_t hh = 0; hh < nKV; ++hh) {
          auto seg = rms(std::vector<double>(k[t].begin() + hh * D, k[t].begin() + (hh + 1) * D), kn);
          std::copy(seg.begin(), seg.end(), k[t].begin() + hh * D);
        }
      }
      rope(q[t], nH, t);
      rope(k[t], nKV, t);
    }
    for (int64_t i = 0; i < T; ++i) {
      std::vector<double> a(nH * D, 0.0);
      for (int64_t hh = 0; hh < nH; ++hh) {
        const int64_t g = hh / (nH / nKV);
        const int64_t j0 = win > 0 ? std::max<int64_t>(0, i - win + 1) : 0;
        std::vector<double> s;
        double m = -1e300;
        for (int64_t j = j0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += op(q[i][hh * D + d], attention_bf16) * op(k[j][g * D + d], attention_bf16);
          s.push_back(dot / std::sqrt(static_cast<double>(D)));
          m = std::max(m, s.back());
        }
        double z = 0;
        for (double& x : s) z += (x = std::exp(x - m));
        for (int64_t j = j0; j <= i; ++j)
          for (int64_t d = 0; d < D; ++d)
            a[hh * D + d] += op(s[j - j0] / z, attention_bf16) * op(v[j][g * D + d], attention_bf16);
      }
      const auto o = lin(a, wo, c.o_bias ? &bo : nullptr, H);
      for (int64_t d = 0; d < H; ++d) h[i][d] += o[d];
    }
    for (int64_t t = 0; t < T; ++t) {
      const auto x = rms(h[t], post_n);
      auto gt = lin(x, wg, nullptr, I);
      const auto up = lin(x, wu, nullptr, I);
      for (int64_t i = 0; i < I; ++i) gt[i] = gt[i] / (1.0 + std::exp(-gt[i])) * up[i];
      const auto dn = lin(gt, wd, nullptr, H);
      for (int64_t d = 0; d < H; ++d) h[t][d] += dn[d];
    }
  }
  const auto nw = W("model.norm.weight");
  const auto lm = W(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  std::vector<double> logits;
  for (int64_t t = 0; t < T; ++t) {
    const auto y = lin(rms(h[t], nw), lm, nullptr, c.vocab_size);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

// Sizes picked to leave remainders in every tile (gemm.h: 6-row tiles, 16-column panels, 96-row x
// 128-column tasks): 300 vocab rows and 136 intermediate rows, head_dim 10, sequence lengths
// around the 64-query attention block and past a 96-row task, a window
// of 70 that straddles query blocks, GQA 6:2, Qwen3 q/k norms and biases.
ModelConfig remainder_config() {
  return ModelConfig::from_json(json{{"architectures", {"Qwen3ForCausalLM"}},
                                     {"hidden_size", 40}, {"intermediate_size", 136},
                                     {"num_hidden_layers", 2}, {"num_attention_heads", 6},
                                     {"num_key_value_heads", 2}, {"head_dim", 10},
                                     {"vocab_size", 300}, {"rms_norm_eps", 1e-6},
                                     {"rope_theta", 10000.0}, {"attention_bias", true},
                                     {"use_sliding_window", true}, {"sliding_window", 70},
                                     {"max_window_layers", 1}},
                                "remainder.json");
}

TEST(ForwardReference, MatchesNaiveDoublePrecisionReferenceAcrossTileRemainders) {
  const ModelConfig c = remainder_config();
  ASSERT_EQ(c.sliding_window, (std::vector<int64_t>{0, 70}));
  const WeightProvider wp = qt::calib::synthetic_weight_provider(c, 42);
  for (int64_t T : {1, 63, 64, 65, 131, 257}) {
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 37 + 11) % 300);
    std::vector<float> got;
    ForwardOptions o;
    o.on_logits = [&](size_t, int64_t, const float* l, int64_t n, int64_t v) { got.insert(got.end(), l, l + n * v); };
    qt::calib::run_forward(c, wp, {ids}, o);
    const std::vector<double> ref = reference_logits(c, wp, ids);
    const std::vector<float> reff(ref.begin(), ref.end());
    EXPECT_LE(rel_max_diff(got, reff), 1e-4) << "T=" << T;
  }
}

// bf16 precision against the same naive reference with bf16 operands: the forward must be close
// to the reference that rounds the attention's operands too (q, k, the probabilities, v), and
// measurably farther from the one that rounds only the Linears' -- the attention's products
// really run in bf16 -- and from the f32 reference.
TEST(ForwardBf16, AttentionOperandsAreRoundedToBf16AsTheNaiveReferenceDoes) {
  const ModelConfig c = remainder_config();
  const WeightProvider wp = qt::calib::synthetic_weight_provider(c, 42);
  for (int64_t T : {63, 131, 257}) {
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 37 + 11) % 300);
    std::vector<float> got;
    ForwardOptions o;
    o.precision = qt::GemmPrecision::BF16;
    o.on_logits = [&](size_t, int64_t, const float* l, int64_t n, int64_t v) { got.insert(got.end(), l, l + n * v); };
    qt::calib::run_forward(c, wp, {ids}, o);
    // Per token: its logits' largest difference relative to the reference row's largest |logit|;
    // a token "agrees" at <= 1e-5 (f32 rounding of the same bf16 operands; a bf16 operand that
    // sits on a rounding boundary can round the other way in double and move every later token).
    auto agreeing = [&](bool lin, bool att) {
      const std::vector<double> ref = reference_logits(c, wp, ids, lin, att);
      int64_t n = 0;
      for (int64_t t = 0; t < T; ++t) {
        double d = 0, m = 0;
        for (int64_t j = 0; j < c.vocab_size; ++j) {
          d = std::max(d, std::fabs(got[t * c.vocab_size + j] - ref[t * c.vocab_size + j]));
          m = std::max(m, std::fabs(ref[t * c.vocab_size + j]));
        }
        n += d <= 1e-5 * m;
      }
      return n;
    };
    const int64_t all = agreeing(true, true), lin_only = agreeing(true, false), f32 = agreeing(false, false);
    // Measured 2026-12-07 (all / linears-only / f32): T=63: 63 / 1 / 0, T=131: 131 / 1 / 0,
    // T=257: 206 / 1 / 0 (51 tokens moved by operands that round the other way in double).
    EXPECT_GE(all, T * 3 / 4) << "T=" << T;
    EXPECT_LT(lin_only, T / 10) << "T=" << T << ": the attention's operands look unrounded";
    EXPECT_LT(f32, T / 10) << "T=" << T;
  }
}

// Big enough that every kernel really forks (the golden models are below the fork thresholds),
// with remainders in every tile; logits and every statistic must be bit-identical.
ModelConfig determinism_config() {
  return ModelConfig::from_json(
      json{{"architectures", {"MistralForCausalLM"}}, {"hidden_size", 136}, {"intermediate_size", 392},
           {"num_hidden_layers", 2}, {"num_attention_heads", 8}, {"num_key_value_heads", 2},
           {"head_dim", 16}, {"vocab_size", 520}, {"sliding_window", 100}},
      "determinism.json");
}

std::vector<std::vector<int32_t>> determinism_tokens() {
  std::vector<std::vector<int32_t>> toks(2);
  for (int t = 0; t < 300; ++t) toks[0].push_back((t * 31 + 5) % 520);
  for (int t = 0; t < 77; ++t) toks[1].push_back((t * 13 + 2) % 520);
  return toks;
}

// Logits and statistics of one run on the determinism model.
std::pair<std::vector<float>, qt::ActivationStats> determinism_run(int threads, qt::GemmPrecision prec) {
  const ModelConfig c = determinism_config();
  const WeightProvider wp = qt::calib::synthetic_weight_provider(c, 7);
  std::pair<std::vector<float>, qt::ActivationStats> r;
  AbsMaxObserver obs;
  ForwardOptions o;
  o.observer = &obs;
  o.num_threads = threads;
  o.precision = prec;
  o.on_logits = [&](size_t, int64_t, const float* l, int64_t n, int64_t v) {
    r.first.insert(r.first.end(), l, l + n * v);
  };
  qt::calib::run_forward(c, wp, determinism_tokens(), o);
  r.second = obs.stats();
  return r;
}

TEST(ForwardReference, ResultsAreBitIdenticalForAnyThreadCountAndOnEveryIsaPath) {
  auto once = [](int threads) { return determinism_run(threads, qt::GemmPrecision::F32); };
  const auto a = once(1);
  ASSERT_EQ(a.first.size(), 377u * 520u);
  for (int threads : {2, 3, 4}) {
    const auto b = once(threads);
    EXPECT_EQ(std::memcmp(a.first.data(), b.first.data(), a.first.size() * 4), 0) << threads << " threads";
    EXPECT_EQ(a.second.input_absmax, b.second.input_absmax) << threads << " threads";
    EXPECT_EQ(a.second.k_absmax, b.second.k_absmax) << threads << " threads";
    EXPECT_EQ(a.second.v_absmax, b.second.v_absmax) << threads << " threads";
  }
  // The same run on the scalar twins of every vector kernel (a CPU without AVX2): same bits.
  qt::linear_force_scalar(true);
  qt::vmath_force_scalar(true);
  const auto s = once(2);
  qt::linear_force_scalar(false);
  qt::vmath_force_scalar(false);
  EXPECT_EQ(std::memcmp(a.first.data(), s.first.data(), a.first.size() * 4), 0) << "scalar kernels";
  EXPECT_EQ(a.second.input_absmax, s.second.input_absmax) << "scalar kernels";
  EXPECT_EQ(a.second.k_absmax, s.second.k_absmax) << "scalar kernels";
  // Capped at each ISA path this CPU has (AVX2 on an AVX-512 machine, ...): same bits.
  for (qt::Isa isa : {qt::Isa::Scalar, qt::Isa::Avx2, qt::Isa::Avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(qt::cpu_isa())) continue;  // this CPU lacks it
    qt::isa_cap_for_tests(isa);
    const auto p = once(2);
    qt::isa_cap_for_tests(qt::Isa::Avx512);
    EXPECT_EQ(std::memcmp(a.first.data(), p.first.data(), a.first.size() * 4), 0) << qt::isa_name(isa);
    EXPECT_EQ(a.second.input_absmax, p.second.input_absmax) << qt::isa_name(isa);
  }
}

// bf16 precision: deterministic at any thread count, the AVX512-BF16 kernel and the scalar
// emulation give the same bits, and every statistic stays close to the f32 run's (the bf16
// rounding of each Linear's input and weight, ~2^-8 relative per product, compounded over 2
// layers; measured here: see RecordProperty).
TEST(ForwardBf16, IsBitIdenticalForAnyThreadCountAndWithOrWithoutAvx512Bf16) {
  const qt::test::Bf16BackendScope own(qt::Bf16Backend::Own);  // (oneDNN: the test after next)
  const auto a = determinism_run(1, qt::GemmPrecision::BF16);
  for (int threads : {2, 3}) {
    const auto b = determinism_run(threads, qt::GemmPrecision::BF16);
    EXPECT_EQ(std::memcmp(a.first.data(), b.first.data(), a.first.size() * 4), 0) << threads << " threads";
    EXPECT_EQ(a.second.input_absmax, b.second.input_absmax) << threads << " threads";
  }
  qt::linear_force_scalar(true);
  const auto s = determinism_run(2, qt::GemmPrecision::BF16);
  qt::linear_force_scalar(false);
  EXPECT_EQ(std::memcmp(a.first.data(), s.first.data(), a.first.size() * 4), 0) << "scalar emulation";
  EXPECT_EQ(a.second.input_absmax, s.second.input_absmax) << "scalar emulation";
  if (static_cast<int>(qt::cpu_isa()) >= static_cast<int>(qt::Isa::Avx2)) {  // the AVX2 + FMA emulation
    qt::isa_cap_for_tests(qt::Isa::Avx2);
    const auto e = determinism_run(2, qt::GemmPrecision::BF16);
    qt::isa_cap_for_tests(qt::Isa::Avx512);
    EXPECT_EQ(std::memcmp(a.first.data(), e.first.data(), a.first.size() * 4), 0) << "AVX2 emulation";
    EXPECT_EQ(a.second.input_absmax, e.second.input_absmax) << "AVX2 emulation";
  }
}

TEST(ForwardBf16, StatisticsStayWithinAFewBf16UlpsOfTheF32Run) {
  const qt::test::Bf16BackendScope own(qt::Bf16Backend::Own);
  const auto f = determinism_run(2, qt::GemmPrecision::F32);
  const auto b = determinism_run(2, qt::GemmPrecision::BF16);
  ASSERT_EQ(f.second.input_absmax.size(), b.second.input_absmax.size());
  double worst = 0;
  for (const auto& [name, v] : f.second.input_absmax) {
    const float w = b.second.input_absmax.at(name);
    const double rel = std::fabs(static_cast<double>(w) - v) / v;
    worst = std::max(worst, rel);
    // 2^-6 = 2 bf16 ulps at most, relative (layer 0's q/k/v input is the embedding: exact).
    EXPECT_LE(rel, 0x1p-6) << name << ": f32 " << v << ", bf16 " << w;
  }
  EXPECT_EQ(f.second.input_absmax.at("model.layers.0.self_attn.q_proj"),
            b.second.input_absmax.at("model.layers.0.self_attn.q_proj"));  // before any GEMM
  EXPECT_GT(worst, 0.0);  // the bf16 run really differs
  RecordProperty("worst_relative_absmax_difference", std::to_string(worst));
}

// The bf16 GEMM through oneDNN (the default on AMX machines; forced here): bit-identical at any
// thread count, and every statistic within the same 2 bf16 ulps of the f32 run as the own kernel.
TEST(ForwardBf16, OnednnBackendIsBitIdenticalForAnyThreadCountAndStaysWithinTwoUlpsOfF32) {
  if (!qt::kernels::onednn::available())
    GTEST_SKIP() << "no oneDNN bf16 matmul here (built without oneDNN, or a CPU without AVX-512)";
  const auto f = determinism_run(2, qt::GemmPrecision::F32);
  std::pair<std::vector<float>, qt::ActivationStats> a, b, c;
  {
    const qt::test::Bf16BackendScope dnn(qt::Bf16Backend::Onednn);
    a = determinism_run(1, qt::GemmPrecision::BF16);
    b = determinism_run(2, qt::GemmPrecision::BF16);
    c = determinism_run(3, qt::GemmPrecision::BF16);
  }
  EXPECT_EQ(std::memcmp(a.first.data(), b.first.data(), a.first.size() * 4), 0) << "2 threads";
  EXPECT_EQ(std::memcmp(a.first.data(), c.first.data(), a.first.size() * 4), 0) << "3 threads";
  EXPECT_EQ(a.second.input_absmax, b.second.input_absmax);
  EXPECT_EQ(a.second.input_absmax, c.second.input_absmax);
  for (const auto& [name, v] : f.second.input_absmax) {
    const float w = a.second.input_absmax.at(name);
    EXPECT_LE(std::fabs(static_cast<double>(w) - v) / v, 0x1p-6) << name << ": f32 " << v << ", bf16 " << w;
  }
}

TEST(ForwardReference, SyntheticProviderIsDeterministicAndShapedByTheConfig) {
  const ModelConfig c = remainder_config();
  std::vector<float> a, b;
  std::vector<int64_t> sa, sb;
  qt::calib::synthetic_weight_provider(c, 1)("model.layers.1.self_attn.o_proj.weight", a, sa);
  qt::calib::synthetic_weight_provider(c, 1)("model.layers.1.self_attn.o_proj.weight", b, sb);
  EXPECT_EQ(sa, (std::vector<int64_t>{40, 60}));
  EXPECT_EQ(a, b);
  qt::calib::synthetic_weight_provider(c, 2)("model.layers.1.self_attn.o_proj.weight", b, sb);
  EXPECT_NE(a, b);
}

TEST(ForwardBenchmark, ReportsTokensProcessedAndTime) {
  const ModelConfig c = remainder_config();
  const auto st = qt::calib::benchmark_forward(c, qt::calib::synthetic_weight_provider(c, 3), 3, 50, 1);
  EXPECT_EQ(st.samples, 3);
  EXPECT_EQ(st.tokens, 150);
  EXPECT_GT(st.seconds, 0.0);
  EXPECT_GE(st.seconds, st.layer_seconds);
  EXPECT_GT(st.tokens_per_second(), 0.0);
}

// ---- AbsMaxObserver ------------------------------------------------------------------------

TEST(AbsMaxObserver, KeepsTheLargestMagnitudeAcrossCallsAndPropagatesNaN) {
  AbsMaxObserver o;
  const float a[] = {1.0f, -3.0f, 2.0f}, b[] = {-2.5f, 0.5f, 0.0f};
  o.on_linear_input("m", a, 1, 3);
  o.on_linear_input("m", b, 3, 1);
  EXPECT_EQ(o.stats().input_absmax.at("m"), 3.0f);
  const float k[] = {0.25f, -4.0f}, v[] = {NAN, 1.0f};
  o.on_kv("attn", k, v, 1, 2);
  EXPECT_EQ(o.stats().k_absmax.at("attn"), 4.0f);
  EXPECT_TRUE(std::isnan(o.stats().v_absmax.at("attn")));
  o.on_kv("attn", k, k, 1, 2);
  EXPECT_TRUE(std::isnan(o.stats().v_absmax.at("attn")));  // a NaN is never replaced
}

TEST(AbsMaxObserver, SharedInputRecordsTheSameMaximumForEveryModule) {
  AbsMaxObserver o;
  const float x[] = {0.5f, -6.0f, 2.0f, 1.0f};
  o.on_linear_input("q", x, 1, 1);  // q saw 0.5 before
  o.on_shared_linear_input("n", {"q", "k", "v"}, x, 2, 2);
  EXPECT_EQ(o.stats().input_absmax.at("q"), 6.0f);
  EXPECT_EQ(o.stats().input_absmax.at("k"), 6.0f);
  EXPECT_EQ(o.stats().input_absmax.at("v"), 6.0f);
}

TEST(AbsMaxObserver, SharedInputRecordsThePerChannelRangeOfItsProducer) {
  AbsMaxObserver o;
  const float x[] = {0.5f, -6.0f, 2.0f,   // token 0
                     -1.0f, 4.0f, 2.0f};  // token 1
  o.on_shared_linear_input("n", {"q"}, x, 2, 3);
  EXPECT_EQ(o.stats().channel_min.at("n"), (std::vector<float>{-1.0f, -6.0f, 2.0f}));
  EXPECT_EQ(o.stats().channel_max.at("n"), (std::vector<float>{0.5f, 4.0f, 2.0f}));
  const float y[] = {NAN, 9.0f, -3.0f};
  o.on_shared_linear_input("n", {"q"}, y, 1, 3);
  o.on_shared_linear_input("n", {"q"}, x, 1, 3);  // a NaN channel stays NaN
  EXPECT_TRUE(std::isnan(o.stats().channel_min.at("n")[0]));
  EXPECT_TRUE(std::isnan(o.stats().channel_max.at("n")[0]));
  EXPECT_EQ(o.stats().channel_min.at("n")[2], -3.0f);
  EXPECT_EQ(o.stats().channel_max.at("n")[1], 9.0f);
}

TEST(ChannelRange, LargeInputsGiveTheExactRangeAtAnyThreadCount) {
  // 300 x 577 crosses the parallel threshold and leaves a partial 64-channel block.
  const int64_t T = 300, C = 577;
  std::vector<float> x(static_cast<size_t>(T * C));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i) * 0.013f) * static_cast<float>(1 + i % 13);
  x[static_cast<size_t>(17 * C + 576)] = NAN;  // last channel, in the partial block
  std::vector<float> mn(static_cast<size_t>(C), INFINITY), mx(static_cast<size_t>(C), -INFINITY);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      mn[static_cast<size_t>(c)] = std::min(mn[static_cast<size_t>(c)], x[static_cast<size_t>(t * C + c)]);
      mx[static_cast<size_t>(c)] = std::max(mx[static_cast<size_t>(c)], x[static_cast<size_t>(t * C + c)]);
    }
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    ActivationStats st;
    update_channel_range(st, "n", x.data(), T / 2, C);  // two calls fold like one
    update_channel_range(st, "n", x.data() + (T / 2) * C, T - T / 2, C);
    for (int64_t c = 0; c + 1 < C; ++c) {
      EXPECT_EQ(st.channel_min["n"][static_cast<size_t>(c)], mn[static_cast<size_t>(c)]) << c;
      EXPECT_EQ(st.channel_max["n"][static_cast<size_t>(c)], mx[static_cast<size_t>(c)]) << c;
    }
    EXPECT_TRUE(std::isnan(st.channel_min["n"][576]));
    EXPECT_TRUE(std::isnan(st.channel_max["n"][576]));
  }
  omp_set_num_threads(2);
}

TEST(ChannelRange, ReturnsTheAbsmaxOfItsInputAtAnyThreadCount) {
  // 300 x 577: parallel, a partial 64-channel block; the largest magnitude is negative.
  const int64_t T = 300, C = 577;
  std::vector<float> x(static_cast<size_t>(T * C));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i) * 0.017f) * static_cast<float>(1 + i % 7);
  x[static_cast<size_t>(123 * C + 575)] = -11.25f;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    ActivationStats st;
    EXPECT_EQ(update_channel_range(st, "n", x.data(), T, C), 11.25f);
    EXPECT_EQ(update_channel_range(st, "n", x.data(), 0, C), 0.0f);
    std::vector<float> y(x);
    y[static_cast<size_t>(299 * C + 3)] = NAN;
    EXPECT_TRUE(std::isnan(update_channel_range(st, "n", y.data(), T, C)));
  }
  omp_set_num_threads(2);
}

TEST(AbsMaxF32, FindsTheMaximumMagnitudeInLongArraysAndPropagatesNaN) {
  std::vector<float> x(300001, 0.25f);  // long enough to run in parallel
  x[123457] = -9.5f;
  EXPECT_EQ(qt::calib::absmax_f32(x.data(), static_cast<int64_t>(x.size())), 9.5f);
  x[299999] = NAN;
  EXPECT_TRUE(std::isnan(qt::calib::absmax_f32(x.data(), static_cast<int64_t>(x.size()))));
  EXPECT_EQ(qt::calib::absmax_f32(x.data(), 0), 0.0f);
}

// ---- ModelConfig ----------------------------------------------------------------------------

json llama_json() {
  return json{{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 4096},
              {"intermediate_size", 14336}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
              {"num_key_value_heads", 8}, {"vocab_size", 128256}, {"rms_norm_eps", 1e-5},
              {"max_position_embeddings", 131072}, {"rope_theta", 500000.0},
              {"hidden_act", "silu"}, {"tie_word_embeddings", false}};
}

TEST(ModelConfig, ReadsEveryFieldOfALlamaConfig) {
  const ModelConfig c = ModelConfig::from_json(llama_json(), "config.json");
  EXPECT_EQ(c.arch, qt::calib::Architecture::Llama);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(32, 0));
  EXPECT_EQ(c.q_dim(), 4096);
  EXPECT_EQ(c.kv_dim(), 1024);
  EXPECT_TRUE(c.lm_head_tied(false));
  EXPECT_FALSE(c.lm_head_tied(true));
}

TEST(ModelConfig, LlamaBiasesFollowAttentionBiasAndMlpBias) {
  json j = llama_json();
  j["attention_bias"] = true;
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_TRUE(c.qkv_bias && c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  j["mlp_bias"] = true;
  EXPECT_TRUE(ModelConfig::from_json(j, "c").mlp_bias);
}

TEST(ModelConfig, HeadDimIsExplicitOrDerivedWhenAbsentOrNull) {
  json j = llama_json();
  j["head_dim"] = 64;
  EXPECT_EQ(ModelConfig::from_json(j, "c").head_dim, 64);
  EXPECT_EQ(ModelConfig::from_json(j, "c").q_dim(), 32 * 64);
  j["head_dim"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(j, "c").head_dim, 128);
  // Qwen3's class default is 128 whatever hidden/heads is; null still derives.
  json q = llama_json();
  q["architectures"] = {"Qwen3ForCausalLM"};
  q["hidden_size"] = 2048;
  EXPECT_EQ(ModelConfig::from_json(q, "c").head_dim, 128);
  q["head_dim"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(q, "c").head_dim, 64);
}

TEST(ModelConfig, NullKvHeadsMeansOneKvHeadPerQueryHead) {
  json j = llama_json();
  j["num_key_value_heads"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(j, "c").num_kv_heads, 32);
  j.erase("num_key_value_heads");
  EXPECT_EQ(ModelConfig::from_json(j, "c").num_kv_heads, 32);
}

TEST(ModelConfig, Qwen2HasImpliedQkvBiasesOnly) {
  json j = llama_json();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["attention_bias"] = false;  // ignored: Qwen2 hard-codes q/k/v biases
  const ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias || c.mlp_bias || c.qk_norm);
}

TEST(ModelConfig, Qwen3HasQkNormAndOptionalAttentionBias) {
  json j = llama_json();
  j["architectures"] = {"Qwen3ForCausalLM"};
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias || c.o_bias);
  j["attention_bias"] = true;
  c = ModelConfig::from_json(j, "c");
  EXPECT_TRUE(c.qkv_bias && c.o_bias);
}

TEST(ModelConfig, MistralSlidingWindowAppliesToEveryLayerAndDefaultsTo4096) {
  json j = llama_json();
  j["architectures"] = {"MistralForCausalLM"};
  j["num_hidden_layers"] = 3;
  j["attention_bias"] = true;  // ignored: Mistral has no biases
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_EQ(c.sliding_window, (std::vector<int64_t>{4096, 4096, 4096}));
  EXPECT_FALSE(c.qkv_bias || c.o_bias);
  j["sliding_window"] = 5;
  EXPECT_EQ(ModelConfig::from_json(j, "c").sliding_window, (std::vector<int64_t>{5, 5, 5}));
  j["sliding_window"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(j, "c").sliding_window, (std::vector<int64_t>{0, 0, 0}));
}

TEST(ModelConfig, QwenSlidingWindowNeedsUseSlidingWindowAndFollowsMaxWindowLayers) {
  json j = llama_json();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["num_hidden_layers"] = 4;
  j["sliding_window"] = 32;
  EXPECT_EQ(ModelConfig::from_json(j, "c").sliding_window, (std::vector<int64_t>{0, 0, 0, 0}));
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 2;
  EXPECT_EQ(ModelConfig::from_json(j, "c").sliding_window, (std::vector<int64_t>{0, 0, 32, 32}));
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "full_attention"};
  EXPECT_EQ(ModelConfig::from_json(j, "c").sliding_window, (std::vector<int64_t>{32, 0, 32, 0}));
  j["layer_types"] = {"sliding_attention"};
  EXPECT_THROW(ModelConfig::from_json(j, "c"), InputError);
}

TEST(ModelConfig, FallsBackToModelTypeWithoutArchitectures) {
  json j = llama_json();
  j.erase("architectures");
  j["model_type"] = "mistral";
  EXPECT_EQ(ModelConfig::from_json(j, "c").arch, qt::calib::Architecture::Mistral);
}

// The helper returns the InputError a config produces (fails the test when none is thrown).
InputError config_error(const json& j) {
  try {
    ModelConfig::from_json(j, "/m/config.json");
  } catch (const InputError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << j.dump();
  return InputError(InputError::Kind::BadFile, "", "", "");
}

TEST(ModelConfig, RejectsAnUnsupportedArchitectureNamingTheSupportedOnes) {
  json j = llama_json();
  j["architectures"] = {"GemmaForCausalLM"};
  const InputError e = config_error(j);
  EXPECT_EQ(e.kind(), InputError::Kind::Unsupported);
  EXPECT_EQ(std::string(e.what()),
            "/m/config.json: architecture 'GemmaForCausalLM' is not supported (expected one of "
            "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, "
            "Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)");
}

TEST(ModelConfig, RejectsActivationsOtherThanSilu) {
  json j = llama_json();
  j["hidden_act"] = "gelu";
  const InputError e = config_error(j);
  EXPECT_EQ(e.kind(), InputError::Kind::Unsupported);
  EXPECT_EQ(e.got(), "gelu");
}

TEST(ModelConfig, RejectsUnknownRopeTypesAndPartialRotary) {
  json j = llama_json();
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 2.0}};
  EXPECT_EQ(config_error(j).kind(), InputError::Kind::Unsupported);
  j = llama_json();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e4}, {"partial_rotary_factor", 0.5}};
  EXPECT_EQ(config_error(j).kind(), InputError::Kind::Unsupported);
  j = llama_json();
  j["rope_scaling"] = {{"type", "linear"}};  // no factor
  EXPECT_EQ(config_error(j).kind(), InputError::Kind::BadFile);
}

TEST(ModelConfig, RejectsMissingOrInconsistentSizes) {
  json j = llama_json();
  j.erase("hidden_size");
  InputError e = config_error(j);
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos);
  j = llama_json();
  j["num_key_value_heads"] = 5;
  EXPECT_EQ(config_error(j).kind(), InputError::Kind::BadFile);
  j = llama_json();
  j["head_dim"] = 7;
  EXPECT_EQ(config_error(j).kind(), InputError::Kind::BadFile);
  j = llama_json();
  j["hidden_size"] = "4096";
  EXPECT_EQ(config_error(j).got(), "\"4096\"");
}

TEST(ModelConfig, ReadsRopeInAllThreeConfigShapes) {
  json v4 = llama_json();
  v4["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  json legacy = llama_json();
  legacy["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  json v5 = llama_json();
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 500000.0}, {"factor", 4.0},
                           {"original_max_position_embeddings", 32768}};
  for (const json& j : {v4, legacy, v5}) {
    const ModelConfig c = ModelConfig::from_json(j, "c");
    EXPECT_EQ(c.rope.type, "yarn");
    EXPECT_EQ(c.rope.theta, 500000.0);
    EXPECT_EQ(c.rope.factor, 4.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 32768.0);
  }
  json nul = llama_json();
  nul["rope_scaling"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(nul, "c").rope.type, "default");
}

TEST(ModelConfig, YarnFactorIsDerivedFromContextRatioOnlyWhenAbsent) {
  json j = llama_json();  // max_position_embeddings 131072
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"original_max_position_embeddings", 32768}};
  EXPECT_EQ(ModelConfig::from_json(j, "c").rope.factor, 4.0);
  j["rope_scaling"]["factor"] = 8.0;  // explicit wins (transformers#38224 was the opposite)
  EXPECT_EQ(ModelConfig::from_json(j, "c").rope.factor, 8.0);
  j["original_max_position_embeddings"] = 16384;  // a top-level value has priority
  EXPECT_EQ(ModelConfig::from_json(j, "c").rope.original_max_position_embeddings, 16384.0);
}

// ---- RoPE tables ---------------------------------------------------------------------------

int ulp_distance(float a, float b) {
  int32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return std::abs(x - y);  // same sign (all inverse frequencies are positive)
}

TEST(RopeTables, MatchTransformersForEveryScalingVariantWithin2Ulp) {
  const json cases = qt::read_json_file(qt::test::source_path("testdata/forward/rope_cases.json").string());
  ASSERT_GE(cases.at("cases").size(), 8u);
  for (const json& cs : cases.at("cases")) {
    const std::string name = cs.at("name").get<std::string>();
    const ModelConfig c = ModelConfig::from_json(cs.at("config"), name);
    const qt::calib::RopeTables t = qt::calib::rope_tables(c);
    const auto ref = cs.at("inv_freq").get<std::vector<double>>();
    ASSERT_EQ(t.inv_freq.size(), ref.size()) << name;
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_LE(ulp_distance(t.inv_freq[i], static_cast<float>(ref[i])), 2) << name << " i=" << i;
    EXPECT_NEAR(t.attention_scaling, cs.at("attention_scaling").get<double>(), 1e-6) << name;
  }
}

ModelConfig rope_config(int64_t head_dim, double theta, const json& scaling, int64_t max_pos = 4096) {
  json j = llama_json();
  j["hidden_size"] = head_dim * 2;
  j["num_attention_heads"] = 2;
  j["num_key_value_heads"] = 2;
  j["rope_theta"] = theta;
  j["max_position_embeddings"] = max_pos;
  j["rope_scaling"] = scaling;
  return ModelConfig::from_json(j, "rope");
}

TEST(RopeTables, DefaultAndLinearAsDerivedByHand) {
  // D = 4, theta = 1e4: inv = [1e4^(0/4), 1e4^(-2/4)] = [1, 0.01]; linear factor 2 halves them.
  auto t = qt::calib::rope_tables(rope_config(4, 1e4, nullptr));
  EXPECT_FLOAT_EQ(t.inv_freq[0], 1.0f);
  EXPECT_FLOAT_EQ(t.inv_freq[1], 0.01f);
  t = qt::calib::rope_tables(rope_config(4, 1e4, {{"type", "linear"}, {"factor", 2.0}}));
  EXPECT_FLOAT_EQ(t.inv_freq[0], 0.5f);
  EXPECT_FLOAT_EQ(t.inv_freq[1], 0.005f);
  EXPECT_EQ(t.attention_scaling, 1.0f);
}

TEST(RopeTables, Llama3RescalesLowAndMediumBandsAsDerivedByHand) {
  // D = 4, theta = 1e4: inv = [1, 0.01], wavelen = 2*pi/inv = [6.283, 628.32].
  // L0 = 1000, low_freq_factor 1, high_freq_factor 4, factor 8: bands lo_wl = 1000, hi_wl = 250.
  //   i=0: 6.28 < 250 -> high frequency, unchanged: 1.
  //   i=1: 250 <= 628.32 <= 1000 -> medium: s = (1000/628.32 - 1)/(4 - 1) = 0.19718314,
  //        inv = (1 - s) * 0.01/8 + s * 0.01 = 0.0010035211 + 0.0019718314 = 0.0029753525.
  json s = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
            {"original_max_position_embeddings", 1000}};
  auto t = qt::calib::rope_tables(rope_config(4, 1e4, s));
  EXPECT_FLOAT_EQ(t.inv_freq[0], 1.0f);
  EXPECT_NEAR(t.inv_freq[1], 0.0029753525, 2e-9);  // a few f32 ulps
  // L0 = 100: lo_wl = 100 < 628.32 -> low frequency, divided by the factor: 0.01/8 = 0.00125.
  s["original_max_position_embeddings"] = 100;
  t = qt::calib::rope_tables(rope_config(4, 1e4, s));
  EXPECT_FLOAT_EQ(t.inv_freq[0], 1.0f);
  EXPECT_FLOAT_EQ(t.inv_freq[1], 0.00125f);
}

TEST(RopeTables, YarnBlendsAndScalesAsDerivedByHand) {
  // D = 8, theta = 1e4, factor 4, L0 = 64, beta_fast 32, beta_slow 1, truncate.
  //   pos_freq = 1e4^(2i/8) = [1, 10, 100, 1000]; extra = 1/pos_freq; inter = extra/4.
  //   cdim(r) = 8 ln(64 / (2 pi r)) / (2 ln 1e4): cdim(32) = -0.497 -> floor -1 -> max(.,0) = 0;
  //   cdim(1) = 1.008 -> ceil 2 (<= D-1 = 7). ramp = clamp((i - 0)/2, 0, 1) = [0, .5, 1, 1].
  //   inv = inter*ramp + extra*(1-ramp) = [1, .025*.5 + .1*.5, .0025, .00025] = [1, .0625, .0025, .00025]
  //   attention factor = 0.1 ln(4) + 1 = 1.1386294.
  json s = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto t = qt::calib::rope_tables(rope_config(8, 1e4, s, 256));
  ASSERT_EQ(t.inv_freq.size(), 4u);
  EXPECT_FLOAT_EQ(t.inv_freq[0], 1.0f);
  EXPECT_FLOAT_EQ(t.inv_freq[1], 0.0625f);
  EXPECT_FLOAT_EQ(t.inv_freq[2], 0.0025f);
  EXPECT_FLOAT_EQ(t.inv_freq[3], 0.00025f);
  EXPECT_FLOAT_EQ(t.attention_scaling, 1.1386294f);
  // An explicit attention_factor replaces the mscale formula.
  s["attention_factor"] = 0.5;
  EXPECT_EQ(qt::calib::rope_tables(rope_config(8, 1e4, s, 256)).attention_scaling, 0.5f);
}

TEST(RopeTables, DynamicEqualsDefaultWithinMaxPositionsAndIsRefusedBeyond) {
  const ModelConfig d = rope_config(8, 1e4, {{"type", "dynamic"}, {"factor", 2.0}}, 16);
  EXPECT_EQ(qt::calib::rope_tables(d).inv_freq, qt::calib::rope_tables(rope_config(8, 1e4, nullptr)).inv_freq);
  ModelConfig tiny = d;
  tiny.hidden_size = 16, tiny.intermediate_size = 8, tiny.num_layers = 1, tiny.vocab_size = 4;
  tiny.sliding_window = {0};
  const auto wp = qt::calib::synthetic_weight_provider(tiny, 1);
  EXPECT_NO_THROW(qt::calib::run_forward(tiny, wp, {std::vector<int32_t>(16, 1)}, {}));
  try {
    qt::calib::run_forward(tiny, wp, {std::vector<int32_t>(17, 1)}, {});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Unsupported);
  }
}

}  // namespace
