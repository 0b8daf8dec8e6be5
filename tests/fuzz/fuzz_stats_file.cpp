// libFuzzer target: the input is the JSON of a statistics file (--stats / OUT.qtool-stats.zst),
// compressed here with zstd unless the first byte is 0 (then the rest is the raw file, to reach
// the frame checks). Loading must accept it or throw qt::InputError; an accepted file has only
// finite, non-negative maxima and channel_min <= channel_max. The expected fingerprint is "f".
// Run with scripts/fuzz.sh stats.
#include <zstd.h>

#include <cmath>
#include <string>

#include "calib/stats_file.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string file;
  if (data[0] == 0) {
    file.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  } else {
    file.resize(ZSTD_compressBound(size - 1));
    file.resize(ZSTD_compress(file.data(), file.size(), data + 1, size - 1, 1));
  }
  return qt::fuzz::expect_input_error_or_success([&] {
    const std::string path =
        qt::fuzz::write_temp("stats.zst", reinterpret_cast<const uint8_t*>(file.data()), file.size());
    const qt::ActivationStats s = qt::calib::load_stats(path, "f");
    for (const auto* m : {&s.input_absmax, &s.k_absmax, &s.v_absmax})
      for (const auto& [k, v] : *m)
        if (!std::isfinite(v) || v < 0) std::abort();
    for (const auto& [k, mn] : s.channel_min) {
      const auto& mx = s.channel_max.at(k);
      if (mx.size() != mn.size()) std::abort();
      for (size_t i = 0; i < mn.size(); ++i)
        if (!(mn[i] <= mx[i])) std::abort();
    }
  });
}
