// oneDNN matmul as the bf16 GEMM's block product (gemm_onednn.h). Built only with oneDNN
// (QTOOL_HAVE_ONEDNN); otherwise built() and available() are false and nothing else may be called.
#include "libquant/kernels/gemm_onednn.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>

#include "libquant/error.h"
#include "libquant/gemm.h"
#include "libquant/parallel.h"

#ifdef QTOOL_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qt::kernels::onednn {

#ifndef QTOOL_HAVE_ONEDNN

struct Weights {};
bool built() { return false; }
bool available() { return false; }
void pack(std::shared_ptr<Weights>&, const std::vector<const float*>&, int64_t, int64_t, int) { QT_ASSERT(!"oneDNN not built"); }
void prepare(const Weights&, int64_t, int64_t, int64_t) { QT_ASSERT(!"oneDNN not built"); }
void block_product(const Weights&, int64_t, const uint16_t*, int64_t, int64_t, float*, int64_t) {
  QT_ASSERT(!"oneDNN not built");
}
int64_t blocks(const Weights&) { return 0; }
const std::string& impl_name() {
  static const std::string none;
  return none;
}
std::vector<std::string> impls_in_use() { return {}; }

#else

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

// x rows the blocked weight layout is chosen for (gemm_f32.cpp's task height); primitives for
// other row counts are created for that same layout.
constexpr int64_t kLayoutRows = 96;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// OpenMP limited to one thread on the calling thread while it lives (the nthreads ICV is the
// calling task's own, so other threads are unaffected): oneDNN sizes its thread partition, and
// whether it splits K, from omp_get_max_threads() when a primitive is created and run.
class OneThread {
 public:
#ifdef _OPENMP
  OneThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved_); }
 private:
  int saved_;
#endif
};

[[noreturn]] void fail(const char* what, const dnnl::error& e) {
  throw std::runtime_error(std::string("oneDNN: ") + what + ": " + e.what());
}

struct Matmul {
  dnnl::matmul prim;
  std::string impl;  // oneDNN's implementation name
  memory::desc x_md, w_md, acc_md;
  size_t scratch_bytes = 0;
};

std::mutex g_mu;
// (rows, K, columns, ldx, ldc) -> primitive; (K, columns) -> weight layout and plain -> blocked
// reorder. A model has a handful of shapes, so these stay small.
std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>, Matmul> g_matmuls;
struct Layout {
  memory::desc plain, blocked;
  dnnl::reorder reorder;
};
std::map<std::pair<int64_t, int64_t>, Layout> g_layouts;

memory::desc x_desc(int64_t rows, int64_t K, int64_t ldx) { return memory::desc({rows, K}, Dt::bf16, {ldx, 1}); }
memory::desc acc_desc(int64_t rows, int64_t cols, int64_t ldc) { return memory::desc({rows, cols}, Dt::f32, {ldc, 1}); }

dnnl::primitive_attr attributes() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per-thread buffers (see Scratch)
  return a;
}

// g_mu held. The blocked layout oneDNN prefers for [K, cols] bf16 weights, and the reorder into
// it from the plain layout (column n's K values contiguous: row n of W[N, K]).
const Layout& layout_locked(int64_t K, int64_t cols) {
  auto it = g_layouts.find({K, cols});
  if (it != g_layouts.end()) return it->second;
  OneThread one;
  try {
    const int64_t ldx = (K + 1) / 2 * 2;
    memory::desc w_any({K, cols}, Dt::bf16, Tag::any);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_desc(kLayoutRows, K, ldx), w_any, acc_desc(kLayoutRows, cols, cols)),
                                    attributes(), engine());
    Layout l;
    l.plain = memory::desc({K, cols}, Dt::bf16, Tag::ba);
    l.blocked = pd.weights_desc();
    l.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), l.plain, engine(), l.blocked));
    return g_layouts.emplace(std::make_pair(K, cols), std::move(l)).first->second;
  } catch (const dnnl::error& e) {
    fail("bf16 weight layout", e);
  }
}

