#include "formats/safetensors.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "formats/json_util.h"
#include "formats/mmap_file.h"
#include "libquant/error.h"

namespace qt {
namespace {

using json = nlohmann::json;
using Kind = InputError::Kind;

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

std::string hex_byte(uint8_t b) {
  static const char* kHex = "0123456789ABCDEF";
  return std::string("0x") + kHex[b >> 4] + kHex[b & 15];
}

std::string offsets_string(uint64_t b, uint64_t e) {
  return "[" + std::to_string(b) + "," + std::to_string(e) + "]";
}

// Known near-misses get a hint: the e4m3fn spelling and lower-case names.
std::string unknown_dtype_message(const std::string& s) {
  std::string msg = "unknown dtype '" + printable(s) + "'";
  if (s == "F8_E4M3FN") return msg + " (safetensors spells float8_e4m3fn 'F8_E4M3')";
  std::string upper = s;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper != s && dtype_from_name(upper)) return msg + " (dtype names are upper case: '" + upper + "')";
  return msg;
}

// A JSON number that is an integer in [0, limit]; nullopt otherwise (negative, fractional, too big).
std::optional<uint64_t> as_count(const json& v, uint64_t limit) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= limit) return u;
  } else if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i >= 0 && static_cast<uint64_t>(i) <= limit) return static_cast<uint64_t>(i);
  }
  return std::nullopt;
}

// Validates one tensor entry (everything that does not depend on the other entries).
Entry parse_entry(const std::string& path, const std::string& name, const json& v) {
  auto bad = [&](const std::string& problem) { throw InputError(Kind::BadFile, path, name, problem); };
  if (!v.is_object()) bad("header entry is not an object (got " + json_type_name(v) + ")");
  for (const auto& [field, _] : v.items())
    if (field != "dtype" && field != "shape" && field != "data_offsets")
      bad("unexpected field '" + printable(field) +
          "' (a tensor entry has exactly dtype, shape and data_offsets)");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) bad(std::string("missing field '") + field + "'");

  Entry e;
  e.name = name;
  const json& jd = v["dtype"];
  if (!jd.is_string()) bad("dtype is not a string (got " + json_type_name(jd) + ")");
  const auto dt = dtype_from_name(jd.get<std::string>());
  if (!dt) bad(unknown_dtype_message(jd.get<std::string>()));
  e.dtype = *dt;

  const json& js = v["shape"];
  if (!js.is_array()) bad("shape is not an array (got " + json_type_name(js) + ")");
  const std::string shape_text = printable(js.dump(), 200);
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : js) {
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      bad("shape " + shape_text + " has a negative dimension");
    const auto dim = as_count(d, static_cast<uint64_t>(INT64_MAX));
    if (!dim) bad("shape " + shape_text + " has an entry that is not a non-negative 64-bit integer");
    e.shape.push_back(static_cast<int64_t>(*dim));
    overflow = overflow || __builtin_mul_overflow(numel, *dim, &numel);
  }
  // A zero dimension makes the product 0 even if earlier factors overflowed.
  for (int64_t d : e.shape)
    if (d == 0) { overflow = false; numel = 0; }
  if (overflow) bad("shape " + shape_text + " has more elements than fit in 64 bits");
  const auto nbytes = dtype_nbytes(e.dtype, numel);
  if (!nbytes) {
    const uint64_t bits = static_cast<uint64_t>(dtype_bits(e.dtype));
    if (numel != 0 && bits > UINT64_MAX / numel)
      bad("shape " + shape_text + " of " + std::string(dtype_name(e.dtype)) +
          " is too large (its bit size overflows 64 bits)");
    bad("shape " + shape_text + " of " + std::string(dtype_name(e.dtype)) + " is " +
        std::to_string(numel) + " x " + std::to_string(bits) + " bits, not a whole number of bytes");
  }

  const json& jo = v["data_offsets"];
  std::optional<uint64_t> b, en;
  if (jo.is_array() && jo.size() == 2) {
    b = as_count(jo[0], UINT64_MAX);
    en = as_count(jo[1], UINT64_MAX);
  }
  if (!b || !en)
    bad("data_offsets must be [BEGIN, END] with two non-negative integers (got " +
        printable(jo.dump(), 200) + ")");
  e.begin = *b;
  e.end = *en;
  if (e.end < e.begin) bad("data_offsets " + offsets_string(e.begin, e.end) + " end before they begin");
  if (e.end - e.begin != *nbytes)
    bad("data_offsets " + offsets_string(e.begin, e.end) + " but shape " + shape_string(e.shape) +
        " of " + std::string(dtype_name(e.dtype)) + " needs " + std::to_string(*nbytes) + " bytes");
  return e;
}

std::string describe_header_duplicate(const std::vector<std::string>& parents, const std::string& key) {
  if (parents.empty())
    return key == "__metadata__" ? "has two __metadata__ entries"
                                 : "has a duplicate tensor name '" + printable(key) + "'";
  if (parents.size() == 1 && parents[0] == "__metadata__")
    return "has a duplicate __metadata__ key '" + printable(key) + "'";
  if (parents.size() == 1)
    return "entry for tensor '" + printable(parents[0]) + "' has a duplicate field '" +
           printable(key) + "'";
  return "has a duplicate key '" + printable(key) + "'";
}

}  // namespace

