// GGUF reader. See gguf.h for the format and the checks made at open.
//
// Parsing never trusts a count or a length: every read goes through Cursor, which checks the
// bytes are there first, and every count is compared with the bytes left before any loop runs,
// so a hostile header costs at most O(file size) work and no allocation proportional to a
// claimed count.

//
// The ggml block dequantizers are in gguf_blocks.cpp.
#include "formats/gguf.h"

#include "libquant/float_formats.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "formats/mmap_file.h"
#include "libquant/error.h"

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader reads little-endian fields in place");

namespace qt {
namespace {

using Kind = InputError::Kind;

// ---- type tables -------------------------------------------------------------------------------

constexpr uint32_t QK_K = 256;  // super-block size of the k-quants

// Indexed by ggml type id; a null name marks an id that ggml removed or never used. Block sizes
// and byte sizes as ggml's type_traits (and gguf-py's GGML_QUANT_SIZES).
struct TypeRow {
  const char* name;
  uint32_t block_size, type_size;
  bool dequantizable;
};
constexpr TypeRow kTypes[] = {
    /* 0*/ {"F32", 1, 4, true},
    /* 1*/ {"F16", 1, 2, true},
    /* 2*/ {"Q4_0", 32, 2 + 16, true},
    /* 3*/ {"Q4_1", 32, 2 + 2 + 16, true},
    /* 4*/ {nullptr, 0, 0, false},  // Q4_2, removed
    /* 5*/ {nullptr, 0, 0, false},  // Q4_3, removed
    /* 6*/ {"Q5_0", 32, 2 + 4 + 16, true},
    /* 7*/ {"Q5_1", 32, 2 + 2 + 4 + 16, true},
    /* 8*/ {"Q8_0", 32, 2 + 32, true},
    /* 9*/ {"Q8_1", 32, 4 + 4 + 32, false},
    /*10*/ {"Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, true},
    /*11*/ {"Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, true},
    /*12*/ {"Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12, true},
    /*13*/ {"Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12, true},
    /*14*/ {"Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16, true},
    /*15*/ {"Q8_K", QK_K, 4 + QK_K + QK_K / 8, false},
    /*16*/ {"IQ2_XXS", QK_K, 2 + QK_K / 4, false},
    /*17*/ {"IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, false},
    /*18*/ {"IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, false},
    /*19*/ {"IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, false},
    /*20*/ {"IQ4_NL", 32, 2 + 16, false},
    /*21*/ {"IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, false},
    /*22*/ {"IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, false},
    /*23*/ {"IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, false},
    /*24*/ {"I8", 1, 1, false},
    /*25*/ {"I16", 1, 2, false},
    /*26*/ {"I32", 1, 4, false},
    /*27*/ {"I64", 1, 8, false},
    /*28*/ {"F64", 1, 8, false},
    /*29*/ {"IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false},
    /*30*/ {"BF16", 1, 2, true},
    /*31*/ {nullptr, 0, 0, false},  // Q4_0_4_4, removed
    /*32*/ {nullptr, 0, 0, false},  // Q4_0_4_8, removed
    /*33*/ {nullptr, 0, 0, false},  // Q4_0_8_8, removed
    /*34*/ {"TQ1_0", QK_K, 2 + 4 * 13, false},
    /*35*/ {"TQ2_0", QK_K, 2 + 64, false},
    /*36*/ {nullptr, 0, 0, false},  // IQ4_NL_4_4, removed
    /*37*/ {nullptr, 0, 0, false},  // IQ4_NL_4_8, removed
    /*38*/ {nullptr, 0, 0, false},  // IQ4_NL_8_8, removed
    /*39*/ {"MXFP4", 32, 1 + 16, false},
    /*40*/ {"NVFP4", 64, 4 + 32, false},
    /*41*/ {"Q1_0", 128, 2 + 16, false},
};
constexpr uint32_t kNumTypeIds = sizeof(kTypes) / sizeof(kTypes[0]);

struct TypeInfoTable {
  GgmlTypeInfo info[kNumTypeIds];
  constexpr TypeInfoTable() : info{} {
    for (uint32_t i = 0; i < kNumTypeIds; ++i)
      info[i] = GgmlTypeInfo{kTypes[i].name ? std::string_view(kTypes[i].name) : std::string_view(),
                             kTypes[i].block_size, kTypes[i].type_size, kTypes[i].dequantizable};
  }
};
constexpr TypeInfoTable kTypeInfo;

// Fixed byte size of a scalar GGUF value type; 0 for STRING / ARRAY / unknown.
uint64_t fixed_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    default: return 0;
  }
}
bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::F64); }
bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16:
    case GgufValueType::I16: case GgufValueType::U32: case GgufValueType::I32:
    case GgufValueType::U64: case GgufValueType::I64: return true;
    default: return false;
  }
}

template <class T>
T load(const uint8_t* p) {  // unaligned little-endian load (the host is little-endian)
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// ---- bounds-checked cursor ---------------------------------------------------------------------

struct Cursor {
  const std::string& path;
  const uint8_t* data;
  uint64_t size;
  uint64_t pos = 0;
  std::string context;  // "metadata key 'x'" / "" -- prefixed to messages
  std::string tensor;   // the tensor being read, for InputError's tensor field

  uint64_t left() const { return size - pos; }

  [[noreturn]] void fail(Kind kind, const std::string& problem, const std::string& expected = {},
                         const std::string& got = {}) const {
    throw InputError(kind, path, tensor, context.empty() ? problem : context + ": " + problem,
                     expected, got);
  }
  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail(Kind::BadFile,
           std::string("file ends inside ") + what + " (truncated?)",
           std::to_string(n) + " bytes at offset " + std::to_string(pos),
           std::to_string(left()) + " bytes left of " + std::to_string(size));
  }
  uint32_t u32(const char* what) {
    need(4, what);
    uint32_t v = load<uint32_t>(data + pos);
    pos += 4;
    return v;
  }
  uint64_t u64(const char* what) {
    need(8, what);
    uint64_t v = load<uint64_t>(data + pos);
    pos += 8;
    return v;
  }
  std::string_view str(const char* what) {
    uint64_t n = u64(what);
    need(n, what);
    std::string_view s(reinterpret_cast<const char*>(data + pos), n);
    pos += n;
    return s;
  }
};

// Validates and skips one value of type `t` (whose type tag has already been read).
void skip_value(Cursor& c, GgufValueType t, int depth);

// Validates and skips `count` array elements of type `elem` (header already read).
void skip_array_items(Cursor& c, GgufValueType elem, uint64_t count, int depth) {
  if (uint64_t fs = fixed_size(elem)) {
    if (count > c.left() / fs)
      c.fail(Kind::BadFile, "array of " + std::to_string(count) + " " + gguf_value_type_name(elem) +
                                " does not fit in the file",
             "at most " + std::to_string(c.left() / fs) + " elements", std::to_string(count));
    if (elem == GgufValueType::BOOL) {
      for (uint64_t i = 0; i < count; ++i)
        if (c.data[c.pos + i] > 1)
          c.fail(Kind::BadFile, "bool array element " + std::to_string(i) + " is not 0 or 1", "0 or 1",
                 std::to_string(c.data[c.pos + i]));
    }
    c.pos += count * fs;
    return;
  }
  // Strings need >= 8 bytes each, arrays >= 12 (u32 type + u64 count): reject impossible counts
  // before looping over them.
  const uint64_t min_size = elem == GgufValueType::STRING ? 8 : 12;
  if (count > c.left() / min_size)
    c.fail(Kind::BadFile, "array of " + std::to_string(count) + " " + gguf_value_type_name(elem) +
                              " does not fit in the file",
           "at most " + std::to_string(c.left() / min_size) + " elements", std::to_string(count));
  for (uint64_t i = 0; i < count; ++i) skip_value(c, elem, depth);
}

void skip_value(Cursor& c, GgufValueType t, int depth) {
  switch (t) {
    case GgufValueType::STRING: c.str("a string value"); return;
    case GgufValueType::ARRAY: {
      if (depth + 1 > kMaxGgufArrayDepth)
        c.fail(Kind::BadFile, "arrays nested too deeply", "at most " +
               std::to_string(kMaxGgufArrayDepth) + " levels", "more");
      uint32_t et = c.u32("an array element type");
      if (!known_value_type(et))
        c.fail(Kind::BadFile, "unknown array element type", "a GGUF value type 0..12",
               std::to_string(et));
      uint64_t n = c.u64("an array length");
      skip_array_items(c, static_cast<GgufValueType>(et), n, depth + 1);
      return;
    }
    case GgufValueType::BOOL: {
      c.need(1, "a bool value");
      if (c.data[c.pos] > 1)
        c.fail(Kind::BadFile, "bool value is not 0 or 1", "0 or 1", std::to_string(c.data[c.pos]));
      c.pos += 1;
      return;
    }
    default: {
      uint64_t fs = fixed_size(t);
      QT_ASSERT(fs > 0);
      c.need(fs, "a scalar value");
      c.pos += fs;
    }
  }
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

// ---- integer conversion for the tolerant getters -----------------------------------------------

// An integer value read from the file as (is_negative, magnitude-ish) pair: signed types are read
// as int64, unsigned as uint64.
struct IntVal {
  bool is_signed;
  int64_t s;
  uint64_t u;
};
IntVal read_int(GgufValueType t, const uint8_t* p) {
  switch (t) {
    case GgufValueType::U8: return {false, 0, load<uint8_t>(p)};
    case GgufValueType::U16: return {false, 0, load<uint16_t>(p)};
    case GgufValueType::U32: return {false, 0, load<uint32_t>(p)};
    case GgufValueType::U64: return {false, 0, load<uint64_t>(p)};
    case GgufValueType::I8: return {true, load<int8_t>(p), 0};
    case GgufValueType::I16: return {true, load<int16_t>(p), 0};
    case GgufValueType::I32: return {true, load<int32_t>(p), 0};
    case GgufValueType::I64: return {true, load<int64_t>(p), 0};
    default: QT_ASSERT(false && "not an integer type"); return {};
  }
}
template <class T>
bool int_fits(const IntVal& v, T& out) {
  if (v.is_signed) {
    if (v.s < static_cast<int64_t>(std::numeric_limits<T>::min())) return false;
    if (v.s > 0 && static_cast<uint64_t>(v.s) > static_cast<uint64_t>(std::numeric_limits<T>::max()))
      return false;
    out = static_cast<T>(v.s);
    return true;
  }
  if (v.u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
  out = static_cast<T>(v.u);
  return true;
}
std::string int_string(const IntVal& v) {
  return v.is_signed ? std::to_string(v.s) : std::to_string(v.u);
}

// ---- number -> text for value_string -----------------------------------------------------------

template <class F>
std::string float_string(F f) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, f);  // shortest round-trip form
  return std::string(buf, r.ptr);
}

void append_escaped(std::string& out, std::string_view s, size_t max_bytes) {
  size_t n = s.size();
  if (n > max_bytes) {
    n = max_bytes;
    // Do not cut a UTF-8 sequence in half: back up over continuation bytes.
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  }
  out += '"';
  for (size_t i = 0; i < n; ++i) {
    unsigned char ch = static_cast<unsigned char>(s[i]);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20 || ch == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  out += '"';
  if (n < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
}

// Formats one value at p (already validated), returning the position after it. Arrays show at
// most `max_items` elements but are always walked to their end so the caller can continue.
const uint8_t* format_value(std::string& out, GgufValueType t, const uint8_t* p, size_t max_items,
                            size_t max_string) {
  switch (t) {
    case GgufValueType::BOOL: out += *p ? "true" : "false"; return p + 1;
    case GgufValueType::F32: out += float_string(load<float>(p)); return p + 4;
    case GgufValueType::F64: out += float_string(load<double>(p)); return p + 8;
    case GgufValueType::STRING: {
      uint64_t n = load<uint64_t>(p);
      append_escaped(out, std::string_view(reinterpret_cast<const char*>(p + 8), n), max_string);
      return p + 8 + n;
    }
    case GgufValueType::ARRAY: {
      auto et = static_cast<GgufValueType>(load<uint32_t>(p));
      uint64_t n = load<uint64_t>(p + 4);
      p += 12;
      out += "[" + std::to_string(n) + " x " + gguf_value_type_name(et) + "] [";
      for (uint64_t i = 0; i < n; ++i) {
        if (i < max_items) {
          if (i) out += ", ";
          p = format_value(out, et, p, max_items, max_string);
        } else {
          if (i == max_items) out += ", ...";
          if (uint64_t fs = fixed_size(et)) {  // skip the rest in one step
            p += (n - i) * fs;
            break;
          }
          if (et == GgufValueType::STRING) {  // skip the rest string by string, no formatting
            for (; i < n; ++i) p += 8 + load<uint64_t>(p);
            break;
          }
          std::string sink;
          p = format_value(sink, et, p, 0, 0);
        }
      }
      out += "]";
      return p;
    }
    default:
      out += int_string(read_int(t, p));
      return p + fixed_size(t);
  }
}


}  // namespace

// ---- public free functions ---------------------------------------------------------------------

const GgmlTypeInfo* ggml_type_info(uint32_t type_id) {
  if (type_id >= kNumTypeIds || kTypes[type_id].name == nullptr) return nullptr;
  return &kTypeInfo.info[type_id];
}

std::string ggml_type_name(GgmlType t) {
  const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(t));
  return ti ? std::string(ti->name) : "type#" + std::to_string(static_cast<uint32_t>(t));
}

std::string gguf_value_type_name(GgufValueType t) {
  static constexpr const char* kNames[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};
  auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "type#" + std::to_string(i);
}

void dequantize_to_f32(const GgufTensor& t, float* out) {
  const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(t.type));
  QT_ASSERT(ti != nullptr);  // GgufFile only hands out tensors of known types
  if (!ti->dequantizable)
    throw InputError(Kind::Unsupported, t.file, t.name,
                     "cannot dequantize ggml type " + std::string(ti->name),
                     "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K or Q6_K",
                     std::string(ti->name));
  QT_ASSERT(t.bytes.size() == t.numel() / ti->block_size * ti->type_size);
  bool ok = ggml_dequantize(t.type, t.bytes.data(), t.numel(), out);
  QT_ASSERT(ok);
}

std::vector<float> dequantize_to_f32(const GgufTensor& t) {
  std::vector<float> out(t.numel());
  dequantize_to_f32(t, out.data());
  return out;
}

// ---- GgufFile: open and validate ---------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  auto map = std::make_shared<const MappedFile>(path);
  const uint8_t* data = map->data();
  const uint64_t size = map->size();
  return parse(path, std::move(map), data, size);
}

GgufFile GgufFile::from_bytes(std::string label, std::vector<uint8_t> bytes) {
  auto buf = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  const uint8_t* data = buf->data();
  const uint64_t size = buf->size();
  return parse(std::move(label), std::move(buf), data, size);
}

GgufFile GgufFile::parse(std::string path, std::shared_ptr<const void> keep, const uint8_t* data,
                         uint64_t size) {
  GgufFile f;
  f.path_ = std::move(path);
  f.keep_ = std::move(keep);
  f.data_ = data;
  f.size_ = size;
  Cursor c{f.path_, data, size, 0, {}, {}};

  // -- header
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) {
    std::string got;
    for (uint64_t i = 0; i < std::min<uint64_t>(size, 4); ++i) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%02x", data[i]);
      got += buf;
    }
    c.fail(Kind::BadFile, "not a GGUF file (bad magic)", "\"GGUF\" (47475546)",
           size < 4 ? std::to_string(size) + "-byte file" : got);
  }
  c.pos = 4;
  const uint32_t version = c.u32("the version field");
  if (version != 2 && version != 3) {
    if (__builtin_bswap32(version) == 2 || __builtin_bswap32(version) == 3)
      c.fail(Kind::Unsupported, "big-endian GGUF files are not supported", "little-endian",
             "version field " + hex32(version));
    if (version == 1)
      c.fail(Kind::Unsupported, "GGUF version 1 is not supported (re-convert the model)",
             "version 2 or 3", "1");
    c.fail(Kind::Unsupported, "unsupported GGUF version", "version 2 or 3", std::to_string(version));
  }
  f.version_ = version;
  const uint64_t n_tensors = c.u64("the tensor count");
  const uint64_t n_kv = c.u64("the metadata count");
  // Each key/value needs >= 13 bytes (u64 key length, u32 type, 1-byte value) and each tensor
  // info >= 24 (u64 name length, u32 n_dims, u32 type, u64 offset).
  if (n_kv > c.left() / 13)
    c.fail(Kind::BadFile, "metadata count cannot fit in the file",
           "at most " + std::to_string(c.left() / 13), std::to_string(n_kv));
  if (n_tensors > c.left() / 24 || n_kv * 13 > c.left() - n_tensors * 24)
    c.fail(Kind::BadFile, "tensor count cannot fit in the file",
           "at most " + std::to_string((c.left() - n_kv * 13) / 24), std::to_string(n_tensors));

  // -- metadata
  f.kvs_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.context = "metadata entry #" + std::to_string(i);
    std::string_view key = c.str("a metadata key");
    c.context = "metadata key '" + std::string(key) + "'";
    if (f.kv_index_.count(key)) c.fail(Kind::BadFile, "duplicate key");
    GgufKv kv;
    kv.key = std::string(key);
    const uint32_t type = c.u32("a value type");
    if (!known_value_type(type))
      c.fail(Kind::BadFile, "unknown value type", "a GGUF value type 0..12", std::to_string(type));
    kv.type = static_cast<GgufValueType>(type);
    if (kv.type == GgufValueType::ARRAY) {
      const uint32_t et = c.u32("an array element type");
      if (!known_value_type(et))
        c.fail(Kind::BadFile, "unknown array element type", "a GGUF value type 0..12",
               std::to_string(et));
      kv.elem_type = static_cast<GgufValueType>(et);
      kv.count = c.u64("an array length");
      kv.value_offset = c.pos;
      skip_array_items(c, kv.elem_type, kv.count, 1);
    } else {
      kv.value_offset = c.pos;
      skip_value(c, kv.type, 0);
    }
    f.kv_index_.emplace(kv.key, f.kvs_.size());
    f.kvs_.push_back(std::move(kv));
  }
  c.context.clear();

  // -- alignment
  if (const GgufKv* a = f.find_kv("general.alignment")) {
    c.context = "metadata key 'general.alignment'";
    if (a->type != GgufValueType::U32)
      c.fail(Kind::BadFile, "wrong value type", "u32", gguf_value_type_name(a->type));
    const uint32_t al = load<uint32_t>(data + a->value_offset);
    if (al == 0 || (al & (al - 1)) != 0)
      c.fail(Kind::BadFile, "alignment is not a power of two", "a power of two",
             std::to_string(al));
    f.alignment_ = al;
    c.context.clear();
  }

  // -- tensor infos
  f.tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.context = "tensor info #" + std::to_string(i);
    c.tensor.clear();
    std::string_view name = c.str("a tensor name");
    c.context.clear();
    c.tensor = std::string(name);
    if (f.tensor_index_.count(name)) c.fail(Kind::BadFile, "duplicate tensor name");
    GgufTensor t;
    t.name = std::string(name);
    t.file = f.path_;
    const uint32_t n_dims = c.u32("the tensor's dimension count");
    if (n_dims > 4) c.fail(Kind::BadFile, "too many dimensions", "at most 4", std::to_string(n_dims));
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t e = c.u64("a tensor dimension");
      if (e == 0 || e > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.fail(Kind::BadFile, "dimension ne[" + std::to_string(d) + "] is not positive",
               "1..2^63-1", std::to_string(static_cast<int64_t>(e)));
      if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / e)
        c.fail(Kind::BadFile, "element count overflows int64");
      numel *= e;
      t.ne.push_back(static_cast<int64_t>(e));
    }
    const uint32_t type = c.u32("the tensor's ggml type");
    const GgmlTypeInfo* ti = ggml_type_info(type);
    if (!ti)
      c.fail(Kind::Unsupported, "unknown ggml type id " + std::to_string(type),
             "a known ggml type (0-3, 6-30, 34, 35, 39-41)", std::to_string(type));
    t.type = static_cast<GgmlType>(type);
    const uint64_t ne0 = t.ne.empty() ? 1 : static_cast<uint64_t>(t.ne[0]);
    if (ne0 % ti->block_size != 0)
      c.fail(Kind::BadFile,
             "row length ne[0] is not a multiple of the " + std::string(ti->name) + " block size",
             "a multiple of " + std::to_string(ti->block_size), std::to_string(ne0));
    const uint64_t nblocks = numel / ti->block_size;
    if (nblocks > std::numeric_limits<uint64_t>::max() / ti->type_size)
      c.fail(Kind::BadFile, "byte size overflows");
    t.offset = c.u64("the tensor's data offset");
    // t.bytes is set below, once the data region is known.
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }
  c.context.clear();
  c.tensor.clear();

