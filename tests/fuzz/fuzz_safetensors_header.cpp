// libFuzzer target: the input is a whole safetensors file. parse_header must either accept it
// (and then every view must lie inside the input) or throw qt::InputError; anything else (a
// crash, a sanitizer report, another exception type) is a bug. Run with scripts/fuzz.sh.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "libquant/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<qt::TensorView> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
  try {
    qt::SafetensorsFile::parse_header("fuzz.safetensors", data, size, tensors, metadata, data_start);
  } catch (const qt::InputError&) {
    return 0;
  }
  // Accepted: check the invariants a caller relies on.
  if (data_start < 8 || data_start > size) std::abort();
  uint64_t expect = data_start;
  for (const auto& t : tensors) {
    const uint8_t* p = t.bytes.data();
    if (t.bytes.size() != 0 && (p < data + data_start || p + t.bytes.size() > data + size)) std::abort();
    if (t.bytes.size() != 0 && static_cast<uint64_t>(p - data) != expect) std::abort();  // contiguous
    expect += t.bytes.size();
    if (*qt::dtype_nbytes(t.dtype, t.numel()) != t.bytes.size()) std::abort();
  }
  if (expect != size) std::abort();  // no trailing bytes
  return 0;
}
