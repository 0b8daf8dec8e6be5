// Byte equality with the real compressed-tensors package: for every scheme and model dtype,
// qtool's weight codes, packed words, scales and weight_shape must equal, byte for byte, what
// compressed-tensors 0.20 wrote (testdata/ct_goldens/README.md says how the goldens were made:
// `python3 testdata/ct_goldens/make_goldens.py`, llm-compressor's model-free path on the CPU), and
// w4a16 at group sizes 64 and 32 (--group-size) as compressed-tensors 0.19 wrote them
// (make_group_goldens.py).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "formats/safetensors.h"
#include "libquant/pack.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

// group: 0 = the scheme's own args; else w4a16 at --group-size `group`, golden file
// "<scheme>-g<group>.safetensors" (testdata/ct_goldens/make_group_goldens.py).
struct Case { std::string dtype, scheme; int64_t group = 0; };

class CtGoldens : public ::testing::TestWithParam<Case> {};

std::vector<uint8_t> bytes_of(const TensorView& t) { return {t.bytes.begin(), t.bytes.end()}; }

TEST_P(CtGoldens, EveryTensorIsByteIdentical) {
  const Case c = GetParam();
  const auto dir = test::source_path("testdata/ct_goldens/" + c.dtype);
  SafetensorsFile in = SafetensorsFile::open((dir / "input.safetensors").string());
  const std::string file = c.scheme + (c.group ? "-g" + std::to_string(c.group) : "") + ".safetensors";
  SafetensorsFile gold = SafetensorsFile::open((dir / file).string());
  const Scheme* sc = find_scheme(c.scheme);
  ASSERT_NE(sc, nullptr);
  Scheme scheme = *sc;
  if (c.group) scheme.weights.group_size = c.group;
  const Scheme* s = &scheme;
  const bool packed = s->format == CtFormat::PackQuantized;
  size_t checked = 0;
  for (const TensorView& w : in.tensors()) {
    const std::string m = w.name.substr(0, w.name.size() - 7);  // strip ".weight"
    if (!check_weight_shape(w.shape, s->weights).empty()) {
      // The goldens skip what compressed-tensors rejects (w4a16 with in % 128 != 0).
      EXPECT_EQ(gold.find(m + ".weight_scale"), nullptr) << m;
      EXPECT_EQ(c.group, 0) << "every golden input fits groups of 64 and 32: " << m;
      continue;
    }
    QuantizedWeight q = quantize_weight(w, s->weights);
    const TensorView* gs = gold.find(m + ".weight_scale");
    ASSERT_NE(gs, nullptr) << m;
    EXPECT_EQ(gs->dtype, q.scale_dtype) << m;
    EXPECT_EQ(gs->shape, q.scale_shape) << m;
    EXPECT_EQ(bytes_of(*gs), q.scale_bytes) << c.dtype << "/" << c.scheme << " " << m << ".weight_scale";
    if (packed) {
      const TensorView* gp = gold.find(m + ".weight_packed");
      ASSERT_NE(gp, nullptr) << m;
      auto words = pack_int_codes(reinterpret_cast<const int8_t*>(q.codes.data()), w.shape[0], w.shape[1],
                                  s->weights.num_bits());
      ASSERT_EQ(gp->dtype, DType::I32);
      ASSERT_EQ(gp->bytes.size(), words.size() * 4);
      EXPECT_EQ(std::memcmp(gp->bytes.data(), words.data(), gp->bytes.size()), 0) << m << ".weight_packed";
      const TensorView* gsh = gold.find(m + ".weight_shape");
      ASSERT_NE(gsh, nullptr);
      int64_t shp[2];
      std::memcpy(shp, gsh->bytes.data(), 16);
      EXPECT_EQ(shp[0], w.shape[0]);
      EXPECT_EQ(shp[1], w.shape[1]);
    } else {
      const TensorView* gw = gold.find(m + ".weight");
      ASSERT_NE(gw, nullptr) << m;
      EXPECT_EQ(gw->dtype, q.code_dtype);
      EXPECT_EQ(gw->shape, w.shape);
      const auto gb = bytes_of(*gw);
      size_t diff = 0, first = gb.size();
      for (size_t i = 0; i < gb.size(); ++i)
        if (gb[i] != q.codes[i]) { ++diff; first = std::min(first, i); }
      EXPECT_EQ(diff, 0u) << c.dtype << "/" << c.scheme << " " << m << ": " << diff
                          << " codes differ, first at " << first;
    }
    ++checked;
  }
  EXPECT_GE(checked, 4u);
}

std::vector<Case> all_cases() {
  std::vector<Case> v;
  for (const char* d : {"bf16", "fp16", "fp32"}) {
    for (const Scheme& s : all_schemes())
      if (!s.weights.microscale()) v.push_back({d, s.name});  // FP4 / MX: test_microscale's goldens
    for (int64_t g : {64, 32}) v.push_back({d, "w4a16", g});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllSchemesAllDtypes, CtGoldens, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) {
                           std::string n = info.param.dtype + "_" + info.param.scheme;
                           if (info.param.group) n += "_group" + std::to_string(info.param.group);
                           for (auto& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace qt
