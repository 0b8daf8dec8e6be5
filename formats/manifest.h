// qtool_manifest.json: the provenance record every qtool output folder carries (specified in
// man/qtool-files.5). One implementation for quantize and every convert path: the common keys
// come from manifest_base(), each writer adds its own ("scheme", "conversion", ...), and
// write_manifest() writes it the one way (indent 2, keys sorted, trailing newline, atomic).
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace qt {

class ModelFolder;

inline constexpr const char* kManifestFile = "qtool_manifest.json";

// The sha256 of every input file, computed on a background thread from construction on, so that
// hashing overlaps the run's own reading of the same pages instead of costing a second pass at
// the end. Destroying it early (an error) stops the thread after the chunk it is hashing.
class InputHashes {
 public:
  // Starts hashing `paths` in order (nothing when !enabled: the manifest then says null).
  InputHashes(std::vector<std::string> paths, bool enabled);
  ~InputHashes();
  InputHashes(const InputHashes&) = delete;
  InputHashes& operator=(const InputHashes&) = delete;

  // [{"file": name, "bytes": size, "sha256": hex or null}, ...] in the order given; waits for the
  // thread. Throws the InputError(Io) hashing met (naming the file).
  nlohmann::json inputs();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// {"tool": "qtool", "version": <this build>, "command": command_line, "inputs": hashes.inputs()}.
nlohmann::json manifest_base(const std::string& command_line, InputHashes& hashes);

// Writes `manifest` to <dir>/qtool_manifest.json atomically. Throws InputError(Io).
void write_manifest(const std::string& dir, const nlohmann::json& manifest);

// Copies every file of model.other_files() (tokenizer, generation config, ...) into `dir`,
// except an input qtool_manifest.json (it describes the input's own history; the output gets its
// own), appending the names copied to `copied`. Throws InputError(Io) naming the source file.
void copy_other_files(const ModelFolder& model, const std::string& dir, std::vector<std::string>& copied);

}  // namespace qt
