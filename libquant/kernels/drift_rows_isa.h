// Internal to libquant/kernels/drift_rows.cpp: the AVX2 and AVX-512 F bodies of
// libquant/drift_rows.h. Call an ISA's function only when cpu_isa() reaches that ISA.
#pragma once

#include "libquant/drift_rows.h"

namespace qt::drift_rows_avx2 {
DriftGroup drift_group_bf16(const uint8_t* w, const uint8_t* codes, bool fp8, int64_t n, float s, float lim_s);
}  // namespace qt::drift_rows_avx2

namespace qt::drift_rows_avx512 {
DriftGroup drift_group_bf16(const uint8_t* w, const uint8_t* codes, bool fp8, int64_t n, float s, float lim_s);
}  // namespace qt::drift_rows_avx512
