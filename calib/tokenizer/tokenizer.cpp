// qt::Tokenizer: loading tokenizer.json, added tokens, post-processor, encode/decode.
#include "calib/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "calib/tokenizer/tokenizer_detail.h"
#include "formats/input_file.h"
#include "libquant/error.h"

namespace qt::calib {

using tok::json_bool;
using tok::json_opt_string;
using tok::json_string;
using tok::json_type;
using Kind = InputError::Kind;

// ---------------------------------------------------------------- JSON helpers

namespace tok {

std::string json_type(const nlohmann::json& j, const std::string& file, const std::string& where) {
  if (!j.is_object()) throw InputError(Kind::BadFile, file, "", where + " must be an object or null");
  const auto it = j.find("type");
  if (it == j.end() || !it->is_string())
    throw InputError(Kind::BadFile, file, "", where + " has no \"type\" string");
  return it->get<std::string>();
}

bool json_bool(const nlohmann::json& j, const char* key, bool def, const std::string& file, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean())
    throw InputError(Kind::BadFile, file, "", where + ": '" + key + "' must be true or false", "", it->dump());
  return it->get<bool>();
}

std::optional<std::string> json_opt_string(const nlohmann::json& j, const char* key, const std::string& file,
                                           const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw InputError(Kind::BadFile, file, "", where + ": '" + key + "' must be a string", "", it->dump());
  return it->get<std::string>();
}

std::string json_string(const nlohmann::json& j, const char* key, const std::string& file, const std::string& where) {
  auto s = json_opt_string(j, key, file, where);
  if (!s) throw InputError(Kind::BadFile, file, "", where + ": missing string '" + key + "'");
  return *s;
}

std::unique_ptr<Regex> json_pattern(const nlohmann::json& j, const char* key, const std::string& file,
                                    const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_object() || it->size() != 1)
    throw InputError(Kind::BadFile, file, "", where + ": '" + key + "' must be {\"String\": ...} or {\"Regex\": ...}");
  // Not `*it->items().begin()`: items() is a temporary proxy and the bound key would dangle
  // (found by AddressSanitizer: stack-use-after-scope).
  const auto inner = it->begin();
  const std::string kind = inner.key();
  const nlohmann::json& val = inner.value();
  if (!val.is_string()) throw InputError(Kind::BadFile, file, "", where + ": pattern must be a string");
  if (kind == "String") return std::make_unique<Regex>(val.get<std::string>(), true, file, where);
  if (kind == "Regex") return std::make_unique<Regex>(val.get<std::string>(), false, file, where);
  throw InputError(Kind::BadFile, file, "", where + ": unknown pattern kind '" + kind + "'");
}

[[noreturn]] void throw_unsupported(const std::string& file, const std::string& what, const std::string& type) {
  throw InputError(Kind::Unsupported, file, "", "unsupported " + what + " '" + type + "'");
}

// ---------------------------------------------------------------- added-token matching

void AddedMatcher::add(const std::string& pattern, int32_t id) {
  if (pattern.empty()) return;  // tokenizers ignores empty contents
  int32_t node = 0;
  for (unsigned char b : pattern) {
    int32_t next = child(node, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& kids = nodes_[static_cast<size_t>(node)].next;
      kids.insert(std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, int32_t{-1})), {b, next});
    }
    node = next;
  }
  nodes_[static_cast<size_t>(node)].id = id;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

int32_t AddedMatcher::child(int32_t node, unsigned char b) const {
  const auto& kids = nodes_[static_cast<size_t>(node)].next;
  const auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, int32_t{-1}));
  return (it != kids.end() && it->first == b) ? it->second : -1;
}

namespace {

// The code point that ends at byte `end` of `s` (valid UTF-8, end > 0).
char32_t last_char(std::string_view s, size_t end, size_t* start_out = nullptr) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  if (start_out) *start_out = start;
  size_t i = start;
  return utf8_next(s, i);
}

}  // namespace

