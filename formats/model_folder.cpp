#include "formats/model_folder.h"

#include <algorithm>
#include <filesystem>

#include "formats/atomic_file.h"
#include "formats/json_util.h"
#include "formats/mmap_file.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;
using Kind = InputError::Kind;

namespace {

// Weight files in formats qtool does not read: copying them into a quantized folder would ship
// the original precision weights next to the quantized ones (and some loaders prefer them).
bool is_foreign_weight_file(const std::string& name) {
  for (const char* ext : {".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".onnx_data"})
    if (name.ends_with(ext)) return true;
  return name == "pytorch_model.bin.index.json" || name == "tf_model.h5.index.json" ||
         name == "flax_model.msgpack.index.json";
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(Kind::Missing, path, "", "no such file");
  MappedFile m(path);
  JsonParseOptions opt;
  opt.what = "file";
  opt.reject_duplicate_keys = false;  // Python's json keeps the last; so does transformers
  return parse_json_strict(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), path, opt);
}

ModelFolder ModelFolder::open(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw InputError(Kind::Missing, dir, "", "no such folder");
  if (!fs::is_directory(dir, ec))
    throw InputError(Kind::Usage, dir, "", "is not a folder (a model folder holds config.json and *.safetensors)");
  ModelFolder m;
  m.dir_ = dir;
  m.config_path_ = (fs::path(dir) / "config.json").string();
  if (!fs::exists(m.config_path_, ec))
    throw InputError(Kind::Missing, m.config_path_, "", "no config.json in the model folder");
  m.config_ = read_json_file(m.config_path_);
  if (!m.config_.is_object())
    throw InputError(Kind::BadFile, m.config_path_, "",
                     "is not a JSON object (got " + json_type_name(m.config_) + ")");
  m.checkpoint_ = Checkpoint::open(dir);

  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code ec2;
    if (e.is_directory(ec2)) {
      m.skipped_.push_back({name, "subfolder (not copied)"});
      continue;
    }
    if (e.is_symlink(ec2) && !fs::exists(e.path(), ec2)) {
      m.skipped_.push_back({name, "broken symbolic link"});
      continue;
    }
    if (!e.is_regular_file(ec2)) {
      m.skipped_.push_back({name, "not a regular file"});
      continue;
    }
    if (name == "config.json" || name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json"))
      continue;
    if (is_foreign_weight_file(name)) {
      m.skipped_.push_back({name, "weights in a format other than safetensors"});
      continue;
    }
    m.other_files_.push_back(name);
  }
  if (ec) throw InputError(Kind::Io, dir, "", "cannot list folder: " + ec.message());
  std::sort(m.other_files_.begin(), m.other_files_.end());
  std::sort(m.skipped_.begin(), m.skipped_.end(),
            [](const SkippedFile& a, const SkippedFile& b) { return a.name < b.name; });
  return m;
}

void write_json_file(const std::string& path, const nlohmann::json& j) {
  write_file_atomic(path, dump_json_python_style(j));
}

void write_config_json(const std::string& dir, const nlohmann::json& config) {
  write_json_file((fs::path(dir) / "config.json").string(), config);
}

}  // namespace qt
