// libFuzzer target: the input is a tokenizer.json. Loading must accept it or throw
// qt::InputError; a loaded tokenizer must encode a fixed text (ASCII, accents, CJK, an emoji,
// digits, whitespace runs) without crashing. Run with scripts/fuzz.sh tokenizer.
#include <string>

#include "calib/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qt::fuzz::expect_input_error_or_success([&] {
    const std::string path = qt::fuzz::write_temp("tokenizer.json", data, size);
    const qt::calib::Tokenizer tok = qt::calib::Tokenizer::from_file(path);
    tok.encode("Hello, world!  caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 12345\n\tend", true);
  });
}