std::vector<AddedMatcher::Hit> AddedMatcher::split(std::string_view s,
                                                   const std::unordered_map<int32_t, AddedToken>& tokens) const {
  std::vector<Hit> out;
  const size_t n = s.size();
  size_t start_offset = 0;
  size_t i = 0;
  while (i < n) {
    if (!first_byte_[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    // Leftmost-longest: the longest pattern starting at the first position where any starts.
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t k = i; k < n; ++k) {
      node = child(node, static_cast<unsigned char>(s[k]));
      if (node < 0) break;
      if (nodes_[static_cast<size_t>(node)].id >= 0) {
        best = nodes_[static_cast<size_t>(node)].id;
        best_end = k + 1;
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = best_end;
    i = best_end;  // the automaton resumes after its own match, whatever the rules below do
    const AddedToken& t = tokens.at(best);
    if (t.single_word) {
      // Rejected if a word character (Rust regex \w) touches either end.
      const bool start_space = start == 0 || !is_word_char(last_char(s, start));
      size_t j = stop;
      const bool stop_space = stop == n || !is_word_char(utf8_next(s, j));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      // Swallow the whitespace run before the token, but not text an earlier token took.
      size_t new_start = start;
      while (new_start > 0) {
        size_t cs = 0;
        if (!is_white_space(last_char(s, new_start, &cs))) break;
        new_start = cs;
      }
      start = std::max(new_start, start_offset);
    }
    if (t.rstrip) {
      while (stop < n) {
        size_t j = stop;
        if (!is_white_space(utf8_next(s, j))) break;
        stop = j;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, best});
    start_offset = stop;
  }
  if (start_offset != n) out.push_back({start_offset, n, -1});
  return out;
}

}  // namespace tok

// ---------------------------------------------------------------- loading

namespace {

std::string read_whole(const std::filesystem::path& p) { return read_input_file(p.string()); }

nlohmann::json parse_json(const std::string& text, const std::string& file) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(Kind::BadFile, file, "", std::string("invalid JSON: ") + e.what());
  }
}

// Adds the special tokens of one post-processor to prefix/suffix (processors/*.rs). A processor
// wraps what the earlier ones produced, so its tokens go outside theirs.
void apply_post_processor(const nlohmann::json& j, const std::string& file, std::vector<int32_t>& prefix,
                          std::vector<int32_t>& suffix) {
  if (j.is_null()) return;
  const std::string type = json_type(j, file, "post_processor");
  const std::string where = "post_processor '" + type + "'";
  if (type == "ByteLevel") return;  // offsets only; adds no token whatever add_prefix_space says
  if (type == "Sequence") {
    const auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) throw InputError(Kind::BadFile, file, "", where + ": 'processors' must be a list");
    for (const auto& p : *it) apply_post_processor(p, file, prefix, suffix);
    return;
  }
  if (type != "TemplateProcessing") tok::throw_unsupported(file, "post_processor", type);

  const auto st = j.find("special_tokens");
  auto special_ids = [&](const std::string& name) {
    std::vector<int32_t> ids;
    if (st == j.end() || !st->is_object() || !st->contains(name))
      throw InputError(Kind::BadFile, file, "", where + ": template names special token '" + name +
                                                    "' that is not in special_tokens");
    const auto& e = (*st)[name];
    const auto idsj = e.find("ids");
    if (idsj == e.end() || !idsj->is_array()) throw InputError(Kind::BadFile, file, "", where + ": special token '" + name + "' has no ids list");
    for (const auto& v : *idsj) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
        throw InputError(Kind::BadFile, file, "", where + ": special token '" + name + "' has a bad id " + v.dump());
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    return ids;
  };
  // `single` is a list of {"SpecialToken": {"id": NAME}} / {"Sequence": {"id": "A"}} (the
  // "<s> $A" string form exists only in the Python constructor; tokenizer.json has lists).
  std::vector<std::pair<bool, std::string>> pieces;  // (is_sequence, special-token name)
  const auto single = j.find("single");
  if (single == j.end() || !single->is_array()) throw InputError(Kind::BadFile, file, "", where + ": 'single' must be a list");
  for (const auto& p : *single) {
    if (p.is_object() && p.contains("Sequence")) {
      const auto& s = p["Sequence"];
      if (!s.is_object() || s.value("id", "") != "A")
        throw InputError(Kind::BadFile, file, "", where + ": single template must use sequence A, got " + p.dump());
      pieces.push_back({true, ""});
    } else if (p.is_object() && p.contains("SpecialToken") && p["SpecialToken"].is_object() &&
               p["SpecialToken"].contains("id") && p["SpecialToken"]["id"].is_string()) {
      pieces.push_back({false, p["SpecialToken"]["id"].get<std::string>()});
    } else {
      throw InputError(Kind::BadFile, file, "", where + ": bad template piece " + p.dump());
    }
  }
  if (std::count_if(pieces.begin(), pieces.end(), [](const auto& p) { return p.first; }) != 1)
    throw InputError(Kind::BadFile, file, "", where + ": single template must contain $A exactly once");
  std::vector<int32_t> pre, post;
  bool seen_seq = false;
  for (const auto& [is_seq, name] : pieces) {
    if (is_seq) { seen_seq = true; continue; }
    const auto ids = special_ids(name);
    (seen_seq ? post : pre).insert((seen_seq ? post : pre).end(), ids.begin(), ids.end());
  }
  pre.insert(pre.end(), prefix.begin(), prefix.end());
  prefix = std::move(pre);
  suffix.insert(suffix.end(), post.begin(), post.end());
}

