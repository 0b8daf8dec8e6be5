#include "calib/dataset.h"

#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "calib/tokenizer/tokenizer.h"
#include "formats/input_file.h"
#include "formats/json_util.h"
#include "formats/sha256.h"
#include "libquant/error.h"

namespace qt::calib {
namespace {

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

std::string too_big(uint64_t limit) {
  return "qtool reads at most " + mib(limit) +
         " of calibration text (calibration uses a few MB: --num-samples x --seq-len tokens)";
}

std::string read_all(const std::string& path, uint64_t limit) {
  check_input_file(path);  // a FIFO or device would block or never end
  std::error_code ec;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(InputError::Kind::Missing, path, "", "cannot open the calibration dataset");
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > limit)
    throw InputError(InputError::Kind::BadValue, path, "",
                     "the calibration dataset is " + std::to_string(size) + " bytes; " + too_big(limit));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Streaming zstd decompression (frames may not record their content size), refusing output
// beyond `limit` bytes as soon as it is reached (a small file can expand to gigabytes).
std::string zstd_decompress(const std::string& in, const std::string& path, uint64_t limit) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::string out;
  std::vector<char> buf(ZSTD_DStreamOutSize());
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  size_t ret = 1;
  auto fail = [&](InputError::Kind kind, const std::string& what) {
    ZSTD_freeDCtx(dctx);
    throw InputError(kind, path, "", what);
  };
  for (;;) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    ret = ZSTD_decompressStream(dctx, &ob, &ib);
    if (ZSTD_isError(ret)) fail(InputError::Kind::BadFile, std::string("not a valid zstd stream: ") + ZSTD_getErrorName(ret));
    if (out.size() + ob.pos > limit)
      fail(InputError::Kind::BadValue, "the calibration dataset expands to more than " + mib(limit) + "; " + too_big(limit));
    out.append(buf.data(), ob.pos);
    // Done when all input is consumed and the decoder has nothing left to flush.
    if (ib.pos == ib.size && ob.pos < ob.size) break;
  }
  ZSTD_freeDCtx(dctx);
  if (ret != 0) throw InputError(InputError::Kind::BadFile, path, "", "truncated zstd stream");
  return out;
}

std::vector<std::string> split_paragraphs(const std::string& text) {
  std::vector<std::string> docs;
  std::string cur;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bool blank = line.find_first_not_of(" \t") == std::string::npos;
    if (blank) {
      if (!cur.empty()) { docs.push_back(cur); cur.clear(); }
    } else {
      if (!cur.empty()) cur += '\n';
      cur += line;
    }
  }
  if (!cur.empty()) docs.push_back(cur);
  return docs;
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

CalibrationText load_calibration_text(const std::string& path, uint64_t max_bytes) {
  std::string raw = read_all(path, max_bytes);
  std::string name = path;
  const bool compressed = name.ends_with(".zst");
  if (compressed) {
    raw = zstd_decompress(raw, path, max_bytes);
    name = name.substr(0, name.size() - 4);
  }
  if (const auto bad = find_invalid_utf8(raw)) {
    const auto line = 1 + std::count(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(*bad), '\n');
    throw InputError(InputError::Kind::BadFile, path, "",
                     "not valid UTF-8 at byte offset " + std::to_string(*bad) +
                         (compressed ? " of the decompressed text" : "") + " (line " + std::to_string(line) +
                         "); calibration text must be UTF-8");
  }
  CalibrationText t;
  t.source = path;
  Sha256 h;
  h.update(raw.data(), raw.size());
  t.sha256 = h.hex();
  if (name.ends_with(".jsonl")) {
    std::istringstream in(raw);
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        throw InputError(InputError::Kind::BadFile, path + ":" + std::to_string(lineno), "",
                         std::string("invalid JSON: ") + e.what());
      }
      if (j.contains("text") && j["text"].is_string()) {
        t.documents.push_back(j["text"].get<std::string>());
      } else if (j.contains("messages") && j["messages"].is_array()) {
        std::string doc;
        for (const auto& m : j["messages"]) {
          if (!m.is_object() || !m.contains("content") || !m["content"].is_string())
            throw InputError(InputError::Kind::BadFile, path + ":" + std::to_string(lineno), "",
                             "each message needs a string \"content\"");
          if (m.contains("role") && !m["role"].is_string())
            throw InputError(InputError::Kind::BadFile, path + ":" + std::to_string(lineno), "",
                             "a message's \"role\" must be a string (got " + json_type_name(m["role"]) + ")");
          doc += m.value("role", std::string("user")) + ": " + m["content"].get<std::string>() + "\n";
        }
        t.documents.push_back(doc);
      } else {
        throw InputError(InputError::Kind::BadFile, path + ":" + std::to_string(lineno), "",
                         "a JSON Lines record needs a string \"text\" or a \"messages\" list");
      }
    }
  } else {
    t.documents = split_paragraphs(raw);
  }
  if (t.documents.empty())
    throw InputError(InputError::Kind::BadValue, path, "", "the calibration dataset holds no text");
  return t;
}

std::vector<std::vector<int32_t>> make_samples(const Tokenizer& tok, const CalibrationText& text,
                                               int64_t num_samples, int64_t seq_len, uint64_t seed) {
  QT_ASSERT(seq_len > 0 && num_samples > 0);
  const std::vector<int32_t>& prefix = tok.special_prefix();
  std::vector<std::vector<int32_t>> chunks;
  const int64_t min_len = std::min<int64_t>(16, seq_len);
  for (const auto& doc : text.documents) {
    std::vector<int32_t> ids = tok.encode(doc, false);
    const int64_t body = std::max<int64_t>(1, seq_len - static_cast<int64_t>(prefix.size()));
    for (size_t p = 0; p < ids.size(); p += static_cast<size_t>(body)) {
      std::vector<int32_t> c(prefix.begin(), prefix.end());
      const size_t e = std::min(ids.size(), p + static_cast<size_t>(body));
      c.insert(c.end(), ids.begin() + static_cast<std::ptrdiff_t>(p), ids.begin() + static_cast<std::ptrdiff_t>(e));
      if (static_cast<int64_t>(c.size()) >= min_len) chunks.push_back(std::move(c));
    }
  }
  if (chunks.empty())
    throw InputError(InputError::Kind::BadValue, text.source, "",
                     "no calibration sample of at least " + std::to_string(min_len) + " tokens");
  uint64_t s = seed;
  for (size_t i = chunks.size(); i > 1; --i) std::swap(chunks[i - 1], chunks[splitmix(s) % i]);
  if (static_cast<int64_t>(chunks.size()) > num_samples) chunks.resize(static_cast<size_t>(num_samples));
  return chunks;
}

}  // namespace qt::calib
