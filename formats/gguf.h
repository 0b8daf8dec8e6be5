// GGUF reader (versions 2 and 3, little-endian): one file, memory-mapped, validated in full at
// open, with exact (bit-for-bit as ggml's reference CPU code) dequantization to f32.
//
// Layout (GGUF spec, ggml/docs/gguf.md):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count
//   kv_count x { string key, u32 value_type, value }          (string = u64 length + bytes)
//   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to `alignment`, then the data region; tensor offsets are relative to its start.
// `alignment` is the u32 key general.alignment (a power of two), 32 when absent.
//
// open() rejects, with qt::InputError naming the file (and the key or tensor) and what is wrong:
//   - bad magic; version 1 (Unsupported), 0 or > 3 (Unsupported), a byte-swapped (big-endian)
//     file (Unsupported)
//   - tensor/kv counts that cannot fit in the file; anything read past the end of the file
//   - unknown value types; bools other than 0/1; arrays nested deeper than kMaxGgufArrayDepth;
//     array counts / string lengths larger than the bytes left; duplicate keys
//   - general.alignment not a u32 power of two
//   - duplicate tensor names; n_dims > 4; a zero or negative extent; an element count or byte
//     size that overflows; an unknown ggml type id; ne[0] not a multiple of the type's block
//     size; an offset not a multiple of `alignment`; a byte range outside the data region; two
//     tensors whose byte ranges overlap
// Gaps between tensors and tensors out of offset order are accepted (the spec allows them; ggml
// itself additionally requires the packed order its writer produces).
//
// DIMENSION ORDER -- read this before using `ne`:
//   GGUF stores dims in ggml order: ne[0] is the FASTEST-varying (innermost, contiguous)
//   dimension. A row-major (numpy / PyTorch / safetensors) tensor of shape [rows, cols] is
//   stored with ne = {cols, rows}. shape_rowmajor() returns the reversed list, i.e. the shape
//   that a C-order reading of the dequantized values has. Block quantization always runs
//   along ne[0] (a row), which is why ne[0] must be a multiple of the block size.
//
// Ownership: GgufFile owns the mapping (shared by copies of the object); every GgufTensor::bytes
// span points into it and is valid as long as some copy of the GgufFile that produced it lives.
// Host must be little-endian (checked at compile time).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <map>
#include <vector>

namespace qt {

// ---- ggml tensor types -------------------------------------------------------------------------

// ggml element types, numbered as in ggml.h (these ids are what a GGUF file stores). Ids 4, 5,
// 31-33 and 36-38 were removed from ggml and are rejected as unknown.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

struct GgmlTypeInfo {
  std::string_view name;  // as ggml names it: "F32", "Q4_K", "IQ2_XXS", ...
  uint32_t block_size;    // elements per block (1 for plain types)
  uint32_t type_size;     // bytes per block
  bool dequantizable;     // dequantize_to_f32 supports this type
};

// Traits of a type id as stored in a file; nullptr for an id this build does not know.
const GgmlTypeInfo* ggml_type_info(uint32_t type_id);
// "Q4_K" (or "type#<id>" for an unknown id, for messages).
std::string ggml_type_name(GgmlType t);

// Dequantizes `n` elements (a multiple of the type's block size) of raw blocks of `type` at
// `src` to f32 at `dst`, exactly as ggml's reference dequantize_row_* does (same f32 operation
// order, no FMA contraction; see gguf.cpp). Returns false, writing nothing, if `type` is not one
// of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. The caller
// guarantees `src` holds n / block_size * type_size bytes.
bool ggml_dequantize(GgmlType type, const uint8_t* src, uint64_t n, float* dst);

// ---- metadata ----------------------------------------------------------------------------------

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
// "u8", "i32", "f32", "bool", "string", "array", ... ("type#<id>" for an unknown id).
std::string gguf_value_type_name(GgufValueType t);

// Arrays may contain arrays (each inner array carries its own element type and count); deeper
// nesting than this is rejected at open (guards the parser's recursion).
inline constexpr int kMaxGgufArrayDepth = 8;

// One metadata entry, in file order. The value itself is decoded on demand from the mapping by
// the GgufFile getters.
struct GgufKv {
  std::string key;
  GgufValueType type = GgufValueType::U8;
  GgufValueType elem_type = GgufValueType::U8;  // ARRAY only: the element type (may be ARRAY)
  uint64_t count = 1;                           // ARRAY only: number of elements; 1 otherwise
  uint64_t value_offset = 0;  // file offset of the value (after the type tag / array header)
};

// ---- tensors -----------------------------------------------------------------------------------

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;         // GGUF / ggml order: ne[0] fastest. 0..4 entries, each >= 1
  uint64_t offset = 0;             // relative to the data region (GgufFile::data_offset())
  std::span<const uint8_t> bytes;  // exactly numel / block_size * type_size bytes, in the map
  std::string file;                // for error messages

