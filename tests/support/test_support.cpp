#include "tests/support/test_support.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"

namespace qt::test {
namespace fs = std::filesystem;

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path p = fs::temp_directory_path() /
                 ("qtool-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
                  "-" + std::to_string(rd() % 100000));
    std::error_code ec;
    if (fs::create_directory(p, ec)) { path_ = p; return; }
  }
  throw std::runtime_error("cannot create a temporary directory");
}
TempDir::~TempDir() { std::error_code ec; fs::remove_all(path_, ec); }

FileSizeLimit::FileSizeLimit(uint64_t bytes) {
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_FSIZE, &lim) != 0) throw std::runtime_error("getrlimit(RLIMIT_FSIZE) failed");
  old_cur_ = lim.rlim_cur;
  old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
  lim.rlim_cur = bytes;
  if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) throw std::runtime_error("setrlimit(RLIMIT_FSIZE) failed");
}

FileSizeLimit::~FileSizeLimit() {
  struct rlimit lim {};
  ::getrlimit(RLIMIT_FSIZE, &lim);
  lim.rlim_cur = old_cur_;
  ::setrlimit(RLIMIT_FSIZE, &lim);
  std::signal(SIGXFSZ, old_handler_);
}

static std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) { if (c == '\'') q += "'\\''"; else q += c; }
  return q + "'";
}

RunResult run_qtool(const std::vector<std::string>& args) {
  TempDir tmp;
  std::string cmd = shell_quote(QTOOL_BINARY);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(tmp.str("out")) + " 2>" + shell_quote(tmp.str("err")) + " </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(tmp.path() / "out");
  r.err = read_text(tmp.path() / "err");
  return r;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}
void write_text(const fs::path& p, const std::string& text) {
  write_file(p, std::vector<uint8_t>(text.begin(), text.end()));
}
std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss; ss << f.rdbuf(); return ss.str();
}
fs::path source_path(const std::string& rel) { return fs::path(QTOOL_SOURCE_DIR) / rel; }

void expect_exact(const std::function<void()>& fn, InputError::Kind kind, const std::string& what) {
  try {
    fn();
  } catch (const InputError& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_EQ(std::string(e.what()), what);
    return;
  }
  ADD_FAILURE() << "no InputError thrown; expected: " << what;
}

std::optional<InputError> input_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e;
  }
  return std::nullopt;
}

std::string patched_copy(const std::string& src, const std::string& dst, const std::string& tensor,
                         const std::function<void(uint8_t* bytes, uint64_t n, DType dt)>& patch) {
  std::filesystem::remove_all(dst);
  std::filesystem::copy(src, dst, std::filesystem::copy_options::recursive);
  const std::string file = dst + "/model.safetensors";
  uint64_t off = 0, n = 0;
  DType dt{};
  {
    SafetensorsFile f = SafetensorsFile::open(file);
    const TensorView* t = f.find(tensor);
    EXPECT_NE(t, nullptr) << tensor;
    if (!t) return dst;
    off = f.file_offset(*t);
    n = t->bytes.size();
    dt = t->dtype;
  }
  std::vector<uint8_t> all = read_file(file);
  patch(all.data() + off, n, dt);
  write_file(file, all);
  return dst;
}

void rewrite_safetensors(const std::string& path,
                         const std::function<void(TensorSpec& spec, std::vector<uint8_t>& bytes)>& edit) {
  std::vector<std::pair<TensorSpec, std::vector<uint8_t>>> tensors;
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    for (const auto& t : f.tensors()) {
      tensors.push_back({{t.name, t.dtype, t.shape}, std::vector<uint8_t>(t.bytes.begin(), t.bytes.end())});
      edit(tensors.back().first, tensors.back().second);
    }
  }
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors) specs.push_back(t.first);
  SafetensorsWriter w(path, specs);
  for (const auto& [spec, bytes] : tensors) w.write(spec.name, bytes);
  w.commit();
}

}  // namespace qt::test
