#include "formats/manifest.h"

#include <atomic>
#include <exception>
#include <filesystem>
#include <thread>

#include "build_info.h"
#include "formats/atomic_file.h"
#include "formats/model_folder.h"
#include "formats/sha256.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;

struct InputHashes::State {
  std::vector<std::string> paths;
  bool enabled = false;
  std::vector<std::string> hex;
  std::exception_ptr error;
  std::atomic<bool> stop{false};
  std::thread worker;
};

InputHashes::InputHashes(std::vector<std::string> paths, bool enabled) : s_(std::make_unique<State>()) {
  s_->paths = std::move(paths);
  s_->enabled = enabled;
  if (!enabled || s_->paths.empty()) return;
  State* s = s_.get();
  s->worker = std::thread([s] {
    try {
      for (const auto& p : s->paths) {
        if (s->stop.load()) return;
        s->hex.push_back(sha256_file(p, &s->stop));
      }
    } catch (...) {
      s->error = std::current_exception();
    }
  });
}

InputHashes::~InputHashes() {
  s_->stop = true;
  if (s_->worker.joinable()) s_->worker.join();
}

nlohmann::json InputHashes::inputs() {
  if (s_->worker.joinable()) s_->worker.join();
  if (s_->error) std::rethrow_exception(s_->error);
  nlohmann::json inputs = nlohmann::json::array();
  for (size_t i = 0; i < s_->paths.size(); ++i) {
    std::error_code ec;
    nlohmann::json e;
    e["file"] = fs::path(s_->paths[i]).filename().string();
    e["bytes"] = fs::file_size(s_->paths[i], ec);
    e["sha256"] = s_->enabled ? nlohmann::json(s_->hex.at(i)) : nlohmann::json(nullptr);
    inputs.push_back(e);
  }
  return inputs;
}

nlohmann::json manifest_base(const std::string& command_line, InputHashes& hashes) {
  nlohmann::json m;
  m["tool"] = "qtool";
  m["version"] = QTOOL_VERSION_STRING;
  m["command"] = command_line;
  m["inputs"] = hashes.inputs();
  return m;
}

void write_manifest(const std::string& dir, const nlohmann::json& manifest) {
  write_file_atomic((fs::path(dir) / kManifestFile).string(), manifest.dump(2) + "\n");
}

void copy_other_files(const ModelFolder& model, const std::string& dir, std::vector<std::string>& copied) {
  for (const auto& f : model.other_files()) {
    if (f == kManifestFile) continue;
    const fs::path src = fs::path(model.dir()) / f, dst = fs::path(dir) / f;
    std::error_code ec;
    fs::create_directories(dst.parent_path(), ec);
    fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
    if (ec) throw InputError(InputError::Kind::Io, src.string(), "", "cannot copy to the output: " + ec.message());
    copied.push_back(f);
  }
}

}  // namespace qt