  // -- data region: starts at the next multiple of `alignment` after the tensor infos.
  const uint64_t header_end = c.pos;
  f.data_offset_ = (header_end + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  if (!f.tensors_.empty() && f.data_offset_ > size)
    c.fail(Kind::BadFile, "file ends before the data region",
           "data region at offset " + std::to_string(f.data_offset_),
           std::to_string(size) + "-byte file");
  const uint64_t region = f.data_offset_ <= size ? size - f.data_offset_ : 0;

  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  ranges.reserve(f.tensors_.size());
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    GgufTensor& t = f.tensors_[i];
    c.tensor = t.name;
    const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(t.type));
    const uint64_t nbytes = t.numel() / ti->block_size * ti->type_size;
    if (t.offset % f.alignment_ != 0)
      c.fail(Kind::BadFile, "data offset is not aligned",
             "a multiple of " + std::to_string(f.alignment_), std::to_string(t.offset));
    if (t.offset > region || nbytes > region - t.offset)
      c.fail(Kind::BadFile, "data lies outside the data region (truncated file?)",
             "offset + size <= " + std::to_string(region) + " (the region's size)",
             std::to_string(t.offset) + " + " + std::to_string(nbytes));
    t.bytes = std::span<const uint8_t>(data + f.data_offset_ + t.offset, nbytes);
    ranges.push_back({t.offset, t.offset + nbytes, i});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      const GgufTensor& a = f.tensors_[ranges[i - 1].index];
      const GgufTensor& b = f.tensors_[ranges[i].index];
      c.tensor = b.name;
      c.fail(Kind::BadFile, "data overlaps tensor '" + a.name + "'",
             "to start at or after " + std::to_string(ranges[i - 1].end),
             "offset " + std::to_string(ranges[i].begin));
    }
  }
  return f;
}

