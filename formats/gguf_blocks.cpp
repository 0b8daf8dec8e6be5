// ggml's quantized block types dequantized to f32 (ggml_dequantize in gguf.h).
//
// Dequantization mirrors ggml's reference (scalar, ggml-quants.c dequantize_row_*) one f32
// operation at a time, so results are bit-identical to ggml and to gguf-py's gguf.quants:
//   * scales stored as f16 (bf16) are widened to f32 exactly;
//   * quant codes and sub-scales (small integers) are converted to f32 exactly;
//   * every product is EXACT in f32: its factors' significands total at most 23 bits (Q6_K, the
//     widest: f16 scale <= 11 bits, |int8 sub-scale| <= 7 bits, |code| in [-32, 31] <= 5 bits),
//     so neither the association order of d*sc*q nor FMA contraction can change a product;
//   * the one rounding that remains is the final "+ m" / "- dmin*m" of the types with a min
//     (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K): one IEEE f32 add, round-to-nearest-even, as in ggml. We
//     still keep ggml's operation order and the project builds with -ffp-contract=off.
#include <cstdint>
#include <cstring>

#include "formats/gguf.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"

namespace qt {
namespace {

template <class T>
T load(const uint8_t* p) {  // unaligned little-endian load (the host is little-endian)
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

constexpr uint32_t QK_K = 256;  // super-block size of the k-quants

// ---- f16 / bf16 -> f32 ---------------------------------------------------------------------------
// f16/bf16 widen exactly to f32 (libquant/float_formats.h).
float half_to_f32(uint16_t h) { return f32_from_f16(h); }
float bf16_to_f32(uint16_t h) { return f32_from_bf16(h); }
float f16_at(const uint8_t* p) { return half_to_f32(load<uint16_t>(p)); }

// ---- block dequantizers ------------------------------------------------------------------------
// Each turns one block at `b` into block_size floats at `y`. Byte layouts are those of ggml's
// block_* structs (ggml-common.h); "(float)q" converts a small integer exactly.

void deq_q4_0(const uint8_t* b, float* y) {  // {f16 d; u8 qs[16]}: y = (q - 8) * d
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void deq_q4_1(const uint8_t* b, float* y) {  // {f16 d, m; u8 qs[16]}: y = q * d + m
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5: the 5th bit of element j (0..31) is bit j of the little-endian u32 qh.
void deq_q5_0(const uint8_t* b, float* y) {  // {f16 d; u8 qh[4]; u8 qs[16]}: y = (q - 16) * d
  const float d = f16_at(b);
  const uint32_t qh = load<uint32_t>(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) & 1u) << 4, h1 = ((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>(((qs[j] & 0x0F) | h0) - 16) * d;
    y[j + 16] = static_cast<float>(((qs[j] >> 4) | h1) - 16) * d;
  }
}

void deq_q5_1(const uint8_t* b, float* y) {  // {f16 d, m; u8 qh[4]; u8 qs[16]}: y = q * d + m
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint32_t qh = load<uint32_t>(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) & 1u) << 4, h1 = ((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>((qs[j] & 0x0F) | h0) * d + m;
    y[j + 16] = static_cast<float>((qs[j] >> 4) | h1) * d + m;
  }
}

void deq_q8_0(const uint8_t* b, float* y) {  // {f16 d; i8 qs[32]}: y = q * d
  const float d = f16_at(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin}: 16 sub-blocks of 16; sub-scale byte = (m << 4) | s.
// y = (d * s) * q - (dmin * m), q in 0..3.
void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  int is = 0;
  for (int n = 0; n < 2; ++n, q += 32) {    // two halves of 128, 32 bytes of codes each
    for (int shift = 0; shift < 8; shift += 2) {  // four 2-bit planes
      for (int half = 0; half < 2; ++half) {      // bytes 0..15 then 16..31
        const uint8_t sc = scales[is++];
        const float dl = d * static_cast<float>(sc & 0x0F);
        const float ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[half * 16 + l] >> shift) & 3) - ml;
      }
    }
  }
}

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 16 sub-blocks of 16 with 6-bit scales
// (low 4 bits: nibble k%8 of bytes 0..7 -- low nibbles first; high 2 bits: bits 2*(k/4) of byte
// 8 + k%4), stored offset by 32. q = 2-bit code - (high bit clear ? 4 : 0); y = (d*(s-32)) * q.
void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* sc = b + 96;
  const float d = f16_at(b + 108);
  int8_t scales[16];
  for (int k = 0; k < 16; ++k) {
    const int lo = k < 8 ? (sc[k] & 0x0F) : (sc[k - 8] >> 4);
    const int hi = (sc[8 + (k % 4)] >> (2 * (k / 4))) & 3;
    scales[k] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;  // the hmask bit for the current 2-bit plane (8 planes over the block)
  for (int n = 0; n < 2; ++n, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d * static_cast<float>(scales[is++]);
        for (int l = 0; l < 16; ++l) {
          const int i = half * 16 + l;
          const int v = ((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// The 6-bit (scale, min) pair j (0..7) of the 12-byte k-quant scale field (ggml get_scale_min_k4):
// j < 4: low 6 bits of bytes j and j+4; j >= 4: low nibble / high nibble of byte j+4 plus the top
// two bits of bytes j-4 and j.
inline void scale_min_k4(int j, const uint8_t* s, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32; each 32 bytes of qs hold two
// sub-blocks (low nibbles, then high nibbles). y = (d*sc) * q - (dmin*m).
void deq_q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* s = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0; j < 8; j += 2, q += 32) {
    uint8_t sc, m;
    scale_min_k4(j, s, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    scale_min_k4(j + 1, s, sc, m);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

// Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: as Q4_K plus a 5th bit: sub-block j
// takes bit j of qh[l]. y = (d*sc) * q - (dmin*m), q in 0..31.
void deq_q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* s = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + 48;
  for (int j = 0; j < 8; j += 2, q += 32) {
    uint8_t sc, m;
    scale_min_k4(j, s, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    scale_min_k4(j + 1, s, sc, m);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>((q[l] & 0x0F) | (((qh[l] >> j) & 1) << 4)) - m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * static_cast<float>((q[l] >> 4) | (((qh[l] >> (j + 1)) & 1) << 4)) - m2;
  }
}

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 16 sub-blocks of 16, q = 6-bit code - 32
// (low 4 bits from ql, high 2 from qh). Per 128-element half: element l + 32*k (k = 0..3) takes
// ql[l + 32*(k&1)] nibble k>>1 and qh[l] bits 2k..2k+1. y = (d * scale) * q.
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int n = 0; n < 2; ++n, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return deq_q4_0;
    case GgmlType::Q4_1: return deq_q4_1;
    case GgmlType::Q5_0: return deq_q5_0;
    case GgmlType::Q5_1: return deq_q5_1;
    case GgmlType::Q8_0: return deq_q8_0;
    case GgmlType::Q2_K: return deq_q2_k;
    case GgmlType::Q3_K: return deq_q3_k;
    case GgmlType::Q4_K: return deq_q4_k;
    case GgmlType::Q5_K: return deq_q5_k;
    case GgmlType::Q6_K: return deq_q6_k;
    default: return nullptr;
  }
}

// Below this many blocks / elements a parallel region costs more than it saves.
constexpr int64_t kParallelMinBlocks = 2048;
constexpr int64_t kParallelMinElems = 1 << 18;

}  // namespace

bool ggml_dequantize(GgmlType type, const uint8_t* src, uint64_t n, float* dst) {
  const int64_t ne = static_cast<int64_t>(n);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return true;
    case GgmlType::F16:
#pragma omp parallel for schedule(static) if (ne >= kParallelMinElems)
      for (int64_t i = 0; i < ne; ++i) dst[i] = half_to_f32(load<uint16_t>(src + 2 * i));
      return true;
    case GgmlType::BF16:
#pragma omp parallel for schedule(static) if (ne >= kParallelMinElems)
      for (int64_t i = 0; i < ne; ++i) dst[i] = bf16_to_f32(load<uint16_t>(src + 2 * i));
      return true;
    default: break;
  }
  BlockFn fn = block_fn(type);
  if (!fn) return false;
  const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(type));
  QT_ASSERT(ti && n % ti->block_size == 0);
  const int64_t nb = static_cast<int64_t>(n / ti->block_size);
  const uint64_t bs = ti->block_size, ts = ti->type_size;
#pragma omp parallel for schedule(static) if (nb >= kParallelMinBlocks)
  for (int64_t i = 0; i < nb; ++i) fn(src + static_cast<uint64_t>(i) * ts, dst + static_cast<uint64_t>(i) * bs);
  return true;
}

}  // namespace qt
