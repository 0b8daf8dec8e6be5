// tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from a GGUF file's
// tokenizer.* metadata (gguf_vocab.h).
#include "formats/gguf_vocab.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "libquant/error.h"

namespace qt {
using nlohmann::json;
using Kind = InputError::Kind;

std::optional<int64_t> gguf_token_id(const GgufFile& g, const char* key, int64_t n_tokens,
                                    std::vector<std::string>* notes) {
  if (!g.has(key)) return std::nullopt;
  const GgufKv* kv = g.find_kv(key);
  int64_t v = -1;
  if (kv->type == GgufValueType::I32 || kv->type == GgufValueType::I64 || kv->type == GgufValueType::I8 ||
      kv->type == GgufValueType::I16)
    v = g.get_i64(key);
  else
    v = static_cast<int64_t>(g.get_u64(key));
  // llama.cpp writes -1 / 0xFFFFFFFF for "none" and ignores ids outside the vocabulary.
  if (v < 0 || v == 0xFFFFFFFFll) return std::nullopt;
  if (v >= n_tokens) {
    if (notes) notes->push_back(std::string(key) + " = " + std::to_string(v) + " is outside the vocabulary; ignored");
    return std::nullopt;
  }
  return v;
}

namespace {

// Original (tokenizer.json) split regexes of the pre-tokenizers llama.cpp knows.
const std::string kGpt2Re = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const std::string kLlama3Re =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kQwen2Re =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kGpt4oRe =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string kTekkenRe =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// name, regexes, ignore_merges, add_bos default, clean_spaces: llama.cpp llama-vocab.cpp's
// load() (flags) and llm_tokenizer_bpe (regexes).
const std::vector<GgufPreTokenizer>& pre_table() {
  static const std::vector<GgufPreTokenizer> t = [] {
    std::vector<GgufPreTokenizer> v;
    auto add = [&](std::string_view name, std::vector<std::string> re, bool ignore_merges, bool add_bos, bool clean) {
      v.push_back({name, std::move(re), ignore_merges, add_bos, clean});
    };
    // llama.cpp's fallback when the key is missing ("default").
    add("default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Re, R"(\p{N}+)", R"([0-9][0-9][0-9])"}, false, false, true);
    for (auto n : {"gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"}) add(n, {kGpt2Re}, false, false, true);
    for (auto n : {"starcoder", "refact", "codeshell", "exaone", "minerva-7b"}) add(n, {R"(\p{N})", kGpt2Re}, false, false, true);
    for (auto n : {"smollm", "command-r"}) add(n, {R"(\p{N})", kGpt2Re}, false, false, false);
    for (auto n : {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"})
      add(n, {kLlama3Re}, true, true, true);
    for (auto n : {"dbrx", "smaug-bpe"}) add(n, {kLlama3Re}, false, false, true);
    add("falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2Re, R"([0-9][0-9][0-9])"}, false, false, true);
    for (auto n : {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"})
      add(n, {kQwen2Re}, false, false, std::string_view(n) == "stablelm2" || std::string_view(n) == "megrez");
    for (auto n : {"gpt-4o", "llama4"}) add(n, {kGpt4oRe}, false, false, false);
    add("tekken", {kTekkenRe}, true, true, false);
    return v;
  }();
  return t;
}

// Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF), as serde_json and
// nlohmann::json require for JSON strings.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
    else return false;
    if (i + static_cast<size_t>(n) >= s.size()) return false;  // needs bytes i+1 .. i+n
    for (size_t k = 1; k <= static_cast<size_t>(n); ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += static_cast<size_t>(n) + 1;
  }
  return true;
}

// Byte length of the UTF-8 character starting with byte c (1 for stray continuation bytes).
size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4, kTypeByte = 6;

json added_token(int64_t id, const std::string& content, bool special) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

json template_processing(const std::vector<std::string>& tokens, std::optional<int64_t> bos,
                         std::optional<int64_t> eos) {
  json single = json::array(), pair = json::array(), specials = json::object();
  auto special = [&](int64_t id, int type_id) {
    return json{{"SpecialToken", {{"id", tokens[static_cast<size_t>(id)]}, {"type_id", type_id}}}};
  };
  auto seq = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  for (int part = 0; part < 2; ++part) {
    json& arr = part == 0 ? single : pair;
    for (int s = 0; s < (part == 0 ? 1 : 2); ++s) {
      if (bos) arr.push_back(special(*bos, s));
      arr.push_back(seq(s == 0 ? "A" : "B", s));
      if (eos) arr.push_back(special(*eos, s));
    }
  }
  for (auto id : {bos, eos})
    if (id) {
      const std::string& t = tokens[static_cast<size_t>(*id)];
      specials[t] = {{"id", t}, {"ids", {*id}}, {"tokens", {t}}};
    }
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

}  // namespace

const GgufPreTokenizer* find_gguf_pre_tokenizer(std::string_view pre) {
  for (const auto& p : pre_table())
    if (p.name == pre) return &p;
  return nullptr;
}

std::string gguf_pre_tokenizer_names() {
  std::string s;
  for (const auto& p : pre_table()) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

std::vector<std::pair<std::string, std::string>> sentencepiece_merges(const std::vector<std::string>& tokens,
                                                                      const std::vector<int32_t>& types,
                                                                      const std::vector<float>& scores) {
  QT_ASSERT(types.size() == tokens.size() && scores.size() == tokens.size());
  // Tokens that can take part in merges: not control, unknown or byte tokens (llama.cpp never
  // builds those from text pieces; HF's byte_fallback handles the bytes).
  auto mergeable = [&](size_t i) {
    return types[i] != kTypeControl && types[i] != kTypeUnknown && types[i] != kTypeByte;
  };
  std::unordered_map<std::string_view, size_t> id_of;
  for (size_t i = 0; i < tokens.size(); ++i)
    if (mergeable(i)) id_of.emplace(tokens[i], i);  // first occurrence wins, as in the vocab
  struct M { float score; size_t merged; size_t left_len; std::string_view l, r; };
  std::vector<M> ms;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!mergeable(i)) continue;
    auto it = id_of.find(tokens[i]);
    if (it == id_of.end() || it->second != i) continue;  // a duplicate
    const std::string_view t = tokens[i];
    for (size_t cut = utf8_len(static_cast<unsigned char>(t[0])); cut < t.size();
         cut += utf8_len(static_cast<unsigned char>(t[cut]))) {
      const std::string_view l = t.substr(0, cut), r = t.substr(cut);
      if (id_of.count(l) && id_of.count(r)) ms.push_back({scores[i], i, cut, l, r});
    }
  }
  // Highest merged score first (llama.cpp pops the best-scoring bigram); ties deterministic.
  std::sort(ms.begin(), ms.end(), [](const M& a, const M& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.merged != b.merged) return a.merged < b.merged;
    return a.left_len < b.left_len;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(ms.size());
  for (const M& mm : ms) out.emplace_back(std::string(mm.l), std::string(mm.r));
  return out;
}

HfTokenizerFiles build_hf_tokenizer(const GgufFile& g) {
  const std::string& file = g.path();
  HfTokenizerFiles out;
  if (!g.has("tokenizer.ggml.model"))
    throw InputError(Kind::Missing, file, "", "metadata key 'tokenizer.ggml.model' is missing: the file has no tokenizer");
  const std::string model = g.get_string("tokenizer.ggml.model");
  if (model != "gpt2" && model != "llama")
    throw InputError(Kind::Unsupported, file, "", "tokenizer model '" + model + "' is not supported",
                     "gpt2 (byte-level BPE) or llama (SentencePiece)");
  if (!g.has("tokenizer.ggml.tokens"))
    throw InputError(Kind::Missing, file, "", "metadata key 'tokenizer.ggml.tokens' is missing");
  const std::vector<std::string> tokens = g.get_array<std::string>("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  if (n == 0) throw InputError(Kind::BadFile, file, "", "tokenizer.ggml.tokens is empty");
  std::vector<int32_t> types(n, kTypeNormal);
  if (g.has("tokenizer.ggml.token_type")) {
    types = g.get_array<int32_t>("tokenizer.ggml.token_type");
    if (types.size() != n)
      throw InputError(Kind::BadFile, file, "", "tokenizer.ggml.token_type has a different length than tokens",
                       std::to_string(n), std::to_string(types.size()));
  }
  std::vector<float> scores;
  if (g.has("tokenizer.ggml.scores")) {
    scores = g.get_array<float>("tokenizer.ggml.scores");
    if (scores.size() != n)
      throw InputError(Kind::BadFile, file, "", "tokenizer.ggml.scores has a different length than tokens",
                       std::to_string(n), std::to_string(scores.size()));
  }
  for (size_t i = 0; i < n; ++i)
    if (!valid_utf8(tokens[i]))
      throw InputError(Kind::BadFile, file, "", "token " + std::to_string(i) + " of tokenizer.ggml.tokens is not valid UTF-8");

  const int64_t nt = static_cast<int64_t>(n);
  out.bos_id = gguf_token_id(g, "tokenizer.ggml.bos_token_id", nt, &out.notes);
  out.eos_id = gguf_token_id(g, "tokenizer.ggml.eos_token_id", nt, &out.notes);
  out.unk_id = gguf_token_id(g, "tokenizer.ggml.unknown_token_id", nt, &out.notes);
  out.pad_id = gguf_token_id(g, "tokenizer.ggml.padding_token_id", nt, &out.notes);
  const auto eot_id = gguf_token_id(g, "tokenizer.ggml.eot_token_id", nt, &out.notes);
  const auto eom_id = gguf_token_id(g, "tokenizer.ggml.eom_token_id", nt, &out.notes);
  const bool spm = model == "llama";

  // Vocabulary (first occurrence of a duplicated string keeps it, as HF's map can hold one).
  json vocab = json::object();
  size_t duplicates = 0;
  for (size_t i = 0; i < n; ++i) {
    if (vocab.contains(tokens[i])) { ++duplicates; continue; }
    vocab[tokens[i]] = static_cast<int64_t>(i);
  }
  if (duplicates)
    out.notes.push_back(std::to_string(duplicates) + " duplicate token strings: only the first id of each is in tokenizer.json's vocabulary");

  json added = json::array();
  json added_decoder = json::object();
  for (size_t i = 0; i < n; ++i) {
    const int32_t ty = types[i];
    if (ty != kTypeControl && ty != kTypeUnknown && ty != kTypeUserDefined) continue;
    const bool special = ty != kTypeUserDefined;
    added.push_back(added_token(static_cast<int64_t>(i), tokens[i], special));
    added_decoder[std::to_string(i)] = {{"content", tokens[i]}, {"lstrip", false}, {"normalized", false},
                                        {"rstrip", false}, {"single_word", false}, {"special", special}};
  }

  bool add_bos = spm, add_eos = false, clean_spaces = false;
  json tk;
  tk["version"] = "1.0";
  tk["truncation"] = nullptr;
  tk["padding"] = nullptr;
  tk["added_tokens"] = added;
  json bpe = {{"type", "BPE"}, {"dropout", nullptr}, {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr}, {"vocab", vocab}};

  if (!spm) {
    const std::string pre = g.has("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "default";
    if (!g.has("tokenizer.ggml.pre"))
      out.notes.push_back("no tokenizer.ggml.pre: using llama.cpp's 'default' pre-tokenizer, as llama.cpp does");
    const GgufPreTokenizer* p = find_gguf_pre_tokenizer(pre);
    if (!p)
      throw InputError(Kind::Unsupported, file, "", "pre-tokenizer '" + pre + "' (tokenizer.ggml.pre) is not in the table",
                       gguf_pre_tokenizer_names());
    add_bos = p->add_bos;
    clean_spaces = p->clean_spaces;
    if (!g.has("tokenizer.ggml.merges"))
      throw InputError(Kind::Missing, file, "", "metadata key 'tokenizer.ggml.merges' is missing (a gpt2 tokenizer needs its merges)");
    const std::vector<std::string> merges = g.get_array<std::string>("tokenizer.ggml.merges");
    json jm = json::array();
    size_t dropped = 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& s = merges[i];
      const size_t sp = s.find(' ', 1);  // as llama.cpp: a left piece may start with a space
      if (sp == std::string::npos || sp + 1 >= s.size())
        throw InputError(Kind::BadFile, file, "", "merge " + std::to_string(i) + " of tokenizer.ggml.merges is not 'LEFT RIGHT'");
      std::string l = s.substr(0, sp), r = s.substr(sp + 1);
      if (!valid_utf8(l) || !valid_utf8(r))
        throw InputError(Kind::BadFile, file, "", "merge " + std::to_string(i) + " of tokenizer.ggml.merges is not valid UTF-8");
      // HF refuses merges whose pieces or result are not in the vocabulary; llama.cpp never
      // applies them (their result has no id), so dropping them changes nothing.
      if (!vocab.contains(l) || !vocab.contains(r) || !vocab.contains(l + r)) { ++dropped; continue; }
      jm.push_back(json::array({std::move(l), std::move(r)}));
    }
    if (dropped) out.notes.push_back(std::to_string(dropped) + " merges whose pieces are not in the vocabulary were dropped");
    bpe["unk_token"] = nullptr;
    bpe["fuse_unk"] = false;
    bpe["byte_fallback"] = false;
    bpe["ignore_merges"] = p->ignore_merges;
    bpe["merges"] = std::move(jm);
    tk["normalizer"] = nullptr;
    json pretoks = json::array();
    for (const auto& re : p->regexes)
      pretoks.push_back({{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}});
    pretoks.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
    tk["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", pretoks}};
    tk["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  } else {
    if (scores.empty()) {
      // llama.cpp defaults every score to 0; rank by position then (earlier = more frequent).
      scores.resize(n);
      for (size_t i = 0; i < n; ++i) scores[i] = -static_cast<float>(i);
      out.notes.push_back("no tokenizer.ggml.scores: merges ranked by token id");
    }
    const bool add_space_prefix = g.has("tokenizer.ggml.add_space_prefix") ? g.get_bool("tokenizer.ggml.add_space_prefix") : true;
    bool have_bytes = false;
    for (int32_t ty : types) have_bytes |= ty == kTypeByte;
    json jm = json::array();
    for (auto& [l, r] : sentencepiece_merges(tokens, types, scores)) jm.push_back(json::array({l, r}));
    bpe["unk_token"] = out.unk_id ? json(tokens[static_cast<size_t>(*out.unk_id)]) : json(nullptr);
    bpe["fuse_unk"] = true;
    bpe["byte_fallback"] = have_bytes;
    bpe["ignore_merges"] = false;
    bpe["merges"] = std::move(jm);
    const std::string sp = "\u2581";  // SentencePiece's whitespace marker
    json norms = json::array();
    if (add_space_prefix) norms.push_back({{"type", "Prepend"}, {"prepend", sp}});
    norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}});
    tk["normalizer"] = {{"type", "Sequence"}, {"normalizers", norms}};
    tk["pre_tokenizer"] = nullptr;
    json decs = json::array({{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}},
                             {{"type", "ByteFallback"}},
                             {{"type", "Fuse"}}});
    if (add_space_prefix) decs.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    tk["decoder"] = {{"type", "Sequence"}, {"decoders", decs}};
  }
  if (g.has("tokenizer.ggml.add_bos_token")) add_bos = g.get_bool("tokenizer.ggml.add_bos_token");
  if (g.has("tokenizer.ggml.add_eos_token")) add_eos = g.get_bool("tokenizer.ggml.add_eos_token");
  if (add_bos && !out.bos_id) {
    out.notes.push_back("add_bos_token is set but there is no BOS id; no BOS is added");
    add_bos = false;
  }
  if (add_eos && !out.eos_id) {
    out.notes.push_back("add_eos_token is set but there is no EOS id; no EOS is added");
    add_eos = false;
  }
  tk["model"] = std::move(bpe);
  json post = nullptr;
  if (add_bos || add_eos)
    post = template_processing(tokens, add_bos ? out.bos_id : std::nullopt, add_eos ? out.eos_id : std::nullopt);
  if (!spm) {
    json bl = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
    post = post.is_null() ? bl : json{{"type", "Sequence"}, {"processors", {bl, post}}};
  }
  tk["post_processor"] = post;
  out.tokenizer = std::move(tk);

  // tokenizer_config.json: PreTrainedTokenizerFast takes tokenizer.json as it is (a model-specific
  // class could rebuild normalizer / pre-tokenizer its own way and diverge from llama.cpp).
  json tc;
  tc["tokenizer_class"] = "PreTrainedTokenizerFast";
  tc["add_bos_token"] = add_bos;
  tc["add_eos_token"] = add_eos;
  tc["added_tokens_decoder"] = added_decoder;
  tc["clean_up_tokenization_spaces"] = clean_spaces;
  auto tok_or_null = [&](std::optional<int64_t> id) { return id ? json(tokens[static_cast<size_t>(*id)]) : json(nullptr); };
  tc["bos_token"] = tok_or_null(out.bos_id);
  tc["eos_token"] = tok_or_null(out.eos_id);
  tc["unk_token"] = tok_or_null(out.unk_id);
  tc["pad_token"] = tok_or_null(out.pad_id);
  if (g.has("tokenizer.chat_template")) {
    const std::string tmpl = g.get_string("tokenizer.chat_template");
    if (!valid_utf8(tmpl)) throw InputError(Kind::BadFile, file, "", "tokenizer.chat_template is not valid UTF-8");
    tc["chat_template"] = tmpl;
  }
  const std::string ctx_key = (g.has("general.architecture") ? g.get_string("general.architecture") : std::string("llama")) +
                              ".context_length";
  if (g.has(ctx_key)) tc["model_max_length"] = g.get_i64(ctx_key);
  out.tokenizer_config = std::move(tc);

  // generation_config.json: EOS also stops on end-of-turn / end-of-message tokens.
  json gc = json::object();
  if (out.bos_id) gc["bos_token_id"] = *out.bos_id;
  std::vector<int64_t> eos;
  for (auto id : {out.eos_id, eot_id, eom_id})
    if (id && std::find(eos.begin(), eos.end(), *id) == eos.end()) eos.push_back(*id);
  if (eos.size() == 1) gc["eos_token_id"] = eos[0];
  else if (eos.size() > 1) gc["eos_token_id"] = eos;
  if (out.pad_id) gc["pad_token_id"] = *out.pad_id;
  out.generation_config = std::move(gc);
  return out;
}

}  // namespace qt
