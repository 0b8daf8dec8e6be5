#include "formats/manifest.h"

#include <filesystem>

#include "build_info.h"
#include "formats/atomic_file.h"
#include "formats/model_folder.h"
#include "formats/sha256.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;

nlohmann::json manifest_base(const std::string& command_line, const std::vector<std::string>& input_paths,
                             bool hash_inputs) {
  nlohmann::json m;
  m["tool"] = "qtool";
  m["version"] = QTOOL_VERSION_STRING;
  m["command"] = command_line;
  nlohmann::json inputs = nlohmann::json::array();
  for (const auto& p : input_paths) {
    std::error_code ec;
    nlohmann::json e;
    e["file"] = fs::path(p).filename().string();
    e["bytes"] = fs::file_size(p, ec);
    e["sha256"] = hash_inputs ? nlohmann::json(sha256_file(p)) : nlohmann::json(nullptr);
    inputs.push_back(e);
  }
  m["inputs"] = inputs;
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
