#include "libquant/dtype.h"

#include <array>

namespace qt {
namespace {
struct Info { DType t; const char* name; const char* short_name; int bits; bool is_float; };
// Order must match the enum (checked by a static loop in tests: DType.TableMatchesEnumOrder).
constexpr std::array<Info, kNumDTypes> kInfo = {{
    {DType::BOOL, "BOOL", "bool", 8, false},
    {DType::F4, "F4", "fp4", 4, true},
    {DType::F6_E2M3, "F6_E2M3", "fp6_e2m3", 6, true},
    {DType::F6_E3M2, "F6_E3M2", "fp6_e3m2", 6, true},
    {DType::U8, "U8", "uint8", 8, false},
    {DType::I8, "I8", "int8", 8, false},
    {DType::F8_E5M2, "F8_E5M2", "fp8_e5m2", 8, true},
    {DType::F8_E4M3, "F8_E4M3", "fp8", 8, true},
    {DType::F8_E8M0, "F8_E8M0", "e8m0", 8, true},
    {DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", "fp8_e4m3fnuz", 8, true},
    {DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", "fp8_e5m2fnuz", 8, true},
    {DType::I16, "I16", "int16", 16, false},
    {DType::U16, "U16", "uint16", 16, false},
    {DType::F16, "F16", "f16", 16, true},
    {DType::BF16, "BF16", "bf16", 16, true},
    {DType::I32, "I32", "int32", 32, false},
    {DType::U32, "U32", "uint32", 32, false},
    {DType::F32, "F32", "f32", 32, true},
    {DType::C64, "C64", "c64", 64, false},
    {DType::F64, "F64", "f64", 64, true},
    {DType::I64, "I64", "int64", 64, false},
    {DType::U64, "U64", "uint64", 64, false},
}};
const Info& info(DType t) { return kInfo[static_cast<size_t>(t)]; }
}  // namespace

int dtype_bits(DType t) { return info(t).bits; }
std::string_view dtype_name(DType t) { return info(t).name; }
std::string_view dtype_short_name(DType t) { return info(t).short_name; }
bool dtype_is_float(DType t) { return info(t).is_float; }

std::optional<DType> dtype_from_name(std::string_view s) {
  for (const Info& i : kInfo)
    if (s == i.name) return i.t;
  return std::nullopt;
}

std::optional<uint64_t> dtype_nbytes(DType t, uint64_t numel) {
  const uint64_t bits = static_cast<uint64_t>(dtype_bits(t));
  if (numel != 0 && bits > UINT64_MAX / numel) return std::nullopt;
  const uint64_t total = bits * numel;
  if (total % 8 != 0) return std::nullopt;
  return total / 8;
}

}  // namespace qt
