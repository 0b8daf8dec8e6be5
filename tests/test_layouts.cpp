// Weight layouts (libquant/kernels/layouts.h): the TN view, pack-quantized <-> GPTQ orientation,
// and the Marlin repack -- round trips, two independent Marlin implementations agreeing bit for
// bit, and positions derived by hand from libquant/kernels/KERNELS.md §4.3 (closed form and the
// lane/fragment description of the CUDA kernel).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "libquant/kernels/layouts.h"
#include "libquant/pack.h"

namespace qt::kernels {
namespace {

std::vector<uint8_t> random_q(int64_t K, int64_t N, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (uint8_t& v : q) v = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
  return q;
}

TEST(TnLayout, RowMajorAndCublasColumnMajorViewsAddressTheSameElement) {
  TnLayout t{3, 5, 1};
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t k = 0; k < 5; ++k) EXPECT_EQ(t.offset(n, k), t.colmajor_offset(k, n));
  EXPECT_EQ(t.offset(2, 4), 14);
  EXPECT_EQ(t.describe_cublaslt(),
            "A (weight): rows=5 cols=3 ld=5 op=T; B (activations): rows=5 cols=M ld=5 op=N; "
            "D (output): rows=3 cols=M ld=3");
}

TEST(TnLayout, AlignmentCheckNamesEachViolatedRule) {
  EXPECT_EQ((TnLayout{4096, 4096, 1}).check_alignment(), "");
  EXPECT_EQ((TnLayout{24, 40, 1}).check_alignment(),
            "K*1 bytes = 40 is not a multiple of 16; N=24 is not a multiple of 16 (vLLM CUTLASS "
            "falls back to Triton)");
  EXPECT_EQ((TnLayout{12, 32, 1}).check_alignment(),
            "output row of N=12 elements is not 16-byte aligned; N=12 is not a multiple of 16 "
            "(vLLM CUTLASS falls back to Triton)");
}

TEST(TnLayout, PackIsTheIdentityOnCheckpointBytes) {
  std::vector<uint8_t> w = random_q(7, 9, 8, 1);
  EXPECT_EQ(tn_pack(w.data(), 7, 9, 1), w);
}

TEST(CtToGptq, TransposesTheWordMatrixAndRoundTrips) {
  // codes [N=3, K=16] int4; pack-quantized [3, 2] words; GPTQ [2, 3] with word (r, n) holding
  // q[8r + i][n] in nibble i (libquant/kernels/KERNELS.md §4.2).
  std::vector<int8_t> c(48);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<int8_t>(static_cast<int>(i * 5 % 16) - 8);
  std::vector<int32_t> ct = pack_int_codes(c.data(), 3, 16, 4);
  std::vector<int32_t> g = ct_to_gptq(ct.data(), 3, 16, 4);
  ASSERT_EQ(g.size(), 6u);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t n = 0; n < 3; ++n)
      for (int i = 0; i < 8; ++i) {
        const uint32_t w = static_cast<uint32_t>(g[static_cast<size_t>(r * 3 + n)]);
        EXPECT_EQ(static_cast<int>((w >> (4 * i)) & 0xF) - 8, c[static_cast<size_t>(n * 16 + 8 * r + i)]);
      }
  EXPECT_EQ(gptq_to_ct(g.data(), 3, 16, 4), ct);
}

TEST(Marlin, ClosedFormEqualsTheStepByStepPipeline) {
  for (int bits : {4, 8})
    for (auto [K, N] : {std::pair<int64_t, int64_t>{16, 64}, {48, 192}, {32, 128}}) {
      std::vector<uint8_t> q = random_q(K, N, bits, static_cast<uint32_t>(K * N + bits));
      EXPECT_EQ(marlin_repack(q.data(), K, N, bits), marlin_repack_pipeline(q.data(), K, N, bits))
          << bits << " bits K=" << K << " N=" << N;
    }
}

TEST(Marlin, UnpackInvertsRepackAndTheShapeIsKOver16ByNTimes16BitsOver32) {
  for (int bits : {4, 8}) {
    std::vector<uint8_t> q = random_q(64, 256, bits, 9);
    std::vector<int32_t> P = marlin_repack(q.data(), 64, 256, bits);
    EXPECT_EQ(static_cast<int64_t>(P.size()), 4 * marlin_packed_cols(256, bits));
    EXPECT_EQ(marlin_packed_cols(256, bits), bits == 4 ? 512 : 1024);  // [K/16, 2N] / [K/16, 4N]
    EXPECT_EQ(marlin_unpack(P.data(), 64, 256, bits), q);
  }
}

