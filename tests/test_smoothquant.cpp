// SmoothQuant: the numerics (libquant/smoothquant.h) and the plan over a model folder
// (calib/smoothing.h). Hand-derived values here; the comparison with llm-compressor's own
// SmoothQuantModifier output is in SmoothQuantGolden below (testdata/smoothquant/).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "calib/observers.h"
#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/quantize_pipeline.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/model_folder.h"
#include "calib/smoothing.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/quantize.h"
#include "libquant/smoothquant.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// A TensorView over bytes it owns (for hand-made tensors).
struct OwnedTensor {
  std::vector<uint8_t> bytes;
  TensorView view;
  OwnedTensor(DType t, std::vector<int64_t> shape, const std::vector<float>& values) {
    bytes.resize(values.size() * dtype_bits(t) / 8);
    for (size_t i = 0; i < values.size(); ++i) store_float(t, round_to_dtype(t, values[i]), bytes.data() + i * dtype_bits(t) / 8);
    view = TensorView{"w", t, std::move(shape), bytes, "mem"};
  }
};

std::vector<float> decode(DType t, const std::vector<uint8_t>& b) {
  std::vector<float> v(b.size() / (dtype_bits(t) / 8));
  decode_to_f32(t, b.data(), v.size(), v.data());
  return v;
}

// ---- numerics ------------------------------------------------------------------------------

TEST(SmoothingScales, FollowTheReferenceStepsInBf16) {
  // Hand derivation, alpha 0.5 (sqrt), bf16 = 8 significant bits:
  //  ch 0: act = 6 - (-2) = 8, wt = 2 * 0.5 = 1: sqrt(8) = 2.8284271 -> bf16 2.828125; / 1
  //  ch 1: wt = 0: s = act = 8
  //  ch 2: act = 0: s = 0 -> floor 1e-5f
  //  ch 3: act = 8, wt = 2 * 2 = 4: 2.828125 / 2 = 1.4140625 (exact in bf16)
  const std::vector<float> mn{-2, -2, 0.5f, -2}, mx{6, 6, 0.5f, 6}, w{0.5f, 0, 1, 2};
  const auto s = smoothing_scales(mn, mx, w, 0.5f, DType::BF16);
  EXPECT_EQ(s, (std::vector<float>{2.828125f, 8.0f, 1e-5f, 1.4140625f}));
  // In f32 nothing is rounded to 8 bits: sqrtf(8) / sqrtf(1) and sqrtf(8) / sqrtf(4).
  const auto f = smoothing_scales(mn, mx, w, 0.5f, DType::F32);
  EXPECT_EQ(f[0], std::sqrt(8.0f));
  EXPECT_EQ(f[3], std::sqrt(8.0f) / 2.0f);
}

TEST(SmoothingScales, RoundTheRangeEndsToTheModelDtypeFirst) {
  // max 3.0078125 is not a bf16 value (3 + 2^-7 needs 9 bits): RNE to 3.0 (even), so the range
  // is 3 - (-1) = 4 and s = sqrt(4) / sqrt(1) = 2 exactly. Without the rounding: sqrt(4.0078125).
  const auto s = smoothing_scales(std::vector<float>{-1}, std::vector<float>{3.0078125f}, std::vector<float>{0.5f}, 0.5f,
                                  DType::BF16);
  EXPECT_EQ(s[0], 2.0f);
}

TEST(SmoothingScales, OtherStrengthsUsePowInF32) {
  // alpha 0.8: 8^0.8 / (2 * 0.5)^0.2 = 2^2.4 = 5.278031643091577 (exact value); powf is within
  // an ulp of it.
  const auto s = smoothing_scales(std::vector<float>{-2}, std::vector<float>{6}, std::vector<float>{0.5f}, 0.8,
                                  DType::F32);
  EXPECT_NEAR(s[0], 5.278031643091577, 5.278031643091577 * 1.2e-7);
  // alpha 1: s = act / wt^0 = act.
  EXPECT_EQ(smoothing_scales(std::vector<float>{-2}, std::vector<float>{6}, std::vector<float>{0.5f}, 1.0, DType::F32)[0],
            8.0f);
  // The weight exponent is f32(1 - 0.8) = 0.2f as torch receives the Python float, not
  // 1 - f32(0.8) = 0.19999999f: wt = 2 * 8 = 16, 16^0.2f = 1.7411011 (powf), and
  // 16^0.19999999f is one f32 step lower.
  const auto t = smoothing_scales(std::vector<float>{-0.5f}, std::vector<float>{0.5f}, std::vector<float>{8.0f}, 0.8,
                                  DType::F32);
  EXPECT_EQ(t[0], std::pow(1.0f, 0.8f) / std::pow(16.0f, 0.2f));
}

