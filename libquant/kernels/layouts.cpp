#include "libquant/kernels/layouts.h"

#include <array>

#include "libquant/error.h"

namespace qt::kernels {

// ---- TN ----------------------------------------------------------------------------------------

std::string TnLayout::describe_cublaslt() const {
  const std::string k = std::to_string(K), n = std::to_string(N);
  return "A (weight): rows=" + k + " cols=" + n + " ld=" + k + " op=T; B (activations): rows=" +
         k + " cols=M ld=" + k + " op=N; D (output): rows=" + n + " cols=M ld=" + n;
}

std::string TnLayout::check_alignment(int out_bytes) const {
  std::string s;
  auto add = [&](const std::string& m) { s += (s.empty() ? "" : "; ") + m; };
  if ((K * elem_bytes) % 16 != 0) add("K*" + std::to_string(elem_bytes) + " bytes = " +
                                      std::to_string(K * elem_bytes) + " is not a multiple of 16");
  if ((N * out_bytes) % 16 != 0) add("output row of N=" + std::to_string(N) + " elements is not 16-byte aligned");
  if (N % 16 != 0) add("N=" + std::to_string(N) + " is not a multiple of 16 (vLLM CUTLASS falls back to Triton)");
  return s;
}

std::vector<uint8_t> tn_pack(const uint8_t* w, int64_t N, int64_t K, int elem_bytes) {
  return std::vector<uint8_t>(w, w + N * K * elem_bytes);
}

// ---- CT <-> GPTQ -------------------------------------------------------------------------------

namespace {
std::vector<int32_t> transpose_words(const int32_t* in, int64_t rows, int64_t cols) {
  std::vector<int32_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(c * rows + r)] = in[r * cols + c];
  return out;
}
}  // namespace

std::vector<int32_t> ct_to_gptq(const int32_t* ct, int64_t N, int64_t K, int bits) {
  QT_ASSERT((bits == 4 || bits == 8) && K % (32 / bits) == 0);
  return transpose_words(ct, N, K / (32 / bits));  // [N, K/pack] -> [K/pack, N]
}

std::vector<int32_t> gptq_to_ct(const int32_t* g, int64_t N, int64_t K, int bits) {
  QT_ASSERT((bits == 4 || bits == 8) && K % (32 / bits) == 0);
  return transpose_words(g, K / (32 / bits), N);
}

// ---- Marlin ------------------------------------------------------------------------------------

int64_t marlin_packed_cols(int64_t N, int bits) { return N * 16 * bits / 32; }

std::string marlin_check_shape(int64_t K, int64_t N) {
  std::string s;
  if (K < 16 || K % 16 != 0) s = "K=" + std::to_string(K) + " is not a positive multiple of 16";
  if (N < 64 || N % 64 != 0)
    s += (s.empty() ? "" : "; ") + ("N=" + std::to_string(N) + " is not a positive multiple of 64");
  return s;
}

namespace {

// Where element (k, n) of q goes: word index within row k/16, and the bit shift in that word.
// Derived from the closed form in the header, inverted:
//   k = k0 + kin, n = 64nt + 16j + nin; nin = 8*half + t/4; kin in {r, r+1, r+8, r+9}, r = 2(t%4)
struct Place {
  int64_t word;
  int shift;
};

Place marlin_place(int64_t k, int64_t n, int bits) {
  const int64_t kin = k % 16, nt = n / 64, j = (n % 64) / 16, nin = n % 16;
  const int64_t half = nin / 8;             // 0: column n, 1: column n+8 of the lane's pair
  const int64_t hi8 = kin >= 8 ? 1 : 0;     // row r+8 / r+9
  const int64_t odd = kin % 2;              // row r+1 / r+9
  const int64_t t = 4 * (nin % 8) + (kin % 8) / 2;  // lane: t/4 = nin % 8, t%4 = (kin%8)/2
  if (bits == 4) {
    // nibble s: s = 4*odd + 2*half + hi8  (s=0 (r,n) 1 (r+8,n) 2 (r,n+8) 3 (r+8,n+8) 4 (r+1,n) ...)
    return {nt * 128 + 4 * t + j, static_cast<int>(4 * (4 * odd + 2 * half + hi8))};
  }
  // 8 bits: word 2j + half; byte b = 2*odd + hi8  (bytes (r), (r+8), (r+1), (r+9))
  return {nt * 256 + 8 * t + 2 * j + half, static_cast<int>(8 * (2 * odd + hi8))};
}

void check_bits(int bits) { QT_ASSERT(bits == 4 || bits == 8); }

}  // namespace

std::vector<int32_t> marlin_repack(const uint8_t* q, int64_t K, int64_t N, int bits) {
  check_bits(bits);
  QT_ASSERT(marlin_check_shape(K, N).empty());
  const int64_t cols = marlin_packed_cols(N, bits);
  const uint32_t mask = (1u << bits) - 1u;
  std::vector<uint32_t> out(static_cast<size_t>((K / 16) * cols), 0u);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const uint32_t v = q[k * N + n];
      QT_ASSERT(v <= mask);
      const Place p = marlin_place(k, n, bits);
      out[static_cast<size_t>((k / 16) * cols + p.word)] |= v << p.shift;
    }
  return std::vector<int32_t>(out.begin(), out.end());
}

