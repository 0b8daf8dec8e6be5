// Element types of tensors on disk, named as safetensors names them.
//
// The enumerators are declared in the safetensors reference "increasing alignment" order
// (formats/FORMATS.md §1.3); the writer sorts by this order descending, ties by name, so it lays
// out tensors exactly as the reference writer does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qt {

enum class DType : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};
inline constexpr int kNumDTypes = static_cast<int>(DType::U64) + 1;

// Size of one element in bits (4 and 6 for the sub-byte MX types).
int dtype_bits(DType t);
// Name as it appears in a safetensors header ("BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Short lower-case name for humans and logs ("bf16", "fp8", "int8", ...).
std::string_view dtype_short_name(DType t);
// Inverse of dtype_name; nullopt for an unknown string.
std::optional<DType> dtype_from_name(std::string_view s);
// Floating-point types qtool can decode to f32 element by element.
bool dtype_is_float(DType t);

// Bytes for `numel` elements; nullopt if not a whole number of bytes or on overflow.
std::optional<uint64_t> dtype_nbytes(DType t, uint64_t numel);

}  // namespace qt