TEST(ColumnAbsmax, IsExactForEveryShapeAndThreadCount) {
  for (DType t : {DType::BF16, DType::F32, DType::F16})
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 17}, {65, 33}, {130, 64}, {257, 5}}) {
      std::vector<float> v(static_cast<size_t>(rows * cols));
      for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i) * 0.37f) * static_cast<float>(1 + i % 7);
      OwnedTensor w(t, {rows, cols}, v);
      const std::vector<float> stored = decode(t, w.bytes);
      std::vector<float> want(static_cast<size_t>(cols), 0.0f);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          want[static_cast<size_t>(c)] = std::max(want[static_cast<size_t>(c)], std::fabs(stored[static_cast<size_t>(r * cols + c)]));
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        std::vector<float> got(static_cast<size_t>(cols), 0.0f);
        ASSERT_TRUE(accumulate_column_absmax(w.view, got));
        EXPECT_EQ(got, want) << rows << "x" << cols << " threads " << threads;
      }
    }
  omp_set_num_threads(2);
}

TEST(ColumnAbsmax, PropagatesNaNAndRefusesAMismatchedShape) {
  OwnedTensor w(DType::F32, {2, 2}, {1.0f, NAN, -3.0f, 0.5f});
  std::vector<float> m(2, 0.0f);
  ASSERT_TRUE(accumulate_column_absmax(w.view, m));
  EXPECT_EQ(m[0], 3.0f);
  EXPECT_TRUE(std::isnan(m[1]));
  std::vector<float> wrong(3, 0.0f);
  EXPECT_FALSE(accumulate_column_absmax(w.view, wrong));
  OwnedTensor i8(DType::F32, {2, 2}, {1, 2, 3, 4});
  i8.view.dtype = DType::I8;
  EXPECT_FALSE(accumulate_column_absmax(i8.view, m));
}

TEST(ScaleWeightColumns, RoundsEachProductOnceToTheWeightDtype) {
  // bf16: 1.0078125 * 3 = 3.0234375 lies halfway between bf16 neighbours 3.015625 and 3.03125:
  // RNE picks 3.03125 (even significand). 1.5 * 1.25 = 1.875 exact. f32 keeps 3.0234375.
  OwnedTensor w(DType::BF16, {2, 2}, {1.0078125f, 1.5f, -1.0078125f, 0.0f});
  const std::vector<float> s{3.0f, 1.25f};
  EXPECT_EQ(decode(DType::BF16, scale_weight_columns(w.view, s)), (std::vector<float>{3.03125f, 1.875f, -3.03125f, 0.0f}));
  OwnedTensor f(DType::F32, {1, 2}, {1.0078125f, 1.5f});
  EXPECT_EQ(decode(DType::F32, scale_weight_columns(f.view, s)), (std::vector<float>{3.0234375f, 1.875f}));
}

TEST(DivideNormWeight, RoundsEachQuotientToTheNormDtype) {
  // 1/3 = 1.3333 * 2^-2; 8 significant bits: 171/128 * 2^-2 = 0.333984375 in bf16.
  OwnedTensor g(DType::BF16, {2}, {1.0f, 2.0f});
  EXPECT_EQ(decode(DType::BF16, divide_norm_weight(g.view, std::vector<float>{3.0f, 0.5f})),
            (std::vector<float>{0.333984375f, 4.0f}));
}

TEST(SmoothedWeights, AFiniteWeightThatOverflowsTheDtypeIsRefusedNamingTheTensor) {
  // f16 holds at most 65504: 1000 * 100 = 1e5 overflows; 600 * 100 = 6e4 does not.
  OwnedTensor w(DType::F16, {1, 2}, {600.0f, 1000.0f});
  w.view.name = "model.layers.0.mlp.down_proj.weight";
  const std::string e = error_of([&] { scale_weight_columns(w.view, std::vector<float>{100.0f, 100.0f}); });
  EXPECT_NE(e.find("tensor 'model.layers.0.mlp.down_proj.weight': SmoothQuant: a smoothed value overflows F16"),
            std::string::npos) << e;
  EXPECT_EQ(decode(DType::F16, scale_weight_columns(w.view, std::vector<float>{100.0f, 1.0f})),
            (std::vector<float>{60000.0f, 1000.0f}));
  // bf16 reaches 3.39e38; dividing a norm weight by the 1e-5 floor stays far below.
  OwnedTensor g(DType::F16, {1}, {2.0f});
  EXPECT_NE(error_of([&] { divide_norm_weight(g.view, std::vector<float>{1e-5f}); }).find("overflows F16"), std::string::npos);
}

TEST(DivideWeightRows, RoundsEachQuotientToTheWeightDtype) {
  // Row 0 / 3: 1/3 -> 0.333984375 and 2/3 -> 0.66796875 in bf16; row 1 / 0.5: exact doubling.
  OwnedTensor w(DType::BF16, {2, 2}, {1.0f, 2.0f, -1.5f, 0.25f});
  EXPECT_EQ(decode(DType::BF16, divide_weight_rows(w.view, std::vector<float>{3.0f, 0.5f})),
            (std::vector<float>{0.333984375f, 0.66796875f, -3.0f, 0.5f}));
}