// Repacks a zero q [K, N] with a single value v at (k, n) and returns the one non-zero word's
// (index in the flattened output, word value).
std::pair<int64_t, uint32_t> single(int64_t K, int64_t N, int bits, int64_t k, int64_t n, uint8_t v) {
  std::vector<uint8_t> q(static_cast<size_t>(K * N), 0);
  q[static_cast<size_t>(k * N + n)] = v;
  std::vector<int32_t> P = marlin_repack(q.data(), K, N, bits);
  std::pair<int64_t, uint32_t> hit{-1, 0};
  for (size_t i = 0; i < P.size(); ++i)
    if (P[i] != 0) {
      EXPECT_EQ(hit.first, -1) << "more than one word changed";
      hit = {static_cast<int64_t>(i), static_cast<uint32_t>(P[i])};
    }
  return hit;
}

TEST(Marlin, FourBitPositionsMatchTheHandDerivation) {
  // K = 32, N = 128: rows of 2N = 256 words. Lane t owns k in {r, r+1, r+8, r+9} (r = 2(t%4)) at
  // n = t/4 and n + 8 of each 16-column sub-tile j; word nt*128 + 4t + j; nibbles
  // (r,n) (r+8,n) (r,n+8) (r+8,n+8) (r+1,n) (r+9,n) (r+1,n+8) (r+9,n+8).
  const int64_t K = 32, N = 128, row = 256;
  using P = std::pair<int64_t, uint32_t>;
  // Lane 0, sub-tile 0: the first word holds (0,0) (8,0) (0,8) (8,8) (1,0) (9,0) (1,8) (9,8).
  EXPECT_EQ(single(K, N, 4, 0, 0, 5), (P{0, 0x5u}));
  EXPECT_EQ(single(K, N, 4, 8, 0, 5), (P{0, 0x50u}));
  EXPECT_EQ(single(K, N, 4, 0, 8, 5), (P{0, 0x500u}));
  EXPECT_EQ(single(K, N, 4, 8, 8, 5), (P{0, 0x5000u}));
  EXPECT_EQ(single(K, N, 4, 1, 0, 5), (P{0, 0x50000u}));
  EXPECT_EQ(single(K, N, 4, 9, 8, 0xF), (P{0, 0xF0000000u}));
  // Sub-tile j = 1 of lane 0 is the next word: (0, 16) -> word 1, nibble 0.
  EXPECT_EQ(single(K, N, 4, 0, 16, 3), (P{1, 0x3u}));
  // Lane 5: r = 2, column t/4 = 1; sub-tile j = 2 -> n = 33, word 4*5 + 2 = 22.
  EXPECT_EQ(single(K, N, 4, 2, 33, 7), (P{22, 0x7u}));          // (r, n)      nibble 0
  EXPECT_EQ(single(K, N, 4, 10, 33, 7), (P{22, 0x70u}));        // (r+8, n)    nibble 1
  EXPECT_EQ(single(K, N, 4, 3, 41, 7), (P{22, 0x7000000u}));    // (r+1, n+8)  nibble 6
  // Lane 31: r = 6, column 7; (15, 15) = (r+9, n+8) -> word 124, nibble 7.
  EXPECT_EQ(single(K, N, 4, 15, 15, 1), (P{124, 0x10000000u}));
  // Second K-tile, second 64-column block: (16 + 2, 64 + 33) -> row 1, word 128 + 22.
  EXPECT_EQ(single(K, N, 4, 18, 97, 9), (P{row + 150, 0x9u}));
}

TEST(Marlin, EightBitPositionsMatchTheHandDerivation) {
  // 8 bits: words nt*256 + 8t + 2j + h; bytes (r, n+8h) (r+8, n+8h) (r+1, n+8h) (r+9, n+8h).
  const int64_t K = 32, N = 128, row = 512;
  using P = std::pair<int64_t, uint32_t>;
  EXPECT_EQ(single(K, N, 8, 0, 0, 0xAB), (P{0, 0xABu}));
  EXPECT_EQ(single(K, N, 8, 8, 0, 0xAB), (P{0, 0xAB00u}));
  EXPECT_EQ(single(K, N, 8, 1, 0, 0xAB), (P{0, 0xAB0000u}));
  EXPECT_EQ(single(K, N, 8, 9, 0, 0xAB), (P{0, 0xAB000000u}));
  EXPECT_EQ(single(K, N, 8, 0, 8, 0xCD), (P{1, 0xCDu}));
  // Lane 5 (r = 2, column 1), j = 2 (n = 33): word 40 + 4 = 44; (3, 41) = (r+1, n+8) -> word 45 byte 2.
  EXPECT_EQ(single(K, N, 8, 2, 33, 0x11), (P{44, 0x11u}));
  EXPECT_EQ(single(K, N, 8, 3, 41, 0x22), (P{45, 0x220000u}));
  EXPECT_EQ(single(K, N, 8, 18, 97, 0x33), (P{row + 256 + 44, 0x33u}));
}

