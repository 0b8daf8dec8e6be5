// What the pre-calibration weight check costs (calib/calibrate.h check_calibration_inputs: every
// tensor the calibration forward loads is present, shaped as config.json says and finite in f32),
// next to what the forward pass itself spends decoding the same tensors to f32.
// Usage: bench_calib_check MODEL_DIR [cold]
//   cold: first drops the shards' pages from the page cache (posix_fadvise DONTNEED; the files
//   must be clean, e.g. written and fsynced earlier), so the first check reads from disk.
// Prints one JSON line: bytes checked, the first (cold or warm) check, the best of three warm
// checks, and one decode-to-f32 pass over the same tensors (the forward's provider).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>

#include "calib/calibrate.h"
#include "calib/forward.h"
#include "calib/model_config.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"

namespace {
double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) { std::fprintf(stderr, "usage: bench_calib_check MODEL_DIR [cold]\n"); return 2; }
  using namespace qt;
  const bool cold = argc > 2 && std::strcmp(argv[2], "cold") == 0;
  ModelFolder m = ModelFolder::open(argv[1]);
  const calib::ModelConfig cfg = calib::ModelConfig::from_json(m.config(), m.config_path());
  const Checkpoint& ck = m.checkpoint();
  if (cold)
    for (const auto& shard : ck.shard_paths()) {
      const int fd = ::open(shard.c_str(), O_RDONLY);
      if (fd >= 0) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), ::close(fd);
    }
  uint64_t bytes = 0;
  std::set<std::string> names;
  for (const auto& w : calib::forward_weights(cfg))
    if (names.insert(w.name).second) bytes += ck.find(w.name)->bytes.size();
  const double first = seconds_of([&] { calib::check_calibration_inputs(m); });
  double warm = 1e30;
  for (int i = 0; i < 3; ++i) warm = std::min(warm, seconds_of([&] { calib::check_calibration_inputs(m); }));
  auto provider = calib::make_view_weight_provider([&ck](const std::string& s) { return ck.find(s); }, m.dir());
  const double decode = seconds_of([&] {
    std::vector<float> out;
    std::vector<int64_t> shape;
    for (const auto& n : names) provider(n, out, shape);
  });
  std::printf("{\"model\": \"%s\", \"tensors\": %zu, \"bytes\": %llu, \"first_check_s\": %.3f, \"first_is_cold\": %s, "
              "\"warm_check_s\": %.3f, \"warm_gb_per_s\": %.2f, \"decode_to_f32_s\": %.3f}\n",
              argv[1], names.size(), (unsigned long long)bytes, first, cold ? "true" : "false", warm,
              bytes / warm / 1e9, decode);
  return 0;
}