// ---- GgufFile: metadata access -----------------------------------------------------------------

std::vector<std::string> GgufFile::keys() const {
  std::vector<std::string> out;
  out.reserve(kvs_.size());
  for (const auto& kv : kvs_) out.push_back(kv.key);
  return out;
}

bool GgufFile::has(std::string_view key) const { return kv_index_.find(key) != kv_index_.end(); }

const GgufKv* GgufFile::find_kv(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufKv& GgufFile::require(std::string_view key) const {
  const GgufKv* kv = find_kv(key);
  if (!kv)
    throw InputError(Kind::Missing, path_, "", "metadata key '" + std::string(key) + "' is missing");
  return *kv;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const GgufKv& kv, const std::string& expected,
                             const std::string& detail = {}) {
  std::string got = gguf_value_type_name(kv.type);
  if (kv.type == GgufValueType::ARRAY) got = "array of " + gguf_value_type_name(kv.elem_type);
  if (!detail.empty()) got += " " + detail;
  throw InputError(Kind::BadFile, path, "", "metadata key '" + kv.key + "' has the wrong type",
                   expected, got);
}

template <class T>
T get_int(const std::string& path, const GgufKv& kv, const uint8_t* data, const char* tname) {
  if (!is_integer(kv.type)) wrong_type(path, kv, tname);
  const IntVal v = read_int(kv.type, data + kv.value_offset);
  T out{};
  if (!int_fits(v, out)) wrong_type(path, kv, tname, "with value " + int_string(v) + " out of range");
  return out;
}
}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  const GgufKv& kv = require(key);
  if (kv.type != GgufValueType::STRING) wrong_type(path_, kv, "string");
  const uint64_t n = load<uint64_t>(data_ + kv.value_offset);
  return std::string(reinterpret_cast<const char*>(data_ + kv.value_offset + 8), n);
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufKv& kv = require(key);
  if (kv.type != GgufValueType::BOOL) wrong_type(path_, kv, "bool");
  return data_[kv.value_offset] != 0;
}

