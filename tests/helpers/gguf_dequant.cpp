// Test-only helper for tests/python/test_gguf_smollm2.py: dequantizes one tensor of a GGUF file
// with qtool's reader and writes the values as raw little-endian f32 (C order of the row-major
// shape), so the Python side can compare them with gguf-py's gguf.quants.dequantize.
//
// Usage: gguf_dequant FILE TENSOR OUT.f32 [MAX_ELEMS]
//   Writes the first MAX_ELEMS values (all by default); prints "TYPE ne0,ne1,..." on stdout.
// Exit: 0 ok, 1 bad input (message on stderr), 2 usage.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "libquant/error.h"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: %s FILE TENSOR OUT.f32 [MAX_ELEMS]\n", argv[0]);
    return 2;
  }
  try {
    qt::GgufFile f = qt::GgufFile::open(argv[1]);
    const qt::GgufTensor* t = f.find(argv[2]);
    if (!t) {
      std::fprintf(stderr, "%s: no tensor '%s'\n", argv[1], argv[2]);
      return 1;
    }
    std::vector<float> v = qt::dequantize_to_f32(*t);
    size_t n = v.size();
    if (argc == 5) n = std::min<size_t>(n, std::strtoull(argv[4], nullptr, 10));
    std::FILE* out = std::fopen(argv[3], "wb");
    if (!out || std::fwrite(v.data(), sizeof(float), n, out) != n || std::fclose(out) != 0) {
      std::fprintf(stderr, "%s: cannot write\n", argv[3]);
      return 1;
    }
    std::string ne;
    for (int64_t d : t->ne) ne += (ne.empty() ? "" : ",") + std::to_string(d);
    std::printf("%s %s\n", qt::ggml_type_name(t->type).c_str(), ne.c_str());
    return 0;
  } catch (const qt::InputError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
