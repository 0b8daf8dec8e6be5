// libFuzzer target: the input is a calibration dataset. The first byte picks the reader
// (plain text, JSON Lines, or either zstd-compressed); the rest is the file. Loading must accept
// it or throw qt::InputError, and never hold more than the limit given (1 MiB here) in memory.
// Run with scripts/fuzz.sh dataset.
#include "calib/dataset.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const char* const kNames[] = {"d.txt", "d.jsonl", "d.txt.zst", "d.jsonl.zst"};
  const char* name = kNames[data[0] & 3];
  return qt::fuzz::expect_input_error_or_success([&] {
    const std::string path = qt::fuzz::write_temp(name, data + 1, size - 1);
    qt::calib::load_calibration_text(path, 1u << 20);
  });
}
