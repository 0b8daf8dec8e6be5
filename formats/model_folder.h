// ModelFolder: a Hugging Face model folder = config.json + a safetensors checkpoint + the files a
// quantized copy must carry along (tokenizer, generation config, chat template, README, ...).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"

namespace qt {

// A file of the folder that is deliberately not carried along, and why.
struct SkippedFile {
  std::string name;    // file name relative to the folder
  std::string reason;  // e.g. "weights in another format", "broken symbolic link"
};

class ModelFolder {
 public:
  // Opens `dir`: config.json (must exist and be a JSON object; unknown keys kept), the Checkpoint
  // (Checkpoint::open(dir)) and the list of other files. Throws InputError: Missing (no folder,
  // no config.json, no weights), BadFile (config.json not JSON: message has the parser's line and
  // column), plus whatever Checkpoint::open throws.
  static ModelFolder open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::string& config_path() const { return config_path_; }
  // config.json as parsed (nlohmann::json sorts keys; values untouched).
  const nlohmann::json& config() const { return config_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }

  // Regular files (symbolic links followed) directly in the folder that a derived model folder
  // should copy unchanged: everything except *.safetensors, *.safetensors.index.json,
  // config.json, hidden files and weights in other formats (see skipped_files()). Names relative
  // to dir(), sorted. Subdirectories are not entered (e.g. Llama's original/ holds .pth weights).
  const std::vector<std::string>& other_files() const { return other_files_; }
  // Files left out for a reason a user may want to hear about: weights in other formats
  // (*.bin, *.pt, *.pth, *.ckpt, *.gguf, *.h5, *.msgpack, *.onnx, pytorch_model.bin.index.json),
  // broken symbolic links, subdirectories. Hidden entries are skipped silently.
  const std::vector<SkippedFile>& skipped_files() const { return skipped_; }

 private:
  ModelFolder() = default;
  std::string dir_, config_path_;
  nlohmann::json config_;
  Checkpoint checkpoint_;
  std::vector<std::string> other_files_;
  std::vector<SkippedFile> skipped_;
};

// Reads and parses a JSON file (config.json, generation_config.json, ...). Duplicate keys are
// accepted with the last one winning, as Python's json does. Throws InputError: Missing (no
// file), BadFile (with the parser's line/column), Io.
nlohmann::json read_json_file(const std::string& path);

// Writes <dir>/config.json atomically as transformers / compressed-tensors do:
// json.dumps(config, indent=2, sort_keys=True) + "\n". Throws InputError(Io).
void write_config_json(const std::string& dir, const nlohmann::json& config);

// Writes any JSON file the same way (indent 2, sorted keys, trailing newline, atomic).
void write_json_file(const std::string& path, const nlohmann::json& j);

}  // namespace qt