bool is_git_lfs_pointer(const uint8_t* data, uint64_t size) {
  static constexpr std::string_view kLfs = "version https://git-lfs";
  return size >= kLfs.size() && std::memcmp(data, kLfs.data(), kLfs.size()) == 0;
}

void SafetensorsFile::parse_header(const std::string& path, const uint8_t* data, uint64_t file_size,
                                   std::vector<TensorView>& tensors,
                                   std::map<std::string, std::string>& metadata,
                                   uint64_t& data_start) {
  auto bad = [&](const std::string& problem) { throw InputError(Kind::BadFile, path, "", problem); };
  tensors.clear();
  metadata.clear();
  // An un-pulled LFS checkout has ~130-byte text files in place of the shards: say so plainly
  // instead of reporting a nonsensical header length.
  if (is_git_lfs_pointer(data, file_size))
    throw InputError(Kind::Missing, path, "",
                     "is a Git LFS pointer file, not the tensor data: run `git lfs pull`");
  if (file_size < 8)
    bad("file is " + std::to_string(file_size) +
        " bytes, shorter than the 8-byte header length that starts a safetensors file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // u64 little-endian
  // Both size checks come before any header byte is read (a corrupt length must not make us
  // touch or allocate gigabytes). File size first: it is the likelier diagnosis.
  if (n > file_size - 8)
    bad("header length " + std::to_string(n) + " exceeds file size " + std::to_string(file_size) +
        " (not a safetensors file, or truncated)");
  if (n > kMaxHeaderBytes)
    bad("header length " + std::to_string(n) + " exceeds the limit of " +
        std::to_string(kMaxHeaderBytes) + " bytes");
  if (n == 0) bad("header length is 0 (the header must hold at least the JSON object '{}')");

  const std::string_view text(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n));
  if (const auto pos = find_invalid_utf8(text))
    bad("header is not valid UTF-8 (bad byte " + hex_byte(static_cast<uint8_t>(text[*pos])) +
        " at header offset " + std::to_string(*pos) + ")");
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    bad("header contains a NUL byte at header offset " + std::to_string(nul) +
        " (padding must be spaces, not NULs)");

  JsonParseOptions opt;
  opt.what = "header";
  opt.max_depth = 8;  // legit headers nest 3 deep (object > entry > shape)
  opt.describe_duplicate = describe_header_duplicate;
  const json header = parse_json_strict(text, path, opt);
  if (!header.is_object()) bad("header is not a JSON object (got " + json_type_name(header) + ")");

  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [key, v] : header.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) bad("__metadata__ is not an object (got " + json_type_name(v) + ")");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string())
          bad("__metadata__ value for '" + printable(mk) + "' is not a string (got " +
              json_type_name(mv) + "; safetensors metadata is a string->string map)");
        metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, v));
  }

  // The reference reader sorts by data_offsets and demands each range start where the previous
  // one ended; we do the same but say which of gap/overlap it is.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t expected = 0;
  const Entry* owner = nullptr;  // the tensor whose END is `expected`
  for (const Entry& e : entries) {
    if (e.begin < expected)
      bad("tensors '" + printable(owner->name) + "' and '" + printable(e.name) +
          "' overlap (data_offsets " + offsets_string(owner->begin, owner->end) + " and " +
          offsets_string(e.begin, e.end) + ")");
    if (e.begin > expected)
      bad("gap before tensor '" + printable(e.name) + "': data bytes [" + std::to_string(expected) +
          "," + std::to_string(e.begin) + ") belong to no tensor" +
          (owner ? "" : " (the first tensor must start at offset 0)"));
    if (e.end > expected || owner == nullptr) { expected = e.end; owner = &e; }
  }

  const uint64_t available = file_size - 8 - n;
  if (expected > available) {
    for (const Entry& e : entries)
      if (e.end > available)
        throw InputError(Kind::BadFile, path, e.name,
                         "data_offsets " + offsets_string(e.begin, e.end) +
                             " extend past the end of the file: the data buffer has only " +
                             std::to_string(available) + " bytes (file size " +
                             std::to_string(file_size) + "; file truncated?)");
  }
  if (expected < available)
    bad(std::to_string(available - expected) + " trailing bytes after the last tensor (data " +
        "buffer is " + std::to_string(available) + " bytes, tensors end at " +
        std::to_string(expected) + ")");

  data_start = 8 + n;
  tensors.reserve(entries.size());
  for (Entry& e : entries) {
    TensorView t;
    t.name = std::move(e.name);
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.bytes = std::span<const uint8_t>(data + data_start + e.begin, static_cast<size_t>(e.end - e.begin));
    t.file = path;
    tensors.push_back(std::move(t));
  }
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  auto map = std::make_shared<const MappedFile>(path);
  parse_header(path, map->data(), map->size(), f.tensors_, f.metadata_, f.data_start_);
  f.map_ = std::move(map);
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_.emplace(f.tensors_[i].name, i);
  return f;
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t SafetensorsFile::file_size() const { return map_ ? map_->size() : 0; }

uint64_t SafetensorsFile::file_offset(const TensorView& t) const {
  return static_cast<uint64_t>(t.bytes.data() - map_->data());
}

}  // namespace qt
