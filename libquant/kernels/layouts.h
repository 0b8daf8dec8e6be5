// Weight layouts the kernels consume, each with its exact bit layout and an inverse, so every
// transform can be checked on a CPU by a round trip (libquant/kernels/KERNELS.md §4, §5.1).
//
// Notation: W is the checkpoint weight [N, K] (N = out features, K = in features), row-major.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qt::kernels {

// ---- 1. "TN" row-major [N, K]: cuBLASLt FP8/INT8 and vLLM CUTLASS (KERNELS.md §4.1) -----------
//
// The checkpoint bytes ARE the kernel-native layout; no byte moves. Element (n, k) lives at byte
// offset (n * K + k) * elem_bytes. cuBLASLt (column-major) sees the same buffer as a K x N
// matrix with leading dimension K, used with TRANSA = OP_T (so op(A) is N x K), activations
// X [M, K] as a K x M matrix (ld K, OP_N), and Y [M, N] as an N x M matrix (ld N).
struct TnLayout {
  int64_t N = 0, K = 0;
  int elem_bytes = 1;

  // Row-major offset of element (n, k) in elements.
  int64_t offset(int64_t n, int64_t k) const { return n * K + k; }
  // The same element addressed as cuBLASLt's column-major A (rows = K, cols = N, ld = K):
  // A(row, col) at row + col * ld. Always equals offset(n, k) with row = k, col = n.
  int64_t colmajor_offset(int64_t row, int64_t col) const { return row + col * K; }
  // "A: (type, rows=K, cols=N, ld=K) op T; B: (type, K, M, K) op N; D: (N, M, N)".
  std::string describe_cublaslt() const;
  // Alignment problems for FP8 cuBLASLt / vLLM CUTLASS (K % 16, N % 16 for CUTLASS, N % 8 for a
  // BF16 D), "" if none. `out_bytes` = size of an output element (2 for BF16).
  std::string check_alignment(int out_bytes = 2) const;
};
// Identity "pack" (the TN layout is the checkpoint layout): returns a copy of the bytes.
std::vector<uint8_t> tn_pack(const uint8_t* w, int64_t N, int64_t K, int elem_bytes);

// ---- 2. compressed-tensors pack-quantized and GPTQ orientation (NUMERICS.md §5, KERNELS.md §4.2)
//
// pack-quantized: int32 [N, ceil(K*b/32)], element k of row n at word k*b/32, bits (k*b)%32,
// stored as code + 2^(b-1) (see libquant/pack.h, which implements it).
// GPTQ orientation: int32 [K/pack, N], word (r, n) holds q[pack*r + i, n] at bits [b*i, b*i+b),
// same bias. For K % pack == 0 the word (n, r) of pack-quantized IS the word (r, n) of GPTQ, so
// the conversion is a transpose of the word matrix (vLLM: permute_param_layout_).
std::vector<int32_t> ct_to_gptq(const int32_t* ct_words, int64_t N, int64_t K, int bits);
std::vector<int32_t> gptq_to_ct(const int32_t* gptq_words, int64_t N, int64_t K, int bits);

// ---- 3. Marlin (KERNELS.md §4.3; vLLM gptq_marlin_repack, 16-bit-activation variant) ----------
//
// Input q [K, N] unsigned codes (GPTQ orientation, unpacked): int4 = code + 8 (uint4b8), int8 =
// code + 128 (uint8b128), FP8 = the E4M3 byte. Requires K % 16 == 0 and N % 64 == 0.
// Output int32 P [K/16, N * 16 * bits / 32] ([K/16, 2N] for 4 bits, [K/16, 4N] for 8 bits).
//
// Closed form (t = lane 0..31, j = 16-column sub-tile 0..3, kt = K-tile, nt = 64-column block,
// r = 2*(t%4), n = 64*nt + 16*j + t/4, k0 = 16*kt):
//   4 bits: word nt*128 + 4*t + j of row kt; nibble s (bits 4s..4s+3) holds
//           s=0 (k0+r, n)   1 (k0+r+8, n)   2 (k0+r, n+8)   3 (k0+r+8, n+8)
//           s=4 (k0+r+1, n) 5 (k0+r+9, n)   6 (k0+r+1, n+8) 7 (k0+r+9, n+8)
//   8 bits: words nt*256 + 8*t + 2*j + h (h = 0, 1) of row kt; bytes 0..3 hold
//           (k0+r, n+8h), (k0+r+8, n+8h), (k0+r+1, n+8h), (k0+r+9, n+8h)
// i.e. lane t owns the B fragment of mma.m16n8k16: k in {2(t%4), +1, +8, +9} at n = t/4 of each
// n8 half.
int64_t marlin_packed_cols(int64_t N, int bits);  // N * 16 * bits / 32
// "" if (K, N) can be repacked, else why not.
std::string marlin_check_shape(int64_t K, int64_t N);
// Production transform (closed form above).
std::vector<int32_t> marlin_repack(const uint8_t* q_kn, int64_t K, int64_t N, int bits);
// Second, independent implementation following vLLM's Python reference step by step (tile into
// 16x16, gather each 1024-element chunk through the lane permutation, pack along the row);
// tests assert it equals marlin_repack bit for bit.
std::vector<int32_t> marlin_repack_pipeline(const uint8_t* q_kn, int64_t K, int64_t N, int bits);
// Inverse: recovers q [K, N].
std::vector<uint8_t> marlin_unpack(const int32_t* P, int64_t K, int64_t N, int bits);
// Convenience inputs from checkpoint orientation [N, K]:
//   signed int4/int8 codes (one per byte) -> q [K, N] with the +8 / +128 bias;
//   FP8 E4M3 bytes -> q [K, N] (vLLM pack_fp8_to_int32 + transpose; then repack with bits = 8).
std::vector<uint8_t> marlin_q_from_signed_nk(const int8_t* codes, int64_t N, int64_t K, int bits);
std::vector<uint8_t> marlin_q_from_fp8_nk(const uint8_t* codes, int64_t N, int64_t K);

// Marlin scale permutation (vLLM marlin_permute_scales): scales s [rows, N] row-major, with
// rows = K / group (grouped) or 1 (channel-wise). Grouped: each run of 64 consecutive elements
// is gathered through scale_perm[i*8 + j] = i + 8j (an 8x8 transpose); channel-wise: each run of
// 32 through scale_perm_single = [2i + j for i in 0..3 for j in (0,1,8,9,16,17,24,25)].
// Returns the gather index g: out[e] = in[g[e]] (apply to scales of any dtype). N % 64 == 0.
std::vector<int64_t> marlin_scale_gather(int64_t rows, int64_t N, bool grouped);

}  // namespace qt::kernels
