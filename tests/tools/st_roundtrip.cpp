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
#include "formats/tiny_model.h"
#include "libquant/error.h"

namespace {

// SHA-256 (FIPS 180-4), written from the specification for this tool; checked against
// Python's hashlib by the interop test.
class Sha256 {
 public:
  Sha256() { std::memcpy(h_, kInit, sizeof h_); }
  void update(const uint8_t* p, size_t n) {
    len_ += n;
    while (n > 0) {
      const size_t take = std::min(n, 64 - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == 64) { block(buf_); fill_ = 0; }
    }
  }
  std::string hex() {
    const uint64_t bits = len_ * 8;
    const uint8_t pad = 0x80;
    update(&pad, 1);
    const uint8_t zero = 0;
    while (fill_ != 56) update(&zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; ++i) lenb[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(lenb, 8);
    static const char* kHex = "0123456789abcdef";
    std::string s;
    for (uint32_t w : h_)
      for (int i = 3; i >= 0; --i) {
        const uint8_t b = static_cast<uint8_t>(w >> (8 * i));
        s += kHex[b >> 4];
        s += kHex[b & 15];
      }
    return s;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const uint8_t* p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
  }
  static constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  static constexpr uint32_t kK[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t fill_ = 0;
  uint64_t len_ = 0;
};

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
    Sha256 h;
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
