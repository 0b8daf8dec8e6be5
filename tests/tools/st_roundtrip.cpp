// qtool_st_roundtrip: test-only bridge between qtool's formats/ library and the Python packages
// (tests/python/test_safetensors_interop.py). Not installed, not part of the CLI.
//
//   write SPEC.json OUT.safetensors   SPEC = {"metadata": {k: v}, "tensors": [{"name", "dtype",
//                                     "shape", "hex"}]}; written with SafetensorsWriter, tensors
//                                     fed in reverse order in 3 chunks each (exercises pwrite).
//   dump PATH                         Checkpoint::open(PATH) (file, folder or index); prints
//                                     "meta<TAB>SHARD<TAB>KEY<TAB>VALUE" lines, then per tensor
//                                     "NAME<TAB>DTYPE<TAB>[SHAPE]<TAB>SHA256(bytes)" (NAME as a
//                                     JSON string literal, so any name fits on one line) in
//                                     checkpoint order.
//   config IN.json OUT_DIR            read_json_file + write_config_json.
//   index SPEC.json OUT_DIR           SPEC = {"total_size": N, "weight_map": {...}}; write_index_json.
//   tiny-model OUT_DIR SEED DTYPE SHARDS TIE   write_tiny_model.
// An InputError prints "error<TAB>KIND<TAB>MESSAGE" to stderr and exits 2.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "formats/safetensors_writer.h"
#include "formats/sha256.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"

namespace {

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

int cmd_write(const std::string& spec_path, const std::string& out) {
  const nlohmann::json spec = qt::read_json_file(spec_path);
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : spec.at("metadata").items()) meta[k] = v.get<std::string>();
  std::vector<qt::TensorSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : spec.at("tensors")) {
    specs.push_back({t.at("name").get<std::string>(), *qt::dtype_from_name(t.at("dtype").get<std::string>()),
                     t.at("shape").get<std::vector<int64_t>>()});
    data.push_back(from_hex(t.at("hex").get<std::string>()));
  }
  qt::SafetensorsWriter w(out, specs, meta);
  for (size_t k = specs.size(); k-- > 0;) {
    const auto& d = data[k];
    const size_t third = d.size() / 3;
    // Last chunk first, then the first, then the middle one.
    w.write_chunk(specs[k].name, 2 * third, std::span<const uint8_t>(d.data() + 2 * third, d.size() - 2 * third));
    w.write_chunk(specs[k].name, 0, std::span<const uint8_t>(d.data(), third));
    w.write_chunk(specs[k].name, third, std::span<const uint8_t>(d.data() + third, third));
  }
  w.commit();
  return 0;
}

int cmd_dump(const std::string& path) {
  const auto c = qt::Checkpoint::open(path);
  for (size_t s = 0; s < c.num_shards(); ++s)
    for (const auto& [k, v] : c.metadata(s)) std::cout << "meta\t" << s << "\t" << k << "\t" << v << "\n";
  for (const auto& t : c.tensors()) {
    qt::Sha256 h;  // formats/sha256.h; the interop test checks it against hashlib
    h.update(t.bytes.data(), t.bytes.size());
    std::cout << nlohmann::json(t.name).dump(-1, ' ', true) << "\t" << qt::dtype_name(t.dtype) << "\t" << qt::shape_string(t.shape) << "\t" << h.hex() << "\n";
  }
  return 0;
}

const char* kind_name(qt::InputError::Kind k) {
  using K = qt::InputError::Kind;
  switch (k) {
    case K::BadFile: return "BadFile";
    case K::Missing: return "Missing";
    case K::Unsupported: return "Unsupported";
    case K::BadValue: return "BadValue";
    case K::Usage: return "Usage";
    case K::Io: return "Io";
    case K::CheckFailed: return "CheckFailed";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 3 && a[0] == "write") return cmd_write(a[1], a[2]);
    if (a.size() == 2 && a[0] == "dump") return cmd_dump(a[1]);
    if (a.size() == 3 && a[0] == "config") {
      qt::write_config_json(a[2], qt::read_json_file(a[1]));
      return 0;
    }
    if (a.size() == 3 && a[0] == "index") {
      const nlohmann::json spec = qt::read_json_file(a[1]);
      qt::write_index_json(a[2], spec.at("total_size").get<uint64_t>(),
                           spec.at("weight_map").get<std::map<std::string, std::string>>());
      return 0;
    }
    if (a.size() == 6 && a[0] == "tiny-model") {
      qt::TinyModelOptions o;
      o.seed = std::stoull(a[2]);
      o.dtype = *qt::dtype_from_name(a[3]);
      o.num_shards = std::stoi(a[4]);
      o.tie_word_embeddings = a[5] == "1";
      qt::write_tiny_model(a[1], o);
      return 0;
    }
  } catch (const qt::InputError& e) {
    std::cerr << "error\t" << kind_name(e.kind()) << "\t" << e.what() << "\n";
    return 2;
  }
  std::cerr << "usage: see the comment at the top of tests/tools/st_roundtrip.cpp\n";
  return 64;
}
