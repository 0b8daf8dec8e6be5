#include "formats/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "formats/json_util.h"
#include "formats/mmap_file.h"
#include "formats/safetensors_writer.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;
using Kind = InputError::Kind;

namespace {

std::string read_small_file(const std::string& path) {
  MappedFile m(path);
  return std::string(reinterpret_cast<const char*>(m.data()), static_cast<size_t>(m.size()));
}

// A weight_map value must name a file inside the checkpoint folder: refuse absolute paths and
// "..", which a hostile or broken index could use to point anywhere.
bool is_safe_relative(const std::string& name) {
  if (name.empty()) return false;
  const fs::path p(name);
  if (p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

void Checkpoint::finish() {
  size_t count = 0;
  for (const auto& s : shards_) count += s.tensors().size();
  tensors_.reserve(count);
  for (size_t si = 0; si < shards_.size(); ++si) {
    for (const TensorView& t : shards_[si].tensors()) {
      const auto [it, inserted] = index_.emplace(t.name, std::make_pair(si, tensors_.size()));
      if (!inserted)
        throw InputError(Kind::BadFile, shards_[si].path(), t.name,
                         "is also stored in " + shards_[it->second.first].path() +
                             " (a tensor must be in exactly one shard)");
      total_bytes_ += t.bytes.size();
      tensors_.push_back(t);
    }
  }
}

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint c;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw InputError(Kind::Missing, path, "", "no such file or folder");

  std::string index;
  std::vector<std::string> files;
  if (fs::is_directory(st)) {
    c.dir_ = path;
    const fs::path idx = fs::path(path) / kIndexFileName;
    const fs::path single = fs::path(path) / "model.safetensors";
    // present(): exists, or cannot be told (a symlink loop): opening it then names the problem.
    auto present = [](const fs::path& f) {
      std::error_code fec;
      return fs::exists(f, fec) || fec.value() == ELOOP;
    };
    if (present(idx)) {
      index = idx.string();
    } else if (present(single)) {
      files.push_back(single.string());
    } else {
      std::error_code fec;  // per entry (a broken entry is skipped, not a listing error)
      for (const auto& e : fs::directory_iterator(path, ec)) {
        const std::string name = e.path().filename().string();
        if (!name.empty() && name[0] != '.' && name.ends_with(".safetensors") &&
            e.is_regular_file(fec))
          files.push_back(e.path().string());
      }
      if (ec) throw InputError(Kind::Io, path, "", "cannot list folder: " + ec.message());
      std::sort(files.begin(), files.end());
      if (files.empty())
        throw InputError(Kind::Missing, path, "",
                         "no model.safetensors.index.json and no *.safetensors file in this folder");
    }
  } else if (path.ends_with(".index.json")) {
    index = path;
    c.dir_ = fs::path(path).parent_path().string();
    if (c.dir_.empty()) c.dir_ = ".";
  } else {
    files.push_back(path);
    c.dir_ = fs::path(path).parent_path().string();
    if (c.dir_.empty()) c.dir_ = ".";
  }

  if (index.empty()) {
    for (const auto& f : files) c.shards_.push_back(SafetensorsFile::open(f));
    c.finish();
    return c;
  }

  // --- sharded: parse and check the index, then every shard against it ---
  c.index_path_ = index;
  auto bad = [&](const std::string& problem) { throw InputError(Kind::BadFile, index, "", problem); };
  JsonParseOptions opt;
  opt.what = "index";
  opt.describe_duplicate = [](const std::vector<std::string>& parents, const std::string& key) {
    if (parents.size() == 1 && parents[0] == "weight_map")
      return "lists tensor '" + printable(key) + "' twice in weight_map";
    return "has a duplicate key '" + printable(key) + "'";
  };
  const nlohmann::json j = parse_json_strict(read_small_file(index), index, opt);
  if (!j.is_object()) bad("index is not a JSON object (got " + json_type_name(j) + ")");
  if (!j.contains("weight_map")) bad("index has no \"weight_map\"");
  const nlohmann::json& wm = j["weight_map"];
  if (!wm.is_object()) bad("\"weight_map\" is not an object (got " + json_type_name(wm) + ")");
  if (j.contains("metadata")) {
    const nlohmann::json& md = j["metadata"];
    if (!md.is_object() && !md.is_null()) bad("\"metadata\" is not an object (got " + json_type_name(md) + ")");
    if (md.is_object() && md.contains("total_size")) {
      const auto& ts = md["total_size"];
      if (ts.is_number_unsigned() || (ts.is_number_integer() && ts.get<int64_t>() >= 0))
        c.index_total_size_ = ts.get<uint64_t>();
      else if (ts.is_number_float() && ts.get<double>() >= 0 && ts.get<double>() < 1.8e19)
        c.index_total_size_ = static_cast<uint64_t>(ts.get<double>());  // some writers emit 1.6e10
      else
        bad("\"metadata.total_size\" is not a non-negative number (got " + printable(ts.dump()) + ")");
    }
  }
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> tensors listed
  for (const auto& [name, file] : wm.items()) {
    if (!file.is_string())
      throw InputError(Kind::BadFile, index, name,
                       "weight_map value is not a file name string (got " + json_type_name(file) + ")");
    const std::string f = file.get<std::string>();
    if (!is_safe_relative(f))
      throw InputError(Kind::BadFile, index, name,
                       "weight_map names shard '" + printable(f) +
                           "', which is not a relative path inside the checkpoint folder");
    by_shard[f].push_back(name);
  }
  if (by_shard.empty()) bad("\"weight_map\" is empty");

  for (const auto& [file, names] : by_shard) {
    const std::string shard_path = (fs::path(c.dir_) / file).string();
    std::error_code sec;  // a symlink loop (ELOOP) is reported by open() below, naming the shard
    if (!fs::exists(shard_path, sec) && sec.value() != ELOOP)
      throw InputError(Kind::Missing, shard_path, "",
                       "shard listed in " + index + " is missing (" + std::to_string(names.size()) +
                           " tensors, e.g. '" + names.front() + "')");
    c.shards_.push_back(SafetensorsFile::open(shard_path));
  }
  c.finish();  // rejects a tensor stored in two shards

  // Listed tensors first, so a tensor filed under the wrong shard is reported as such.
  size_t si = 0;
  for (const auto& [file, names] : by_shard) {
    const SafetensorsFile& shard = c.shards_[si++];
    for (const auto& name : names) {
      if (shard.find(name)) continue;
      if (const auto other = c.shard_of(name))
        throw InputError(Kind::BadFile, index, name,
                         "index says it is in " + file + " but it is stored in " +
                             c.shards_[*other].path());
      throw InputError(Kind::Missing, shard.path(), name,
                       "listed in " + index + " but not present in this shard");
    }
  }
  // Then tensors nobody listed (every listed one is now known to be where the index says).
  for (const SafetensorsFile& shard : c.shards_)
    for (const TensorView& t : shard.tensors())
      if (!wm.contains(t.name))
        throw InputError(Kind::BadFile, shard.path(), t.name,
                         "is stored in this shard but " + index + " does not list it");
  return c;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second.second];
}

std::optional<size_t> Checkpoint::shard_of(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) return std::nullopt;
  return it->second.first;
}

std::vector<std::string> Checkpoint::shard_paths() const {
  std::vector<std::string> out;
  for (const auto& s : shards_) out.push_back(s.path());
  return out;
}

}  // namespace qt
