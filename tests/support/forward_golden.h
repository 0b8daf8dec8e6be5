// Helpers of the forward-pass tests (test_forward, test_forward_moe): the transformers goldens in
// testdata/forward/ (made by testdata/forward/make_goldens.py and make_moe_goldens.py) and the
// comparisons made against them.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "formats/model_folder.h"

namespace qt::test {

// testdata/forward/NAME in the source tree.
std::string forward_golden_dir(const std::string& name);

// A file of raw little-endian f32 values.
std::vector<float> read_f32(const std::filesystem::path& path);

// max |a - b| / max |b| (max |a - b| when b is all zero); sizes must agree (a gtest failure if not).
double rel_max_diff(const std::vector<float>& a, const std::vector<float>& b);

// A golden model folder opened with qtool's own checkpoint reader: its config, a WeightProvider
// over its tensors, and whether lm_head is the embedding.
struct GoldenModel {
  ModelFolder folder;
  calib::ModelConfig cfg;
  calib::WeightProvider weights;
  bool tied;

  explicit GoldenModel(const std::string& name);
  GoldenModel(const GoldenModel&) = delete;
};

}  // namespace qt::test
