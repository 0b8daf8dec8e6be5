// Checkpoint: all safetensors files of one model, opened and cross-checked together.
//
// open(path) accepts
//   - a model folder: uses model.safetensors.index.json if present, else model.safetensors, else
//     every *.safetensors file in the folder (sorted by name; hidden files skipped);
//   - one .safetensors file;
//   - a *.safetensors.index.json file (shards are resolved relative to its folder).
// With an index it checks: the index is a well-formed JSON object with a "weight_map" object of
// string -> string (relative file names, no "..", no duplicate keys); optional "metadata" is an
// object; every listed shard exists (Kind::Missing naming the shard and the index); every listed
// tensor is in its shard; no shard holds a tensor the index does not list. Always: every shard
// passes SafetensorsFile validation and no tensor name appears in two shards.
// Opening reads headers only (each shard is memory-mapped; tensor bytes are untouched).
//
// Ownership: the Checkpoint owns the mappings; TensorViews it hands out stay valid while it lives
// (moving the Checkpoint keeps them valid).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/safetensors.h"
#include "libquant/tensor_view.h"

namespace qt {

class Checkpoint {
 public:
  // Throws InputError (Missing / BadFile / Io) naming the file and, where one is involved, the tensor.
  static Checkpoint open(const std::string& path);

  // All tensors: shard order (shard_paths() order), then data-offset order within a shard.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr if absent.
  const TensorView* find(const std::string& name) const;
  // Index (into shard_paths()) of the shard holding `name`; nullopt if absent.
  std::optional<size_t> shard_of(const std::string& name) const;

  // Shard file paths: with an index, the distinct weight_map values sorted by name; otherwise
  // the files found (see open).
  std::vector<std::string> shard_paths() const;
  size_t num_shards() const { return shards_.size(); }
  const SafetensorsFile& shard(size_t i) const { return shards_.at(i); }
  // The index file used, or "" if none.
  const std::string& index_path() const { return index_path_; }
  // The folder holding the shards.
  const std::string& dir() const { return dir_; }
  // "metadata.total_size" of the index, if it has one (informational: not checked, some real
  // checkpoints carry stale values).
  std::optional<uint64_t> index_total_size() const { return index_total_size_; }
  // Sum of all tensors' byte sizes (what an index's total_size should be).
  uint64_t total_bytes() const { return total_bytes_; }
  // __metadata__ of shard i.
  const std::map<std::string, std::string>& metadata(size_t shard) const { return shards_.at(shard).metadata(); }

 // An empty checkpoint (no shards); use open() to get a real one.
  Checkpoint() = default;

 private:
  void finish();  // builds tensors_, index_, total_bytes_; checks cross-shard duplicates
  std::string dir_, index_path_;
  std::vector<SafetensorsFile> shards_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> index_;  // name -> (shard, tensors_ idx)
  uint64_t total_bytes_ = 0;
  std::optional<uint64_t> index_total_size_;
};

}  // namespace qt