TEST(Marlin, ShapeCheckNamesBothDimensions) {
  EXPECT_EQ(marlin_check_shape(4096, 11008), "");
  EXPECT_EQ(marlin_check_shape(40, 64), "K=40 is not a positive multiple of 16");
  EXPECT_EQ(marlin_check_shape(32, 96), "N=96 is not a positive multiple of 64");
  EXPECT_EQ(marlin_check_shape(8, 32),
            "K=8 is not a positive multiple of 16; N=32 is not a positive multiple of 64");
}

TEST(Marlin, SignedCodesGetTheBiasAndFp8BytesFollowVllmsInt32View) {
  // Signed [N=2, K=3] int4 codes -> q [3, 2] = code + 8, transposed.
  std::vector<int8_t> c = {-8, 0, 7, 1, -1, 3};
  EXPECT_EQ(marlin_q_from_signed_nk(c.data(), 2, 3, 4), (std::vector<uint8_t>{0, 9, 8, 7, 15, 11}));
  EXPECT_EQ(marlin_q_from_signed_nk(c.data(), 2, 3, 8),
            (std::vector<uint8_t>{120, 129, 128, 127, 135, 131}));
  // FP8: vLLM's pack_fp8_to_int32 views 4 consecutive K bytes of a row as one little-endian int32
  // ([N, K/4]) and transposes to the GPTQ [K/4, N]; unpacking those words as 8-bit GPTQ codes
  // (k = 4r + i at byte i) must give q.
  const int64_t N = 3, K = 8;
  std::vector<uint8_t> w = random_q(N, K, 8, 4);
  std::vector<uint8_t> q = marlin_q_from_fp8_nk(w.data(), N, K);
  for (int64_t r = 0; r < K / 4; ++r)
    for (int64_t n = 0; n < N; ++n) {
      uint32_t word = 0;
      for (int i = 0; i < 4; ++i) word |= static_cast<uint32_t>(w[static_cast<size_t>(n * K + 4 * r + i)]) << (8 * i);
      for (int i = 0; i < 4; ++i)
        EXPECT_EQ(q[static_cast<size_t>((4 * r + i) * N + n)], (word >> (8 * i)) & 0xFF);
    }
}

TEST(Marlin, ScaleGatherIsThe8x8TransposeOrTheSingleScalePermutation) {
  // Grouped: scale_perm[i*8 + j] = i + 8j -> out[1] = in[8], out[8] = in[1], out[63] = in[63].
  std::vector<int64_t> g = marlin_scale_gather(2, 128, true);
  EXPECT_EQ(g[1], 8);
  EXPECT_EQ(g[8], 1);
  EXPECT_EQ(g[9], 9);
  EXPECT_EQ(g[63], 63);
  EXPECT_EQ(g[64 + 1], 64 + 8);
  // Channel-wise: [0,1,8,9,16,17,24,25, 2,3,10,11,18,19,26,27, ...] per 32.
  std::vector<int64_t> s = marlin_scale_gather(1, 64, false);
  EXPECT_EQ(std::vector<int64_t>(s.begin(), s.begin() + 10), (std::vector<int64_t>{0, 1, 8, 9, 16, 17, 24, 25, 2, 3}));
  EXPECT_EQ(s[32 + 2], 32 + 8);
  // Both are permutations; scattering back through them restores the input.
  for (const auto& perm : {g, s}) {
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> iota(perm.size());
    std::iota(iota.begin(), iota.end(), 0);
    EXPECT_EQ(sorted, iota);
    std::vector<int64_t> in(perm.size()), out(perm.size()), back(perm.size());
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int64_t>(i * 37 % 1000);
    for (size_t e = 0; e < out.size(); ++e) out[e] = in[static_cast<size_t>(perm[e])];
    for (size_t e = 0; e < out.size(); ++e) back[static_cast<size_t>(perm[e])] = out[e];
    EXPECT_EQ(back, in);
  }
}

}  // namespace
}  // namespace qt::kernels
