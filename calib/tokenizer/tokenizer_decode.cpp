// Decoders of tokenizer.json (decoders/*.rs, plus the ByteLevel and Metaspace decoders that live
// with their pre-tokenizers). Only used by Tokenizer::decode (debugging, `qtool tokenize`).
#include <nlohmann/json.hpp>

#include <string>

#include "calib/tokenizer/tokenizer_detail.h"
#include "libquant/error.h"

namespace qt::calib::tok {

namespace {

// Rust String::from_utf8_lossy: every maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t bad = utf8_invalid_at(s.substr(i));
    if (bad == std::string_view::npos) {
      out.append(s.substr(i));
      break;
    }
    out.append(s.substr(i, bad));
    i += bad;
    // Length of the longest prefix at i that could start a valid sequence (at least 1 byte).
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const unsigned char c = p[i];
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    size_t len = 1;
    for (size_t k = 0; k < need && i + len < s.size(); ++k) {
      const unsigned char cc = p[i + len];
      if (k == 0 ? (cc < lo || cc > hi) : (cc & 0xC0) != 0x80) break;
      ++len;
    }
    out += "\xEF\xBF\xBD";
    i += len;
  }
  return out;
}

class ByteLevelDec final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      // A token made only of byte-alphabet characters becomes those bytes; any other token
      // (e.g. an added token like "<|im_start|>" with characters outside it) is kept as is.
      std::string mapped;
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        const int b = unicode_to_byte(utf8_next(t, i));
        if (b < 0) { ok = false; break; }
        mapped += static_cast<char>(b);
      }
      bytes += ok ? mapped : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDec final : public Decoder {
 public:
  ReplaceDec(std::unique_ptr<Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::string out;
      for (const Seg& s : re_->find_matches(t))
        out += s.is_match ? content_ : t.substr(s.start, s.end - s.start);
      t = std::move(out);
    }
  }
 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

int hex_val(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ByteFallbackDec final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_invalid_at(pending) == std::string_view::npos) out.push_back(pending);
      else for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& t : tokens) {
      // "<0xAB>": u8::from_str_radix on the two characters (which also takes "+A").
      int v = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        const int h = hex_val(t[3]), l = hex_val(t[4]);
        if (h >= 0 && l >= 0) v = h * 16 + l;
        else if (t[3] == '+' && l >= 0) v = l;
      }
      if (v >= 0) {
        pending += static_cast<char>(v);
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDec final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDec final : public Decoder {
 public:
  StripDec(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<char32_t> chars;
      for (size_t i = 0; i < t.size();) chars.push_back(utf8_next(t, i));
      size_t b = 0, e = chars.size();
      for (size_t k = 0; k < start_ && b < chars.size() && chars[b] == content_; ++k) ++b;
      for (size_t k = 0; k < stop_ && e > b && chars[e - 1] == content_; ++k) --e;
      std::string out;
      for (size_t k = b; k < e; ++k) utf8_append(out, chars[k]);
      t = std::move(out);
    }
  }
 private:
  char32_t content_;
  size_t start_, stop_;
};

class MetaspaceDec final : public Decoder {
 public:
  MetaspaceDec(char32_t rep, bool drop_first) : rep_(rep), drop_first_(drop_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string out;
      const std::string& t = tokens[k];
      for (size_t i = 0; i < t.size();) {
        const char32_t c = utf8_next(t, i);
        // Every replacement char of the first token is dropped unless prepend_scheme is "never".
        if (c == rep_) {
          if (!(k == 0 && drop_first_)) out += ' ';
        } else {
          utf8_append(out, c);
        }
      }
      tokens[k] = std::move(out);
    }
  }
 private:
  char32_t rep_;
  bool drop_first_;
};

// BPEDecoder: the end-of-word suffix becomes a space (nothing after the last token).
class BpeDec final : public Decoder {
 public:
  explicit BpeDec(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string rep = (k + 1 == tokens.size()) ? "" : " ";
      std::string out;
      const std::string& t = tokens[k];
      size_t prev = 0, pos = 0;
      while (!suffix_.empty() && (pos = t.find(suffix_, prev)) != std::string::npos) {
        out.append(t, prev, pos - prev);
        out += rep;
        prev = pos + suffix_.size();
      }
      out.append(t, prev, std::string::npos);
      tokens[k] = std::move(out);
    }
  }
 private:
  std::string suffix_;
};

class DecSequence final : public Decoder {
 public:
  explicit DecSequence(std::vector<std::unique_ptr<Decoder>> items) : items_(std::move(items)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : items_) d->decode_chain(tokens);
  }
 private:
  std::vector<std::unique_ptr<Decoder>> items_;
};

char32_t single_char(const std::string& s, const std::string& file, const std::string& where) {
  size_t i = 0;
  if (s.empty()) throw InputError(InputError::Kind::BadFile, file, "", where + ": expected one character");
  const char32_t c = utf8_next(s, i);
  if (i != s.size()) throw InputError(InputError::Kind::BadFile, file, "", where + ": expected one character, got '" + s + "'");
  return c;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& file, std::string& unsupported) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, file, "decoder");
  const std::string where = "decoder '" + type + "'";
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Replace")
    return std::make_unique<ReplaceDec>(json_pattern(j, "pattern", file, where), json_string(j, "content", file, where));
  if (type == "Strip") {
    auto num = [&](const char* k) -> size_t {
      const auto it = j.find(k);
      if (it == j.end() || !it->is_number_unsigned())
        throw InputError(InputError::Kind::BadFile, file, "", where + ": '" + k + "' must be a non-negative integer");
      return it->get<size_t>();
    };
    return std::make_unique<StripDec>(single_char(json_string(j, "content", file, where), file, where), num("start"),
                                      num("stop"));
  }
  if (type == "Metaspace") {
    const char32_t rep = single_char(json_string(j, "replacement", file, where), file, where);
    auto scheme = json_opt_string(j, "prepend_scheme", file, where);
    bool never = scheme && *scheme == "never";
    const auto aps = j.find("add_prefix_space");
    if (aps != j.end() && aps->is_boolean() && !aps->get<bool>()) never = true;
    return std::make_unique<MetaspaceDec>(rep, !never);
  }
  if (type == "BPEDecoder") return std::make_unique<BpeDec>(json_opt_string(j, "suffix", file, where).value_or("</w>"));
  if (type == "Sequence") {
    const auto it = j.find("decoders");
    if (it == j.end() || !it->is_array())
      throw InputError(InputError::Kind::BadFile, file, "", where + ": 'decoders' must be a list");
    std::vector<std::unique_ptr<Decoder>> items;
    for (const auto& d : *it) {
      auto made = make_decoder(d, file, unsupported);
      if (!unsupported.empty()) return nullptr;
      if (made) items.push_back(std::move(made));
    }
    return std::make_unique<DecSequence>(std::move(items));
  }
  unsupported = "unsupported decoder '" + type + "'";
  return nullptr;
}

}  // namespace qt::calib::tok