uint32_t GgufFile::get_u32(std::string_view key) const {
  return get_int<uint32_t>(path_, require(key), data_, "an integer that fits u32");
}
int64_t GgufFile::get_i64(std::string_view key) const {
  return get_int<int64_t>(path_, require(key), data_, "an integer that fits i64");
}
uint64_t GgufFile::get_u64(std::string_view key) const {
  return get_int<uint64_t>(path_, require(key), data_, "an integer that fits u64");
}

float GgufFile::get_f32(std::string_view key) const {
  const GgufKv& kv = require(key);
  if (kv.type == GgufValueType::F32) return load<float>(data_ + kv.value_offset);
  // f64 -> f32: C++ conversion, round-to-nearest-even under the default FP environment (IEEE:
  // magnitudes beyond the f32 range become +-inf).
  if (kv.type == GgufValueType::F64) return static_cast<float>(load<double>(data_ + kv.value_offset));
  wrong_type(path_, kv, "f32 or f64");
}

template <class T>
std::vector<T> GgufFile::get_array(std::string_view key) const {
  const GgufKv& kv = require(key);
  const char* want = std::is_same_v<T, std::string> ? "array of string"
                     : std::is_same_v<T, float>     ? "array of f32 or f64"
                                                    : "array of integers that fit";
  if (kv.type != GgufValueType::ARRAY) wrong_type(path_, kv, want);
  std::vector<T> out;
  out.reserve(kv.count);
  const uint8_t* p = data_ + kv.value_offset;
  if constexpr (std::is_same_v<T, std::string>) {
    if (kv.elem_type != GgufValueType::STRING) wrong_type(path_, kv, want);
    for (uint64_t i = 0; i < kv.count; ++i) {
      const uint64_t n = load<uint64_t>(p);
      out.emplace_back(reinterpret_cast<const char*>(p + 8), n);
      p += 8 + n;
    }
  } else if constexpr (std::is_same_v<T, float>) {
    if (kv.elem_type == GgufValueType::F32) {
      for (uint64_t i = 0; i < kv.count; ++i) out.push_back(load<float>(p + 4 * i));
    } else if (kv.elem_type == GgufValueType::F64) {
      for (uint64_t i = 0; i < kv.count; ++i)  // rounded to nearest-even f32
        out.push_back(static_cast<float>(load<double>(p + 8 * i)));
    } else {
      wrong_type(path_, kv, want);
    }
  } else {
    if (!is_integer(kv.elem_type)) wrong_type(path_, kv, want);
    const uint64_t fs = fixed_size(kv.elem_type);
    for (uint64_t i = 0; i < kv.count; ++i) {
      const IntVal v = read_int(kv.elem_type, p + fs * i);
      T x{};
      if (!int_fits(v, x))
        wrong_type(path_, kv, want,
                   "with element " + std::to_string(i) + " = " + int_string(v) + " out of range");
      out.push_back(x);
    }
  }
  return out;
}

template std::vector<std::string> GgufFile::get_array<std::string>(std::string_view) const;
template std::vector<float> GgufFile::get_array<float>(std::string_view) const;
template std::vector<int32_t> GgufFile::get_array<int32_t>(std::string_view) const;
template std::vector<int64_t> GgufFile::get_array<int64_t>(std::string_view) const;
template std::vector<uint32_t> GgufFile::get_array<uint32_t>(std::string_view) const;

std::string GgufFile::value_string(std::string_view key, size_t max_items,
                                   size_t max_string) const {
  const GgufKv& kv = require(key);
  std::string out;
  if (kv.type == GgufValueType::ARRAY) {
    // format_value expects the array header (elem type + count) just before the items.
    format_value(out, kv.type, data_ + kv.value_offset - 12, max_items, max_string);
  } else {
    format_value(out, kv.type, data_ + kv.value_offset, max_items, max_string);
  }
  return out;
}

const GgufTensor* GgufFile::find(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace qt
