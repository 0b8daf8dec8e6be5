// What every `qtool convert` path shares: where and how the output folder is written, the
// per-tensor progress callback and the summary.
//
// Every conversion streams tensor by tensor into a PartialFolder (formats/output_folder.h) that
// is renamed to the output only when complete, writes safetensors shards with
// SafetensorsWriter/plan_shards (an index when sharded), and is deterministic: the same input and
// options give byte-identical files at any thread count (no timestamps anywhere).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qt {

// Reported after each output tensor is written (for the log line and the progress bar).
struct ConvertProgress {
  size_t index = 0, total = 0;  // 1-based
  std::string source;           // input tensor name ("blk.0.attn_q.weight", "x.weight_packed")
  std::string name;             // output tensor name
  std::string shape;            // output shape, "[576,576]"
  std::string from, to;         // input type ("Q4_1", "fp8", "bf16") -> output dtype ("bf16")
  uint64_t out_bytes = 0;
};

struct ConvertJob {
  std::string output_dir;
  bool overwrite = false;                    // replace an existing OUT (only after success)
  uint64_t max_shard_bytes = 5'000'000'000;  // huggingface_hub's default shard cap
  bool hash_inputs = true;                   // sha256 of the input files in the manifest
  std::string command_line;                  // recorded in qtool_manifest.json
  // Largest number of elements converted at once (f32 working buffers are ~4-8 bytes each). Rows
  // are processed in chunks of at most this many elements, rounded to whole rotary heads / scale
  // blocks (a chunk may exceed it only to hold one such unit). Tests lower it to exercise chunking.
  int64_t chunk_elements = int64_t{1} << 22;
  std::function<void(const ConvertProgress&)> on_tensor;
};

struct ConvertSummary {
  size_t tensors_in = 0, tensors_out = 0, shards = 0;
  uint64_t output_bytes = 0;              // sum of the output tensors' byte sizes
  std::vector<std::string> output_files;  // names relative to the output folder
  std::vector<std::string> notes;         // things the user should know (decisions, losses)
  std::vector<std::string> output_notes;  // about the output location (leftovers of killed runs); not in the manifest
};

}  // namespace qt