TEST(DividedInputAbsmax, DividesEachChannelsMagnitudeByItsFactor) {
  EXPECT_EQ(divided_input_absmax(std::vector<float>{-8, -1}, std::vector<float>{2, 6}, std::vector<float>{4, 2}), 3.0f);
}

TEST(SmoothedInputAbsmax, ScalesEachChannelByTheNormRatio) {
  // ch 0: max(|-4|, 2) * 1/2 = 2; ch 1: 8 * 0.5/1 = 4; ch 2: g = 0 carries nothing.
  EXPECT_EQ(smoothed_input_absmax(std::vector<float>{-4, -1, -100}, std::vector<float>{2, 8, 100},
                                  std::vector<float>{2, 1, 0}, std::vector<float>{1, 0.5f, 0}),
            4.0f);
}

// ---- the plan over a model folder ----------------------------------------------------------

// Runs `model` on `samples` with calib::SmoothingPlan's bytes in place of the stored ones (none when
// plan is null); the logits of every token, row-major.
std::vector<float> forward_logits(const ModelFolder& model, const std::vector<std::vector<int32_t>>& samples,
                                  const calib::SmoothingPlan* plan, calib::Observer* obs = nullptr) {
  std::map<std::string, std::vector<uint8_t>> owned;
  std::map<std::string, TensorView> views;
  for (const TensorView& t : model.checkpoint().tensors()) {
    TensorView v = t;
    if (plan) {
      auto b = plan->smoothed_bytes(t);
      if (!b.empty()) {
        owned[t.name] = std::move(b);
        v.bytes = owned[t.name];
      }
    }
    views.emplace(t.name, v);
  }
  const calib::ModelConfig cfg = calib::ModelConfig::from_json(model.config(), model.config_path());
  calib::ForwardOptions fo;
  fo.observer = obs;
  fo.lm_head_tied = cfg.lm_head_tied(model.checkpoint().find("lm_head.weight") != nullptr);
  std::vector<float> out;
  fo.on_logits = [&](size_t, int64_t, const float* l, int64_t n, int64_t V) { out.insert(out.end(), l, l + n * V); };
  calib::run_forward(cfg, calib::make_view_weight_provider([&](const std::string& n) {
                       auto it = views.find(n);
                       return it == views.end() ? nullptr : &it->second;
                     }, model.dir()),
                     samples, fo);
  return out;
}

// max |a - b| / max |a|
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double amax = 0, dmax = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    amax = std::max(amax, std::fabs(static_cast<double>(a[i])));
    dmax = std::max(dmax, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return dmax / amax;
}

class SmoothingOnTinyModel : public ::testing::Test {
 protected:
  void SetUp() override {
    TinyModelOptions o;
    o.dtype = DType::F32;  // f32: smoothing rounds each weight by at most half an f32 ulp
    write_tiny_model(dir.str("m"), o);
    model.emplace(ModelFolder::open(dir.str("m")));
    const calib::Tokenizer tok = calib::Tokenizer::from_dir(dir.str("m"));
    samples = calib::make_samples(tok, calib::builtin_calibration_text(), 4, 48, 0);
    stats = calib::calibrate(*model, samples, {}).stats;
  }

  std::vector<float> logits(const calib::SmoothingPlan* plan, calib::Observer* obs = nullptr) {
    return forward_logits(*model, samples, plan, obs);
  }

  test::TempDir dir;
  std::optional<ModelFolder> model;
  std::vector<std::vector<int32_t>> samples;
  ActivationStats stats;
};

TEST_F(SmoothingOnTinyModel, MapsEachNormToTheLinearsItFeeds) {
  const auto m = calib::smoothing_mappings(*model, calib::SmoothingMappings::Norms);
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].smooth, "model.layers.0.input_layernorm");
  EXPECT_FALSE(m[0].smooth_is_linear);
  EXPECT_EQ(m[0].balance, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                                     "model.layers.0.self_attn.v_proj"}));
  EXPECT_EQ(m[3].smooth, "model.layers.1.post_attention_layernorm");
  EXPECT_EQ(m[3].balance, (std::vector<std::string>{"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"}));
  const auto all = calib::smoothing_mappings(*model, calib::SmoothingMappings::All);
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[2].smooth, "model.layers.0.mlp.up_proj");
  EXPECT_TRUE(all[2].smooth_is_linear);
  EXPECT_EQ(all[2].stats_key, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(all[2].balance, (std::vector<std::string>{"model.layers.0.mlp.down_proj"}));
}

TEST_F(SmoothingOnTinyModel, LeavesWhatTheModelComputesUnchanged) {
  const calib::SmoothingPlan plan = calib::plan_smoothing(*model, stats, 0.5f);  // all mappings, up -> down included
  EXPECT_GT(plan.max_factor, plan.min_factor);  // the factors really move something
  // f32: each smoothed weight moved by <= 2^-24 relative; through 2 layers that stays ~1e-6.
  EXPECT_LT(max_rel_diff(logits(nullptr), logits(&plan)), 1e-5);
}

