// Calibration text: loading (plain text, JSON Lines with "text" or chat "messages", optionally
// zstd-compressed), the built-in set compiled into the binary, and deterministic selection and
// chunking into token samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qt::calib {

class Tokenizer;

struct CalibrationText {
  std::vector<std::string> documents;  // in file order
  std::string source;                  // file path, or "built-in"
  std::string sha256;                  // of the (decompressed) bytes, for provenance
};

// Loads FILE:
//   *.jsonl / *.jsonl.zst: one JSON object per line with a string "text", or "messages": a list
//     of {"role", "content"} rendered as "<role>: <content>\n" per message (chat templates are
//     not applied; say so in reports);
//   anything else (*.txt, *.md, *.txt.zst, ...): plain UTF-8 text, documents separated by one or
//     more blank lines.
// A ".zst" suffix means zstd-compressed (decompressed as a stream). The text must be UTF-8.
// A file, or its decompressed text, larger than `max_bytes` is refused (BadValue) as soon as the
// limit is passed. Throws InputError naming the file (and line for JSONL; the byte offset for
// invalid UTF-8).
inline constexpr uint64_t kMaxCalibrationTextBytes = 1ull << 30;  // 1 GiB
CalibrationText load_calibration_text(const std::string& path, uint64_t max_bytes = kMaxCalibrationTextBytes);

// The built-in set: varied English prose, code, math and dialogue written for qtool.
CalibrationText builtin_calibration_text();

// Token samples: each document is tokenized (with the tokenizer's special tokens, e.g. BOS) and
// cut into consecutive chunks of at most `seq_len` tokens (chunks after the first get the same
// special prefix, so every sample looks like the start of a sequence); chunks shorter than
// min(16, seq_len) are dropped; then `num_samples` chunks are drawn without replacement in an
// order fixed by `seed` (splitmix64 Fisher-Yates). Fewer chunks than asked: all are used.
std::vector<std::vector<int32_t>> make_samples(const Tokenizer& tok, const CalibrationText& text,
                                               int64_t num_samples, int64_t seq_len, uint64_t seed);

}  // namespace qt::calib