// bos_token / eos_token in tokenizer_config.json: a string, an AddedToken object or null.
std::optional<std::string> config_token(const nlohmann::json& cfg, const char* key) {
  const auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json, const std::filesystem::path& tokenizer_config_json) {
  const std::string file = tokenizer_json.string();
  const nlohmann::json j = parse_json(read_whole(tokenizer_json), file);
  if (tokenizer_config_json.empty()) return from_json(j, file, nullptr);
  const nlohmann::json cfg = parse_json(read_whole(tokenizer_config_json), tokenizer_config_json.string());
  if (!cfg.is_object()) throw InputError(Kind::BadFile, tokenizer_config_json.string(), "", "expected a JSON object");
  return from_json(j, file, &cfg);
}

Tokenizer Tokenizer::from_dir(const std::filesystem::path& dir) {
  const auto cfg = dir / "tokenizer_config.json";
  std::error_code ec;
  return from_file(dir / "tokenizer.json", std::filesystem::is_regular_file(cfg, ec) ? cfg : std::filesystem::path());
}

Tokenizer Tokenizer::from_json(const nlohmann::json& j, const std::string& file, const nlohmann::json* config) {
  auto impl = std::make_shared<Impl>();
  impl->file = file;
  if (!j.is_object()) throw InputError(Kind::BadFile, file, "", "expected a JSON object");
  if (auto v = json_opt_string(j, "version", file, "tokenizer.json"); v && *v != "1.0")
    throw InputError(Kind::Unsupported, file, "", "unsupported tokenizer.json version '" + *v + "'", "1.0", *v);

  // Model.
  const auto mit = j.find("model");
  if (mit == j.end() || !mit->is_object()) throw InputError(Kind::BadFile, file, "", "missing 'model' object");
  const auto mtype = mit->find("type");
  if (mtype != mit->end()) {
    if (!mtype->is_string()) throw InputError(Kind::BadFile, file, "", "model 'type' must be a string");
    if (mtype->get<std::string>() != "BPE") tok::throw_unsupported(file, "model", mtype->get<std::string>());
  } else if (!mit->contains("merges")) {
    throw InputError(Kind::Unsupported, file, "", "unsupported model without \"type\" (only BPE is supported)");
  }
  impl->model = std::make_unique<tok::BpeModel>(*mit, file);

  const nlohmann::json null_json;
  auto member = [&](const char* k) -> const nlohmann::json& {
    const auto it = j.find(k);
    return it == j.end() ? null_json : *it;
  };
  impl->normalizer = tok::make_normalizer(member("normalizer"), file);
  impl->pre_tokenizer = tok::make_pre_tokenizer(member("pre_tokenizer"), file);
  apply_post_processor(member("post_processor"), file, impl->prefix, impl->suffix);
  impl->decoder = tok::make_decoder(member("decoder"), file, impl->decoder_unsupported);

  // Added tokens, with the ids `tokenizers` assigns (tokenizer/serialization.rs -> add_tokens):
  // a content already known (added earlier, or in the model vocabulary) keeps that id; any other
  // gets the next id from vocab.len() on. The "id" in the file is only cross-checked.
  const auto& at = member("added_tokens");
  if (!at.is_null() && !at.is_array()) throw InputError(Kind::BadFile, file, "", "'added_tokens' must be a list");
  int64_t next_id = static_cast<int64_t>(impl->model->vocab_entries());
  if (at.is_array()) {
    for (const auto& e : at) {
      const std::string where = "added_tokens entry";
      if (!e.is_object()) throw InputError(Kind::BadFile, file, "", where + " must be an object");
      tok::AddedToken t;
      t.content = json_string(e, "content", file, where);
      t.single_word = json_bool(e, "single_word", false, file, where);
      t.lstrip = json_bool(e, "lstrip", false, file, where);
      t.rstrip = json_bool(e, "rstrip", false, file, where);
      t.special = json_bool(e, "special", false, file, where);
      t.normalized = json_bool(e, "normalized", !t.special, file, where);
      const auto idj = e.find("id");
      if (idj == e.end() || !idj->is_number_integer())
        throw InputError(Kind::BadFile, file, "", "added token '" + t.content + "' has no integer id");
      if (t.content.empty()) continue;
      int64_t id;
      if (auto it = impl->added_by_content.find(t.content); it != impl->added_by_content.end()) {
        id = it->second;
      } else if (auto mid = impl->model->token_to_id(t.content)) {
        id = *mid;
      } else {
        id = next_id++;
      }
      if (id > INT32_MAX) throw InputError(Kind::BadFile, file, "", "added token ids exceed int32");
      if (idj->get<int64_t>() != id)
        impl->warnings.push_back("added token '" + t.content + "' has id " + idj->dump() + " in the file but id " +
                                 std::to_string(id) + " in `tokenizers` (which qtool follows)");
      t.id = static_cast<int32_t>(id);
      impl->added_by_content[t.content] = t.id;
      impl->added[t.id] = std::move(t);
    }
  }
  for (auto& [id, t] : impl->added) {
    if (t.normalized) {
      // Matched against normalized text, so the pattern is the normalized content.
      std::string pattern = t.content;
      if (impl->normalizer) impl->normalizer->apply(pattern);
      impl->normalized_matcher.add(pattern, id);
    } else {
      impl->raw_matcher.add(t.content, id);
    }
  }

  int32_t max_id = impl->model->max_id();
  for (const auto& [id, t] : impl->added) max_id = std::max(max_id, id);
  impl->vocab_size = max_id + 1;

  // BOS/EOS.
  auto resolve = [&](const std::string& name) -> std::optional<int32_t> {
    if (auto it = impl->added_by_content.find(name); it != impl->added_by_content.end()) return it->second;
    return impl->model->token_to_id(name);
  };
  if (!impl->prefix.empty()) impl->bos = impl->prefix.front();
  if (!impl->suffix.empty()) impl->eos = impl->suffix.back();
  if (config) {
    for (const auto& [key, slot] : {std::pair<const char*, std::optional<int32_t>*>{"bos_token", &impl->bos},
                                    std::pair<const char*, std::optional<int32_t>*>{"eos_token", &impl->eos}}) {
      if (!config->contains(key)) continue;
      *slot = std::nullopt;
      if (auto name = config_token(*config, key)) {
        *slot = resolve(*name);
        if (!*slot) impl->warnings.push_back(std::string("tokenizer_config.json ") + key + " '" + *name + "' is not a token");
      }
    }
    if (auto it = config->find("add_bos_token"); it != config->end() && it->is_boolean()) impl->config_add_bos = it->get<bool>();
  }
  return Tokenizer(std::move(impl));
}

