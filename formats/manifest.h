// qtool_manifest.json: the provenance record every qtool output folder carries (specified in
// man/qtool-files.5). One implementation for quantize and every convert path: the common keys
// come from manifest_base(), each writer adds its own ("scheme", "conversion", ...), and
// write_manifest() writes it the one way (indent 2, keys sorted, trailing newline, atomic).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace qt {

class ModelFolder;

inline constexpr const char* kManifestFile = "qtool_manifest.json";

// {"tool": "qtool", "version": <this build>, "command": command_line, "inputs": [{"file": name,
// "bytes": size, "sha256": hex or null}, ...]} for the files at `input_paths`, in that order
// (sha256 only when hash_inputs). Throws InputError(Io) if a file cannot be read for hashing.
nlohmann::json manifest_base(const std::string& command_line, const std::vector<std::string>& input_paths,
                             bool hash_inputs);

// Writes `manifest` to <dir>/qtool_manifest.json atomically. Throws InputError(Io).
void write_manifest(const std::string& dir, const nlohmann::json& manifest);

// Copies every file of model.other_files() (tokenizer, generation config, ...) into `dir`,
// except an input qtool_manifest.json (it describes the input's own history; the output gets its
// own), appending the names copied to `copied`. Throws InputError(Io) naming the source file.
void copy_other_files(const ModelFolder& model, const std::string& dir, std::vector<std::string>& copied);

}  // namespace qt
