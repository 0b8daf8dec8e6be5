// libFuzzer target: the input is a config.json. Strict parsing, the calibration model config
// (sizes, heads, rope parameters and tables) and the compressed-tensors quantization_config
// reader (groups, args, ignore / targets patterns matched against sample module names) must
// accept it or throw qt::InputError. Run with scripts/fuzz.sh config.
#include <string_view>

#include "calib/model_config.h"
#include "formats/ct_config.h"
#include "formats/json_util.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qt::fuzz::expect_input_error_or_success([&] {
    const nlohmann::json j =
        qt::parse_json_strict(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    const qt::QuantInfo q = qt::parse_quant_info(j, "config.json");  // never throws
    for (const char* m : {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"})
      qt::group_for_module(q, m);
    if (j.is_object()) qt::calib::ModelConfig::from_json(j, "config.json");
  });
}