TEST(SmoothingOnBiasedModels, DivideTheSmoothedLayersBiasToo) {
  // testdata/forward/llama has mlp_bias (up_proj.bias) and attention biases; qwen2 has q/k/v
  // biases (on the output side: untouched). Function unchanged with every mapping.
  for (const char* name : {"llama", "qwen2"}) {
    SCOPED_TRACE(name);
    ModelFolder m = ModelFolder::open(std::string(QTOOL_SOURCE_DIR) + "/testdata/forward/" + name);
    const std::vector<std::vector<int32_t>> samples{{1, 17, 42, 99, 5, 127, 64, 3, 88, 42, 42, 7}, {2, 120, 0, 31, 77, 9, 56}};
    const ActivationStats st = calib::calibrate(m, samples, {}).stats;
    const calib::SmoothingPlan plan = calib::plan_smoothing(m, st, 0.8);
    const bool has_mlp_bias = m.checkpoint().find("model.layers.0.mlp.up_proj.bias") != nullptr;
    EXPECT_EQ(plan.divide_factors.count("model.layers.0.mlp.up_proj.bias"), has_mlp_bias ? 1u : 0u);
    EXPECT_LT(max_rel_diff(forward_logits(m, samples, nullptr), forward_logits(m, samples, &plan)), 1e-5);
  }
}

TEST_F(SmoothingOnTinyModel, PredictsTheInputAbsmaxTheSmoothedModelShows) {
  const calib::SmoothingPlan plan = calib::plan_smoothing(*model, stats, 0.5f);
  calib::AbsMaxObserver obs;
  logits(&plan, &obs);
  for (const auto& m : plan.mappings)
    for (const auto& lin : m.balance) {
      const float want = obs.stats().input_absmax.at(lin), got = plan.stats.input_absmax.at(lin);
      EXPECT_NEAR(got, want, want * 1e-5) << lin;
      EXPECT_NE(got, stats.input_absmax.at(lin)) << lin;  // replaced, not the unsmoothed value
    }
  // Linears no norm feeds keep their statistics.
  EXPECT_EQ(plan.stats.input_absmax.at("model.layers.0.self_attn.o_proj"), stats.input_absmax.at("model.layers.0.self_attn.o_proj"));
  EXPECT_EQ(plan.stats.k_absmax, stats.k_absmax);
}

TEST_F(SmoothingOnTinyModel, AMovingAverageObserversScalesShrinkLikeThePlainMaximum) {
  calib::CalibrateOptions ema;
  ema.observer = "minmax";
  const ActivationStats es = calib::calibrate(*model, samples, ema).stats;
  const calib::SmoothingPlan ps = calib::plan_smoothing(*model, stats, 0.8), pe = calib::plan_smoothing(*model, es, 0.8);
  int differ = 0;
  for (const auto& m : ps.mappings)
    for (const auto& lin : m.balance) {
      // static_minmax: the smoothed plain maximum itself; minmax: its own value, shrunk by the
      // same factor (not replaced by the plain maximum).
      const double shrink = ps.stats.input_absmax.at(lin) / stats.input_absmax.at(lin);
      EXPECT_NEAR(pe.stats.input_absmax.at(lin) / es.input_absmax.at(lin), shrink, 1e-6 * shrink) << lin;
      differ += es.input_absmax.at(lin) < stats.input_absmax.at(lin);
    }
  // The EMA really differs from the plain maximum somewhere (where every sample's maximum is the
  // same token -- the BOS -- it cannot).
  EXPECT_GT(differ, 0);
}

TEST_F(SmoothingOnTinyModel, TouchesOnlyTheMappedTensors) {
  for (calib::SmoothingMappings which : {calib::SmoothingMappings::Norms, calib::SmoothingMappings::All}) {
    const calib::SmoothingPlan plan = calib::plan_smoothing(*model, stats, 0.5f, which);
    size_t changed = 0;
    for (const TensorView& t : model->checkpoint().tensors()) {
      const auto b = plan.smoothed_bytes(t);
      if (!b.empty()) ++changed;
      const bool mapped = t.name.find("layernorm") != std::string::npos || t.name.find("q_proj") != std::string::npos ||
                          t.name.find("k_proj") != std::string::npos || t.name.find("v_proj") != std::string::npos ||
                          t.name.find("gate_proj") != std::string::npos || t.name.find("up_proj") != std::string::npos ||
                          (which == calib::SmoothingMappings::All && t.name.find("down_proj") != std::string::npos);
      EXPECT_EQ(!b.empty(), mapped) << t.name;
    }
    EXPECT_EQ(changed, 2u * (2 + 3 + 2 + (which == calib::SmoothingMappings::All ? 1 : 0)));
  }
}

