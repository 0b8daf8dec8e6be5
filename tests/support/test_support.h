// Helpers shared by the test files: temporary folders, running the qtool binary, reading files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/dtype.h"
#include "libquant/error.h"

// gtest check that `haystack` (a string) contains `needle`, printing both when it does not.
#define EXPECT_CONTAINS(haystack, needle)                                                \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)                       \
      << "expected to find: " << (needle) << "\n in: " << (haystack)

namespace qt {
struct TensorSpec;
}

namespace qt::test {

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& rel = {}) const { return rel.empty() ? path_.string() : (path_ / rel).string(); }
 private:
  std::filesystem::path path_;
};

// While it lives, this process may not write files past `bytes` (RLIMIT_FSIZE; writes there
// fail with EFBIG, SIGXFSZ ignored): a stand-in for a full disk. Restores both when it dies.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(uint64_t bytes);
  ~FileSizeLimit();
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
 private:
  uint64_t old_cur_ = 0;
  void (*old_handler_)(int) = nullptr;
};

// While it lives, the bf16 GEMM runs on back end `b` (cpu_isa.h bf16_backend_for_tests): tests of
// the own kernel's documented bits must not run oneDNN, which is the default on AMX machines.
class Bf16BackendScope {
 public:
  explicit Bf16BackendScope(Bf16Backend b) { bf16_backend_for_tests(&b); }
  ~Bf16BackendScope() { bf16_backend_for_tests(nullptr); }
  Bf16BackendScope(const Bf16BackendScope&) = delete;
  Bf16BackendScope& operator=(const Bf16BackendScope&) = delete;
};

// The name the manifest and --version give the own bf16 kernels on this CPU, from the CPU's
// features (KERNELS.md §6.3): AVX512-BF16, else the AVX2 + FMA emulation, else the scalar one.
inline std::string own_bf16_path() {
  return bf16_hardware() ? "avx512-bf16" : active_isa() != Isa::Scalar ? "avx2-bf16" : "scalar-bf16";
}

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built qtool binary with `args` (shell-quoted here), capturing stdout and stderr.
RunResult run_qtool(const std::vector<std::string>& args);

std::vector<uint8_t> read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::vector<uint8_t>& bytes);
void write_text(const std::filesystem::path& p, const std::string& text);
std::string read_text(const std::filesystem::path& p);

// Rewrites the safetensors file `path` with `edit` applied to every tensor in file order: it may
// change the tensor's bytes and its spec (name, dtype, shape) together.
void rewrite_safetensors(const std::string& path,
                         const std::function<void(TensorSpec& spec, std::vector<uint8_t>& bytes)>& edit);

// A copy of the folder `src` at `dst` (replaced if present) whose tensor `tensor` in
// model.safetensors has its stored bytes changed in place by `patch` (the header stays as it is).
// A missing tensor is a test failure; the copy is returned unpatched then.
std::string patched_copy(const std::string& src, const std::string& dst, const std::string& tensor,
                         const std::function<void(uint8_t* bytes, uint64_t n, DType dt)>& patch);

// Runs fn and expects an InputError of `kind` whose full text (what()) is `what`.
void expect_exact(const std::function<void()>& fn, InputError::Kind kind, const std::string& what);

// Runs fn and returns the InputError it throws; nullopt when it throws none (a test then writes
// ASSERT_TRUE(e) << "no error" and checks the error's parts).
std::optional<InputError> input_error(const std::function<void()>& fn);

// Path of a file in the source tree (e.g. "testdata/ct_goldens/...").
std::filesystem::path source_path(const std::string& rel);

// Runs f(isa) once per ISA path this CPU has (scalar, AVX2, AVX-512), with libquant's dispatch
// capped there (cpu_isa.h isa_cap_for_tests); restores the cap to the CPU's own afterwards.
template <typename F>
void for_each_isa(F f) {
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(cpu_isa())) continue;
    isa_cap_for_tests(isa);
    f(isa);
  }
  isa_cap_for_tests(Isa::Avx512);
}

}  // namespace qt::test