  uint64_t numel() const {
    uint64_t n = 1;
    for (int64_t d : ne) n *= static_cast<uint64_t>(d);
    return n;
  }
  // ne reversed: the C-order (row-major) shape of the dequantized values, e.g. ne {576, 1536}
  // -> {1536, 576}. A 0-dim tensor (a scalar, as ggml allows) gives {}.
  std::vector<int64_t> shape_rowmajor() const { return {ne.rbegin(), ne.rend()}; }
};

// Dequantizes all of `t` to `out`, which must hold t.numel() floats; values come out in memory
// order, i.e. C order of t.shape_rowmajor(). Exact as ggml (see ggml_dequantize). NaN inputs of
// F16 tensors keep their payload (sign, quiet bit and mantissa bits as stored).
// Throws InputError(Unsupported) naming the file, the tensor and the type for other types.
void dequantize_to_f32(const GgufTensor& t, float* out);
std::vector<float> dequantize_to_f32(const GgufTensor& t);

// ---- the file ----------------------------------------------------------------------------------

class GgufFile {
 public:
  // Maps and validates `path`. Throws InputError: Missing (no such file), Io (cannot read/map),
  // BadFile (malformed), Unsupported (GGUF v1, a newer version, big-endian, unknown ggml type).
  static GgufFile open(const std::string& path);
  // Same validation on bytes held in memory (tests, fuzzers); `label` stands in for the path in
  // messages. The GgufFile keeps the buffer.
  static GgufFile from_bytes(std::string label, std::vector<uint8_t> bytes);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data region
  uint64_t file_size() const { return size_; }

  // -- metadata. All getters take the key; a missing key throws InputError(Missing), a value of
  // an incompatible type throws InputError(BadFile) naming the key, the type expected and found.
  const std::vector<GgufKv>& kvs() const { return kvs_; }  // file order
  std::vector<std::string> keys() const;                   // file order
  bool has(std::string_view key) const;
  const GgufKv* find_kv(std::string_view key) const;  // nullptr if absent

  std::string get_string(std::string_view key) const;  // STRING only (raw bytes, UTF-8 per spec)
  bool get_bool(std::string_view key) const;           // BOOL only
  // Integer getters accept any integer value type (u8..u64, i8..i64) whose value fits the result.
  uint32_t get_u32(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  // F32 exactly; F64 rounded to nearest-even f32.
  float get_f32(std::string_view key) const;
  // Arrays. T is one of std::string (STRING elements), float (F32, or F64 rounded),
  // int32_t / int64_t / uint32_t (any integer element type whose values all fit).
  // A nested array (elements of type ARRAY) is not convertible and throws BadFile.
  template <class T>
  std::vector<T> get_array(std::string_view key) const;
  // Human-readable value for listings: scalars in full (strings quoted, escaped, cut at
  // `max_string` bytes), arrays as "[n x type] [v0, v1, ...]" with at most `max_items` shown.
  std::string value_string(std::string_view key, size_t max_items = 8,
                           size_t max_string = 120) const;

  // -- tensors
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // file (header) order
  const GgufTensor* find(std::string_view name) const;                 // nullptr if absent

 private:
  static GgufFile parse(std::string path, std::shared_ptr<const void> keep, const uint8_t* data,
                        uint64_t size);
  const GgufKv& require(std::string_view key) const;

  std::string path_;
  std::shared_ptr<const void> keep_;  // the mapping or buffer the spans point into
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKv> kvs_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// get_array is defined (explicitly instantiated) in gguf.cpp for these element types only.
extern template std::vector<std::string> GgufFile::get_array<std::string>(std::string_view) const;
extern template std::vector<float> GgufFile::get_array<float>(std::string_view) const;
extern template std::vector<int32_t> GgufFile::get_array<int32_t>(std::string_view) const;
extern template std::vector<int64_t> GgufFile::get_array<int64_t>(std::string_view) const;
extern template std::vector<uint32_t> GgufFile::get_array<uint32_t>(std::string_view) const;

}  // namespace qt
