// libFuzzer target: the input is a whole GGUF file. Opening it, planning the HF conversion
// (config.json, tensor map and shapes) and rebuilding tokenizer.json must accept it or throw
// qt::InputError. Run with scripts/fuzz.sh gguf.
#include <vector>

#include "formats/gguf.h"
#include "formats/gguf_to_hf.h"
#include "formats/gguf_vocab.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qt::fuzz::expect_input_error_or_success([&] {
    const qt::GgufFile g = qt::GgufFile::from_bytes("fuzz.gguf", std::vector<uint8_t>(data, data + size));
    try {
      qt::plan_gguf_to_hf(g);
    } catch (const qt::InputError&) {
    }
    qt::build_hf_tokenizer(g);
  });
}
