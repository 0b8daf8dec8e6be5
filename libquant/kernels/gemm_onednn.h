// The bf16 GEMM through oneDNN's matmul primitive (libdnnl; internal to libquant). This is the
// path by which the calibration forward reaches AMX-BF16 tiles: oneDNN generates its AMX kernels at
// run time (brgemm, "brg:avx512_core_amx_bf16"), and on CPUs without AMX its AVX512-BF16 ones
// ("brg:avx512_core_bf16"). gemm_f32.cpp calls it per task of its fixed task grid instead of its
// own micro-kernel; everything around the product (x rounded to bf16, bias, residual, GLU, the
// scatter into outputs) stays gemm_f32.cpp's.
//
// Numerics: the operands are the same bf16 values as the own bf16 path (bf16_round of W and x),
// each product of two bf16 is exact in f32, and oneDNN sums them in f32 in an order of its own
// choosing (K blocks, vdpbf16ps or TDPBF16PS pairs), which is not the own kernel's documented
// chain (measured: most outputs differ in the last bits). So the result is within the bound of
// gemm.h's bf16 section of the f32 reference, and within 2 K 2^-24 sum_k |x_k W_k| of the own bf16
// kernel's result (both are f32 sums of the same exact products; tests check both bounds).
// Determinism: a product's summation order is fixed by the primitive, and the primitive depends
// only on the block shape (rows, K, columns, strides) and the CPU: every primitive is created with
// OpenMP limited to one thread, and every call runs on one thread (inside the caller's parallel
// region, or with the thread limit set to one), so oneDNN never splits K between threads. The
// task grid of gemm_f32.cpp does not depend on the thread count, so the output is bit-identical at
// any thread count on the same machine (test_gemm_onednn), though not across CPUs or oneDNN
// versions; the manifest records the implementation (calibration.forward.isa).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qt::kernels::onednn {

// Whether this build links oneDNN (CMake QTOOL_ONEDNN).
bool built();
// Whether built() and oneDNN has a bf16 matmul on this CPU (it needs AVX-512: none on AVX2-only
// CPUs, nor under ONEDNN_MAX_CPU_ISA=AVX2). Everything below needs it.
bool available();

// The weights of one Linear in oneDNN's own blocked bf16 layout, one block per `block_cols`
// consecutive columns (the last block may be narrower). Owned by the PackedLinear (shared_ptr so
// that PackedLinear stays copyable; never modified after pack()).
struct Weights;

// Packs the column slots `rows` (row[n]: the n-th output's K weights, f32, or nullptr for a zero
// column; rows.size() a multiple of 16) rounded to bf16 (bf16_round) into `w`, reusing its memory
// when its capacity suffices (a forward pass repacks every layer into the same Weights).
// Parallel over blocks with `threads` OpenMP threads; the result does not depend on it.
void pack(std::shared_ptr<Weights>& w, const std::vector<const float*>& rows, int64_t in, int64_t block_cols,
          int threads);

// Creates (once per shape, process-wide cache) the primitive for `rows` x-rows at row stride `ldx`
// (bf16 elements, even, >= K; x[r][K] must be 0 for an odd K) and output row stride `ldc` (floats). Call outside
// parallel regions before block_product with these arguments.
void prepare(const Weights& w, int64_t rows, int64_t ldx, int64_t ldc);

// acc[r * ldc + j] = sum_k x[r * ldx + k] * W[block * block_cols + j][k] (oneDNN's order) for
// r < rows, j < block_cols (zero past the slots); x is bf16 (row-major); acc is overwritten. Runs on the
// calling thread only; prepare(w, rows, ldx, ldc) must have been called. Thread-safe.
void block_product(const Weights& w, int64_t block, const uint16_t* x, int64_t ldx, int64_t rows, float* acc,
                   int64_t ldc);

// The number of column blocks of `w` (each block_cols wide: the last one is padded with zero
// columns, and K with a zero to even, so that every block runs oneDNN's fast brgemm kernels).
int64_t blocks(const Weights& w);

// oneDNN's implementation name of every primitive created so far (tests: all of them must be
// impl_name(), i.e. no shape fell back to a slower implementation).
std::vector<std::string> impls_in_use();

// oneDNN's name for the implementation it picks for a bf16 matmul on this CPU, e.g.
// "brg:avx512_core_amx_bf16", "brg:avx512_core_bf16", "gemm:jit" ("" when not available()).
const std::string& impl_name();

}  // namespace qt::kernels::onednn