std::vector<uint8_t> marlin_unpack(const int32_t* P, int64_t K, int64_t N, int bits) {
  check_bits(bits);
  QT_ASSERT(marlin_check_shape(K, N).empty());
  const int64_t cols = marlin_packed_cols(N, bits);
  const uint32_t mask = (1u << bits) - 1u;
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const Place p = marlin_place(k, n, bits);
      const uint32_t w = static_cast<uint32_t>(P[(k / 16) * cols + p.word]);
      q[static_cast<size_t>(k * N + n)] = static_cast<uint8_t>((w >> p.shift) & mask);
    }
  return q;
}

std::vector<int32_t> marlin_repack_pipeline(const uint8_t* q, int64_t K, int64_t N, int bits) {
  check_bits(bits);
  QT_ASSERT(marlin_check_shape(K, N).empty());
  // Step 1, tile: row kt of T lists the 16x16 tiles of K-strip kt left to right, each tile
  // row-major: T[kt][256*nt16 + 16*kin + nin] = q[16kt + kin][16nt16 + nin].
  const int64_t rows = K / 16, rowlen = 16 * N;
  std::vector<uint8_t> T(static_cast<size_t>(rows * rowlen));
  for (int64_t kt = 0; kt < rows; ++kt)
    for (int64_t nt16 = 0; nt16 < N / 16; ++nt16)
      for (int64_t kin = 0; kin < 16; ++kin)
        for (int64_t nin = 0; nin < 16; ++nin)
          T[static_cast<size_t>(kt * rowlen + 256 * nt16 + 16 * kin + nin)] =
              q[(16 * kt + kin) * N + 16 * nt16 + nin];

  // Step 2, the 1024-long lane permutation, then the per-group interleave.
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < 32; ++i) {
    std::vector<int64_t> perm1;
    const int64_t col = i / 4;
    for (int64_t block = 0; block < 2; ++block)
      for (int64_t row : {2 * (i % 4), 2 * (i % 4) + 1, 2 * (i % 4 + 4), 2 * (i % 4 + 4) + 1})
        perm1.push_back(16 * row + col + 8 * block);
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t p : perm1) perm.push_back(p + 256 * j);
  }
  const std::vector<int64_t> inter = bits == 4 ? std::vector<int64_t>{0, 2, 4, 6, 1, 3, 5, 7}
                                               : std::vector<int64_t>{0, 2, 1, 3};
  const int64_t g = static_cast<int64_t>(inter.size());
  std::vector<int64_t> perm2(perm.size());
  for (size_t c = 0; c < perm.size(); ++c) {
    const int64_t grp = static_cast<int64_t>(c) / g, w = static_cast<int64_t>(c) % g;
    perm2[c] = perm[static_cast<size_t>(grp * g + inter[static_cast<size_t>(w)])];
  }
  // Gather every 1024-element chunk of each row through perm2.
  std::vector<uint8_t> R(T.size());
  for (int64_t kt = 0; kt < rows; ++kt)
    for (int64_t ch = 0; ch < rowlen / 1024; ++ch)
      for (int64_t c = 0; c < 1024; ++c)
        R[static_cast<size_t>(kt * rowlen + ch * 1024 + c)] =
            T[static_cast<size_t>(kt * rowlen + ch * 1024 + perm2[static_cast<size_t>(c)])];

  // Step 3, pack: pf = 32/bits consecutive values per word, value i at bits*i.
  const int64_t pf = 32 / bits, cols = rowlen / pf;
  std::vector<int32_t> P(static_cast<size_t>(rows * cols));
  for (int64_t kt = 0; kt < rows; ++kt)
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t w = 0;
      for (int64_t i = 0; i < pf; ++i)
        w |= static_cast<uint32_t>(R[static_cast<size_t>(kt * rowlen + pf * c + i)]) << (bits * i);
      P[static_cast<size_t>(kt * cols + c)] = static_cast<int32_t>(w);
    }
  return P;
}

std::vector<uint8_t> marlin_q_from_signed_nk(const int8_t* codes, int64_t N, int64_t K, int bits) {
  check_bits(bits);
  const int bias = 1 << (bits - 1);
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int v = codes[n * K + k] + bias;
      QT_ASSERT(v >= 0 && v < (1 << bits));
      q[static_cast<size_t>(k * N + n)] = static_cast<uint8_t>(v);
    }
  return q;
}

std::vector<uint8_t> marlin_q_from_fp8_nk(const uint8_t* codes, int64_t N, int64_t K) {
  std::vector<uint8_t> q(static_cast<size_t>(K * N));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) q[static_cast<size_t>(k * N + n)] = codes[n * K + k];
  return q;
}

std::vector<int64_t> marlin_scale_gather(int64_t rows, int64_t N, bool grouped) {
  QT_ASSERT(N % 64 == 0);
  std::vector<int64_t> perm;
  if (grouped) {
    for (int64_t i = 0; i < 8; ++i)
      for (int64_t j = 0; j < 8; ++j) perm.push_back(i + 8 * j);
  } else {
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j : {0, 1, 8, 9, 16, 17, 24, 25}) perm.push_back(2 * i + j);
  }
  const int64_t len = static_cast<int64_t>(perm.size()), total = rows * N;
  std::vector<int64_t> g(static_cast<size_t>(total));
  for (int64_t e = 0; e < total; ++e) g[static_cast<size_t>(e)] = (e / len) * len + perm[static_cast<size_t>(e % len)];
  return g;
}

}  // namespace qt::kernels