// ---------------------------------------------------------------- encode

void Tokenizer::Impl::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  auto model_pieces = [&](std::string seg, bool at_origin) {
    if (!pre_tokenizer) {
      model->tokenize(seg, out);
      return;
    }
    std::vector<tok::Piece> pieces;
    pieces.push_back(tok::Piece{std::move(seg), at_origin});
    pre_tokenizer->apply(pieces);
    for (const auto& p : pieces) model->tokenize(p.text, out);
  };
  if (text.empty()) return;
  std::vector<tok::AddedMatcher::Hit> hits =
      raw_matcher.empty() ? std::vector<tok::AddedMatcher::Hit>{{0, text.size(), -1}} : raw_matcher.split(text, added);
  for (const auto& h : hits) {
    if (h.id >= 0) {
      out.push_back(h.id);
      continue;
    }
    if (h.end == h.start) continue;
    std::string seg(text.substr(h.start, h.end - h.start));
    if (normalizer) normalizer->apply(seg);
    if (seg.empty()) continue;
    const bool at_origin = h.start == 0;
    if (normalized_matcher.empty()) {
      model_pieces(std::move(seg), at_origin);
      continue;
    }
    for (const auto& h2 : normalized_matcher.split(seg, added)) {
      if (h2.id >= 0) out.push_back(h2.id);
      else if (h2.end > h2.start) model_pieces(seg.substr(h2.start, h2.end - h2.start), at_origin && h2.start == 0);
    }
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const size_t bad = tok::utf8_invalid_at(text); bad != std::string_view::npos)
    throw InputError(Kind::BadValue, "<text>", "", "text is not valid UTF-8 at byte " + std::to_string(bad));
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 8);
  if (add_special_tokens) out = impl_->prefix;
  impl_->encode_into(text, out);
  if (add_special_tokens) out.insert(out.end(), impl_->suffix.begin(), impl_->suffix.end());
  return out;
}