TEST_F(SmoothingOnTinyModel, UpProjIsScaledByColumnsThenDividedByRows) {
  const calib::SmoothingPlan plan = calib::plan_smoothing(*model, stats, 0.5f);
  const TensorView& up = *model->checkpoint().find("model.layers.0.mlp.up_proj.weight");
  const auto& sc = plan.factors.at("model.layers.0.post_attention_layernorm");
  const auto& sr = plan.factors.at("model.layers.0.mlp.up_proj");
  const std::vector<float> w = decode(up.dtype, {up.bytes.begin(), up.bytes.end()});
  const std::vector<float> got = decode(up.dtype, plan.smoothed_bytes(up));
  const int64_t K = up.shape[1];
  for (int64_t r = 0; r < up.shape[0]; r += 37)
    for (int64_t c = 0; c < K; c += 11) {
      const size_t i = static_cast<size_t>(r * K + c);
      // f32 model: (w * s_col) / s_row, each step one f32 rounding.
      EXPECT_EQ(got[i], (w[i] * sc[static_cast<size_t>(c)]) / sr[static_cast<size_t>(r)]) << r << "," << c;
    }
}

TEST_F(SmoothingOnTinyModel, RefusesStatisticsWithoutChannelRanges) {
  ActivationStats old = stats;
  old.channel_min.clear();
  old.channel_max.clear();
  const std::string e = error_of([&] { calib::plan_smoothing(*model, old, 0.5f); });
  EXPECT_NE(e.find("'model.layers.0.input_layernorm': no per-channel activation range for SmoothQuant"), std::string::npos) << e;
  ActivationStats nan = stats;
  nan.channel_max["model.layers.1.post_attention_layernorm"][7] = NAN;
  const std::string e2 = error_of([&] { calib::plan_smoothing(*model, nan, 0.5f); });
  EXPECT_NE(e2.find("'model.layers.1.post_attention_layernorm': non-finite activation statistic in channel 7"),
            std::string::npos) << e2;
  ActivationStats swapped = stats;  // a damaged file: min > max
  std::swap(swapped.channel_min["model.layers.0.mlp.down_proj"][3], swapped.channel_max["model.layers.0.mlp.down_proj"][3]);
  const std::string e3 = error_of([&] { calib::plan_smoothing(*model, swapped, 0.5f); });
  EXPECT_NE(e3.find("'model.layers.0.mlp.down_proj': activation statistic of channel 3 has min > max"), std::string::npos) << e3;
}

TEST_F(SmoothingOnTinyModel, RefusesAStrengthOutsideZeroToOne) {
  for (double a : {0.0, -0.5, 1.5, static_cast<double>(NAN)})
    EXPECT_NE(error_of([&] { calib::plan_smoothing(*model, stats, a); }).find("SmoothQuant strength must be in (0, 1]"), std::string::npos) << a;
}

// ---- against llm-compressor ----------------------------------------------------------------

// testdata/smoothquant/<model>_a<alpha>.json: what llm-compressor's SmoothQuantModifier computed
// and applied on the float32 models of testdata/forward/ (see the README there for the command
// and versions). qtool calibrates the same model on the same token ids with its own forward pass
// (logits within ~5e-7 of transformers), so statistics agree to f32 rounding, and the factors,
// which are smooth functions of them, to a few f32 ulps.
// got and want agree to `rel` relative difference (absolute where want is 0); `what` names them.
void expect_near(const std::vector<float>& got, const std::vector<float>& want, double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t j = 0; j < got.size(); ++j) {
    const double d = std::fabs(static_cast<double>(got[j]) - want[j]);
    const double r = d / std::max(std::fabs(static_cast<double>(want[j])), 1e-30);
    worst = std::max(worst, want[j] == 0 ? d : r);
  }
  EXPECT_LE(worst, rel) << what << ": worst relative difference " << worst;
}

// One mapping gm of an llm-compressor SmoothQuant golden against qtool's statistics st and plan
// on the model m, to 2e-6: the norm's channel ranges, the factors, the smoothed norm weight and
// the first rows of the first smoothed balance weight (the golden may keep only those).
void expect_mapping_matches(const ModelFolder& m, const ActivationStats& st, const calib::SmoothingPlan& plan,
                            const nlohmann::json& gm) {
  const std::string norm = gm.at("smooth");
  expect_near(st.channel_min.at(norm), gm.at("channel_min").get<std::vector<float>>(), 2e-6, "channel_min");
  expect_near(st.channel_max.at(norm), gm.at("channel_max").get<std::vector<float>>(), 2e-6, "channel_max");
  expect_near(plan.factors.at(norm), gm.at("scales").get<std::vector<float>>(), 2e-6, "scales");
  const TensorView* gw = m.checkpoint().find(norm + ".weight");
  expect_near(decode(gw->dtype, plan.smoothed_bytes(*gw)), gm.at("smoothed_norm_weight").get<std::vector<float>>(),
              2e-6, "smoothed norm weight");
  const std::string first = gm.at("balance")[0].get<std::string>() + ".weight";
  const TensorView* bw = m.checkpoint().find(first);
  std::vector<float> want;
  for (const auto& row : gm.at("smoothed_first_balance_weight_first4rows"))
    for (float v : row.get<std::vector<float>>()) want.push_back(v);
  std::vector<float> got = decode(bw->dtype, plan.smoothed_bytes(*bw));
  got.resize(want.size());  // the golden may keep only the first rows
  expect_near(got, want, 2e-6, "smoothed " + first);
}

class SmoothQuantGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(SmoothQuantGolden, MatchesLlmCompressorsFactorsAndSmoothedWeights) {
  const std::string name = GetParam();
  const std::string path = std::string(QTOOL_SOURCE_DIR) + "/testdata/smoothquant/" + name + ".json";
  std::ifstream f(path);
  ASSERT_TRUE(f) << path;
  const nlohmann::json g = nlohmann::json::parse(f);
  const std::string model_dir = std::string(QTOOL_SOURCE_DIR) + "/" + g.at("model").get<std::string>();
  ModelFolder m = ModelFolder::open(model_dir);
  const auto samples = g.at("tokens").get<std::vector<std::vector<int32_t>>>();
  const ActivationStats st = calib::calibrate(m, samples, {}).stats;
  // llm-compressor's default mappings (the norms); up -> down is qtool's addition.
  const calib::SmoothingPlan plan = calib::plan_smoothing(m, st, g.at("alpha").get<double>(), calib::SmoothingMappings::Norms);
  ASSERT_EQ(g.at("mappings").size(), plan.mappings.size());
  EXPECT_EQ(g.at("pipeline").get<std::string>(), "basic");  // statistics of the unsmoothed model, like qtool's
  for (const auto& gm : g.at("mappings")) {
    const std::string norm = gm.at("smooth");
    SCOPED_TRACE(norm);
    expect_mapping_matches(m, st, plan, gm);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, SmoothQuantGolden, ::testing::Values("llama_a05", "llama_a08", "qwen2_a05", "qwen2_a08"));

// ---- mixture-of-experts models ---------------------------------------------------------------

// testdata/smoothquant/<arch>_moe_a08.json (make_moe_goldens.py): llm-compressor 0.14's own
// SmoothQuant mappings for Mixtral / Qwen3-MoE / Qwen2-MoE (input_layernorm -> q/k/v only), its
// factors and smoothed weights, and the static FP8 q/k/v input scales its QuantizationModifier
// then writes for the smoothed model. qtool's `norms` set on these models is a superset: it also
// smooths the post_attention_layernorm of the models' DENSE layers (Qwen3-MoE mlp_only_layers,
// Qwen2-MoE decoder_sparse_step), which feeds only that layer's gate/up.
// Bounds: statistics, factors and weights as SmoothQuantGolden (2e-6); the input scales are
// qtool's prediction from the unsmoothed channel ranges (max_j |x_j| g'_j / g_j) against
// llm-compressor's measurement on the smoothed model: both are the same maximum up to the
// forward's f32 rounding (qtool's logits agree with transformers to ~1e-6), so 5e-6.
class SmoothQuantMoeGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(SmoothQuantMoeGolden, MatchesLlmCompressorsMoeMappingsFactorsAndInputScales) {
  const std::string path = std::string(QTOOL_SOURCE_DIR) + "/testdata/smoothquant/" + GetParam() + "_moe_a08.json";
  std::ifstream f(path);
  ASSERT_TRUE(f) << path;
  const nlohmann::json g = nlohmann::json::parse(f);
  ASSERT_EQ(g.at("pipeline"), "basic");
  ModelFolder m = ModelFolder::open(std::string(QTOOL_SOURCE_DIR) + "/" + g.at("model").get<std::string>());
  const auto samples = g.at("tokens").get<std::vector<std::vector<int32_t>>>();
  const ActivationStats st = calib::calibrate(m, samples, {}).stats;
  const calib::SmoothingPlan plan = calib::plan_smoothing(m, st, g.at("alpha").get<double>(), calib::SmoothingMappings::Norms);
  std::set<std::string> golden;
  for (const auto& gm : g.at("mappings")) {
    const std::string norm = gm.at("smooth");
    SCOPED_TRACE(norm);
    golden.insert(norm);
    const calib::SmoothingMapping* mine = nullptr;
    for (const auto& pm : plan.mappings)
      if (pm.smooth == norm) mine = &pm;
    ASSERT_NE(mine, nullptr);
    EXPECT_EQ(nlohmann::json(mine->balance), gm.at("balance"));
    expect_mapping_matches(m, st, plan, gm);
  }
  EXPECT_FALSE(golden.empty());
  // qtool's extra mappings: only the post_attention_layernorm of a dense layer (no router).
  for (const auto& pm : plan.mappings)
    if (!golden.count(pm.smooth)) {
      EXPECT_TRUE(pm.smooth.ends_with(".post_attention_layernorm")) << pm.smooth;
      EXPECT_FALSE(calib::is_moe_layer(m.checkpoint(), pm.smooth.substr(0, pm.smooth.rfind('.') + 1))) << pm.smooth;
    }
  size_t scales = 0;
  for (const auto& [module, want] : g.at("input_scale").items()) {
    const float got = calib::static_input_scale(plan.stats, module, QuantType::Float8E4M3, DType::F32, m.dir());
    EXPECT_LE(std::fabs(static_cast<double>(got) - want.get<double>()), 5e-6 * want.get<double>())
        << module << ": qtool " << got << " vs llm-compressor " << want.get<double>();
    ++scales;
  }
  EXPECT_EQ(scales, 3 * golden.size());
}

INSTANTIATE_TEST_SUITE_P(Architectures, SmoothQuantMoeGolden, ::testing::Values("mixtral", "qwen3_moe", "qwen2_moe"),
                         [](const auto& info) { return std::string(info.param); });

// Tiny generated MoE models (f32, 2 layers, 8 experts, top-2; layer 1 dense for the Qwen ones):
// every mapping qtool offers, the opt-in MoE norm included, leaves the logits unchanged.
class SmoothingOnTinyMoe : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    TinyModelOptions o;
    o.arch = GetParam();
    o.dtype = DType::F32;
    o.num_layers = 2;
    if (o.arch != "mixtral") o.mlp_only_layers = {1};
    write_tiny_model(dir.str("m"), o);
    model.emplace(ModelFolder::open(dir.str("m")));
    const calib::Tokenizer tok = calib::Tokenizer::from_dir(dir.str("m"));
    samples = calib::make_samples(tok, calib::builtin_calibration_text(), 4, 48, 0);
    stats = calib::calibrate(*model, samples, {}).stats;
  }
  std::string blk() const { return GetParam() == "mixtral" ? "block_sparse_moe" : "mlp"; }
  test::TempDir dir;
  std::optional<ModelFolder> model;
  std::vector<std::vector<int32_t>> samples;
  ActivationStats stats;
};

