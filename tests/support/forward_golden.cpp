#include "tests/support/forward_golden.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tests/support/test_support.h"

namespace qt::test {

std::string forward_golden_dir(const std::string& name) { return source_path("testdata/forward/" + name).string(); }

std::vector<float> read_f32(const std::filesystem::path& path) {
  const std::vector<uint8_t> b = read_file(path);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

double rel_max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    m = std::max(m, std::fabs(static_cast<double>(b[i])));
  }
  return m > 0 ? d / m : d;
}

GoldenModel::GoldenModel(const std::string& name)
    : folder(ModelFolder::open(forward_golden_dir(name))),
      cfg(calib::ModelConfig::from_json(folder.config(), folder.config_path())),
      weights(calib::make_view_weight_provider([this](const std::string& n) { return folder.checkpoint().find(n); },
                                               folder.dir())),
      tied(cfg.lm_head_tied(folder.checkpoint().find("lm_head.weight") != nullptr)) {}

}  // namespace qt::test