const Matmul& matmul_locked(int64_t rows, int64_t K, int64_t cols, int64_t ldx, int64_t ldc) {
  const auto key = std::make_tuple(rows, K, cols, ldx, ldc);
  auto it = g_matmuls.find(key);
  if (it != g_matmuls.end()) return it->second;
  const Layout& l = layout_locked(K, cols);
  OneThread one;
  try {
    Matmul m;
    m.x_md = x_desc(rows, K, ldx);
    m.w_md = l.blocked;
    m.acc_md = acc_desc(rows, cols, ldc);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(m.x_md, m.w_md, m.acc_md), attributes(), engine());
    m.scratch_bytes = pd.scratchpad_desc().get_size();
    m.impl = pd.impl_info_str();
    m.prim = dnnl::matmul(pd);
    return g_matmuls.emplace(key, std::move(m)).first->second;
  } catch (const dnnl::error& e) {
    fail("bf16 matmul", e);
  }
}

// A primitive prepare() created (std::map references stay valid while others are added).
const Matmul& matmul_prepared(int64_t rows, int64_t K, int64_t cols, int64_t ldx, int64_t ldc) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_matmuls.find(std::make_tuple(rows, K, cols, ldx, ldc));
  QT_ASSERT(it != g_matmuls.end());
  return it->second;
}

// 64-byte aligned bytes, grown on demand, never shrunk.
struct AlignedBytes {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> p;
  size_t cap = 0;
  uint8_t* reserve(size_t n) {
    if (n > cap) {
      const size_t rounded = (n + 63) / 64 * 64;
      p.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded)));
      QT_ASSERT(p);
      cap = rounded;
    }
    return p.get();
  }
};

// Per thread: oneDNN's scratch space (user scratchpad mode) and a stream (streams are not
// shareable between threads).
struct PerThread {
  AlignedBytes scratch;
  std::unique_ptr<dnnl::stream> stream;
  dnnl::stream& get_stream() {
    if (!stream) stream = std::make_unique<dnnl::stream>(engine());
    return *stream;
  }
};
thread_local PerThread t_state;

}  // namespace

struct Weights {
  int64_t K = 0, cols = 0, block_cols = 0;
  std::vector<size_t> offset;   // per block (each block_cols wide), bytes into data (64-aligned)
  AlignedBytes data;
};

bool built() { return true; }
bool available() { return !impl_name().empty(); }

int64_t blocks(const Weights& w) { return static_cast<int64_t>(w.offset.size()); }

std::vector<std::string> impls_in_use() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<std::string> v;
  for (const auto& [key, m] : g_matmuls)
    if (std::find(v.begin(), v.end(), m.impl) == v.end()) v.push_back(m.impl);
  return v;
}

void pack(std::shared_ptr<Weights>& w, const std::vector<const float*>& rows, int64_t in, int64_t block_cols,
          int threads) {
  QT_ASSERT(in > 0 && block_cols > 0 && !rows.empty());
  if (!w) w = std::make_shared<Weights>();
  Weights& W = *w;
  // K even and every block full width (zero columns past the slots): oneDNN's brgemm kernels
  // decline odd K and narrow blocks, and its fallback (gemm:jit) converts bf16 element by element,
  // measured ~70x slower on the real SmolLM2 (its 576 = 4 x 128 + 64 columns).
  W.K = (in + 1) / 2 * 2;
  W.cols = static_cast<int64_t>(rows.size());
  W.block_cols = block_cols;
  const int64_t nb = (W.cols + block_cols - 1) / block_cols;
  W.offset.assign(static_cast<size_t>(nb), 0);
  const Layout* lay = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    lay = &layout_locked(W.K, block_cols);
  }
  const size_t block_bytes = (lay->blocked.get_size() + 63) / 64 * 64;
  for (int64_t b = 0; b < nb; ++b) W.offset[static_cast<size_t>(b)] = static_cast<size_t>(b) * block_bytes;
  const size_t total = static_cast<size_t>(nb) * block_bytes;
  uint8_t* base = W.data.reserve(total);
  const int nth = resolve_threads(threads);
  (void)nth;
  std::string error;  // an exception must not leave the OpenMP region: the first is rethrown after it