TEST_P(SmoothingOnTinyMoe, MoeNormMapsPostAttentionLayernormToEveryLinearItFeeds) {
  const std::string a = GetParam(), p = "model.layers.0.";
  const auto m = calib::smoothing_mappings(*model, calib::SmoothingMappings::All, /*moe_norm=*/true);
  std::vector<std::string> smooth;
  for (const auto& x : m) smooth.push_back(x.smooth);
  std::vector<std::string> want = {p + "input_layernorm", p + "post_attention_layernorm"};
  if (a == "qwen2_moe") want.push_back(p + "mlp.shared_expert.up_proj");
  want.push_back("model.layers.1.input_layernorm");
  if (a == "mixtral") want.push_back("model.layers.1.post_attention_layernorm");
  else want.insert(want.end(), {"model.layers.1.post_attention_layernorm", "model.layers.1.mlp.up_proj"});
  EXPECT_EQ(smooth, want);
  std::vector<std::string> balance = {p + blk() + ".gate"};
  const std::string g = a == "mixtral" ? "w1" : "gate_proj", u = a == "mixtral" ? "w3" : "up_proj";
  for (int e = 0; e < 8; ++e) {
    balance.push_back(p + blk() + ".experts." + std::to_string(e) + "." + g);
    balance.push_back(p + blk() + ".experts." + std::to_string(e) + "." + u);
  }
  if (a == "qwen2_moe")
    balance.insert(balance.end(), {p + "mlp.shared_expert.gate_proj", p + "mlp.shared_expert.up_proj", p + "mlp.shared_expert_gate"});
  EXPECT_EQ(m[1].balance, balance);
  EXPECT_EQ(m[1].stats_key, p + "post_attention_layernorm");  // the norm output, over all tokens
  if (a == "qwen2_moe") {
    EXPECT_TRUE(m[2].smooth_is_linear);
    EXPECT_EQ(m[2].balance, (std::vector<std::string>{p + "mlp.shared_expert.down_proj"}));
    EXPECT_EQ(m[2].stats_key, p + "mlp.shared_expert.down_proj");
  }
  // Without moe_norm, llm-compressor's set: the MoE layer's attention side (and the shared pair with all).
  const auto d = calib::smoothing_mappings(*model, calib::SmoothingMappings::Norms);
  EXPECT_EQ(d[0].smooth, p + "input_layernorm");
  EXPECT_EQ(d[1].smooth, "model.layers.1.input_layernorm");
}