// ---------------------------------------------------------------- decode and lookups

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  if (!m.decoder_unsupported.empty()) throw InputError(Kind::Unsupported, m.file, "", m.decoder_unsupported);
  std::unordered_set<std::string_view> special;
  if (skip_special_tokens)
    for (const auto& [id, t] : m.added)
      if (t.special) special.insert(t.content);
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    std::optional<std::string> t = id_to_token(id);
    if (!t) continue;
    if (skip_special_tokens && special.count(*t)) continue;
    tokens.push_back(std::move(*t));
  }
  if (!m.decoder) {
    std::string s;
    for (size_t k = 0; k < tokens.size(); ++k) s += (k ? " " : "") + tokens[k];
    return s;
  }
  m.decoder->decode_chain(tokens);
  std::string s;
  for (const auto& t : tokens) s += t;
  return s;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added.find(id); it != impl_->added.end()) {
    // Normalized added tokens read back in their normalized form (simple_id_to_token).
    std::string s = it->second.content;
    if (it->second.normalized && impl_->normalizer) impl_->normalizer->apply(s);
    return s;
  }
  if (const std::string* s = impl_->model->id_to_token(id)) return *s;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<bool> Tokenizer::config_add_bos() const { return impl_->config_add_bos; }
const std::vector<int32_t>& Tokenizer::special_prefix() const { return impl_->prefix; }
const std::vector<int32_t>& Tokenizer::special_suffix() const { return impl_->suffix; }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
const std::vector<std::string>& Tokenizer::warnings() const { return impl_->warnings; }
const std::string& Tokenizer::source() const { return impl_->file; }

}  // namespace qt::calib