#pragma omp parallel num_threads(nth) if (nb > 1 && W.cols * in >= (int64_t{1} << 18))
  {
    OneThread one;  // the reorder runs on this thread only
    std::vector<uint16_t> plain;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t width = block_cols, K = W.K;
      plain.resize(static_cast<size_t>(width * K));
      for (int64_t j = 0; j < width; ++j) {
        const int64_t slot = b * block_cols + j;
        const float* src = slot < W.cols ? rows[static_cast<size_t>(slot)] : nullptr;
        uint16_t* dst = plain.data() + j * K;
        if (src) bf16_round_row(src, dst, in), std::fill(dst + in, dst + K, uint16_t{0});
        else std::memset(dst, 0, sizeof(uint16_t) * static_cast<size_t>(K));
      }
      const Layout& l = *lay;
      try {
        memory from(l.plain, engine(), plain.data());
        memory to(l.blocked, engine(), base + W.offset[static_cast<size_t>(b)]);
        dnnl::stream& s = t_state.get_stream();
        l.reorder.execute(s, from, to);
        s.wait();
      } catch (const dnnl::error& e) {
#pragma omp critical(qtool_onednn_pack)
        if (error.empty()) error = e.what();
      }
    }
  }
  if (!error.empty()) throw std::runtime_error("oneDNN: bf16 weight reorder: " + error);
}

void prepare(const Weights& w, int64_t rows, int64_t ldx, int64_t ldc) {
  std::lock_guard<std::mutex> lock(g_mu);
  matmul_locked(rows, w.K, w.block_cols, ldx, ldc);
}

void block_product(const Weights& w, int64_t block, const uint16_t* x, int64_t ldx, int64_t rows, float* acc,
                   int64_t ldc) {
  const Matmul& m = matmul_prepared(rows, w.K, w.block_cols, ldx, ldc);
  OneThread one;
  try {
    // oneDNN takes non-const handles; it only reads the source and the weights.
    memory xm(m.x_md, engine(), const_cast<uint16_t*>(x));
    memory wm(m.w_md, engine(), const_cast<uint8_t*>(w.data.p.get()) + w.offset[static_cast<size_t>(block)]);
    memory am(m.acc_md, engine(), acc);
    memory sm(memory::desc({static_cast<int64_t>(m.scratch_bytes)}, Dt::u8, Tag::a), engine(),
              t_state.scratch.reserve(m.scratch_bytes > 0 ? m.scratch_bytes : 1));
    dnnl::stream& s = t_state.get_stream();
    m.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, am}, {DNNL_ARG_SCRATCHPAD, sm}});
    s.wait();
  } catch (const dnnl::error& e) {
    // Called inside the caller's OpenMP region, where an exception cannot propagate; a primitive
    // that was created refusing to run is a broken invariant.
    std::fprintf(stderr, "qtool: internal error: oneDNN bf16 matmul failed: %s\n", e.what());
    std::abort();
  }
}

const std::string& impl_name() {
  static const std::string name = [] {
    OneThread one;
    try {
      memory::desc w_any({256, 128}, Dt::bf16, Tag::any);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_desc(kLayoutRows, 256, 256), w_any, acc_desc(kLayoutRows, 128, 128)),
                                      attributes(), engine());
      return std::string(pd.impl_info_str());
    } catch (const dnnl::error&) {
      return std::string();  // no bf16 matmul for this CPU (or the ISA oneDNN was capped to)
    }
  }();
  return name;
}

#endif  // QTOOL_HAVE_ONEDNN

}  // namespace qt::kernels::onednn