TEST_P(SmoothingOnTinyMoe, EveryMappingLeavesTheLogitsUnchangedWhenEveryConsumerAbsorbsTheFactors) {
  const calib::SmoothingPlan plan =
      calib::plan_smoothing(*model, stats, 0.8, calib::SmoothingMappings::All, /*moe_norm=*/true);
  ASSERT_TRUE(plan.factors.count("model.layers.0.post_attention_layernorm"));
  const auto& s = plan.factors.at("model.layers.0.post_attention_layernorm");
  EXPECT_GT(*std::max_element(s.begin(), s.end()), 1.5f);  // the factors really move something
  const std::vector<float> base = forward_logits(*model, samples, nullptr), smoothed = forward_logits(*model, samples, &plan);
  // f32: each smoothed weight moved by <= 2^-24 relative; through 2 layers that stays ~1e-6.
  EXPECT_LT(max_rel_diff(base, smoothed), 1e-5);
  // The router is necessary: without its columns scaled the routing sees x / s and the logits move.
  calib::SmoothingPlan partial = plan;
  partial.column_factors.erase("model.layers.0." + blk() + ".gate.weight");
  EXPECT_GT(max_rel_diff(base, forward_logits(*model, samples, &partial)), 1e-3);
}

TEST_P(SmoothingOnTinyMoe, PredictsTheExpertInputAbsmaxTheSmoothedModelShows) {
  const calib::SmoothingPlan plan =
      calib::plan_smoothing(*model, stats, 0.8, calib::SmoothingMappings::All, /*moe_norm=*/true);
  calib::AbsMaxObserver obs;
  forward_logits(*model, samples, &plan, &obs);  // policy all: every expert sees every token
  size_t n = 0;
  for (const auto& m : plan.mappings)
    for (const auto& lin : m.balance) {
      if (calib::absorbs_only(lin)) {  // routers: never quantized, no statistic made up for them
        EXPECT_EQ(plan.stats.input_absmax.count(lin), 0u) << lin;
        continue;
      }
      const float want = obs.stats().input_absmax.at(lin), got = plan.stats.input_absmax.at(lin);
      EXPECT_NEAR(got, want, want * 1e-5) << lin;
      ++n;
    }
  EXPECT_GT(n, 16u);
}

INSTANTIATE_TEST_SUITE_P(Architectures, SmoothingOnTinyMoe, ::testing::Values("mixtral", "qwen3_moe", "qwen2_moe"),
                         [](const auto& info) { return info.param; });

TEST(MoeSmoothingFactorsFile, RecordsTheMoeNormAndPlansTheSameAgain) {
  test::TempDir dir;
  TinyModelOptions o;
  o.arch = "qwen2_moe";
  o.dtype = DType::F32;
  o.num_layers = 1;
  write_tiny_model(dir.str("m"), o);
  ModelFolder m = ModelFolder::open(dir.str("m"));
  const calib::Tokenizer tok = calib::Tokenizer::from_dir(dir.str("m"));
  const auto samples = calib::make_samples(tok, calib::builtin_calibration_text(), 2, 32, 0);
  const ActivationStats st = calib::calibrate(m, samples, {}).stats;
  const calib::SmoothingPlan plan = calib::plan_smoothing(m, st, 0.8, calib::SmoothingMappings::All, true);
  const std::string file = dir.str("f.json");
  std::ofstream(file) << calib::smoothing_factors_json(plan);
  const nlohmann::json j = read_json_file(file);
  EXPECT_EQ(j.at("moe_norm"), true);
  const calib::SmoothingPlan back = calib::smoothing_plan_from_file(m, file, st);
  EXPECT_TRUE(back.moe_norm);
  EXPECT_EQ(back.factors, plan.factors);
  EXPECT_EQ(back.column_factors, plan.column_factors);
  EXPECT_EQ(back.divide_factors, plan.divide_factors);
  // Without it, the file has no moe_norm key (dense and default files keep their bytes).
  EXPECT_FALSE(nlohmann::json::parse(calib::smoothing_factors_json(calib::plan_smoothing(m, st, 0.8))).contains("moe_norm"));
}

TEST(MoeSmoothingMappings, RefuseAMoeNormWhoseConsumerIsMissingNamingIt) {
  test::TempDir dir;
  TinyModelOptions o;
  o.arch = "qwen3_moe";
  o.dtype = DType::F32;
  o.num_layers = 1;
  write_tiny_model(dir.str("m"), o);
  // Rename expert 5's up_proj away: the norm's factors would have nowhere to go.
  const std::string missing = "model.layers.0.mlp.experts.5.up_proj.weight";
  test::rewrite_safetensors(dir.str("m/model.safetensors"), [&](TensorSpec& spec, std::vector<uint8_t>&) {
    if (spec.name == missing) spec.name = "model.layers.0.mlp.experts.5.renamed.weight";
  });
  ModelFolder m = ModelFolder::open(dir.str("m"));
  EXPECT_EQ(error_of([&] { calib::smoothing_mappings(m, calib::SmoothingMappings::Norms, true); }),
            dir.str("m") + ": tensor '" + missing + "': SmoothQuant: model.layers.0.post_attention_layernorm feeds this "
            "Linear, which the checkpoint lacks (every consumer of a smoothed norm must absorb its factors)");
}

}  // namespace
}  // namespace qt
