// Normalizers and pre-tokenizers of tokenizer.json (normalizers/*.rs, pre_tokenizers/*.rs).
#include <unicode/uchar.h>

#include <nlohmann/json.hpp>

#include <string>

#include "calib/tokenizer/tokenizer_detail.h"
#include "libquant/error.h"

namespace qt::calib::tok {

namespace {

// ---------------------------------------------------------------- normalizers

class UnicodeNorm final : public Normalizer {
 public:
  explicit UnicodeNorm(NormForm f) : form_(f) {}
  void apply(std::string& s) const override { s = unicode_normalize(s, form_); }
 private:
  NormForm form_;
};

class Lowercase final : public Normalizer {
 public:
  void apply(std::string& s) const override { s = unicode_lowercase(s); }
};

// Prepend: only a non-empty string gets the prefix (NormalizedString::prepend).
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string p) : prefix_(std::move(p)) {}
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix_);
  }
 private:
  std::string prefix_;
};

// Replace: every match of the pattern (String patterns are literal) by `content`.
class Replace final : public Normalizer {
 public:
  Replace(std::unique_ptr<Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void apply(std::string& s) const override {
    std::vector<std::pair<size_t, size_t>> spans;
    re_->find_iter(s, spans);
    if (spans.empty()) return;
    std::string out;
    out.reserve(s.size() + spans.size() * content_.size());
    size_t prev = 0;
    for (const auto& [a, b] : spans) {
      out.append(s, prev, a - prev);
      out += content_;
      prev = b;
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }
 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

// Strip: leading/trailing Unicode White_Space.
class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!is_white_space(utf8_next(s, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!is_white_space(utf8_next(s, i))) break;
        e = start;
      }
    }
    s = s.substr(b, e - b);
  }
 private:
  bool left_, right_;
};

// ByteLevel as a normalizer: every byte becomes its GPT-2 stand-in character.
class ByteLevelNorm final : public Normalizer {
 public:
  void apply(std::string& s) const override {
    const auto& table = byte_to_unicode();
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char b : s) out += table[b];
    s = std::move(out);
  }
};

class NormSequence final : public Normalizer {
 public:
  explicit NormSequence(std::vector<std::unique_ptr<Normalizer>> items) : items_(std::move(items)) {}
  void apply(std::string& s) const override {
    for (const auto& n : items_) n->apply(s);
  }
 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

// ---------------------------------------------------------------- pre-tokenizers

SplitBehavior parse_behavior(const nlohmann::json& j, const std::string& file, const std::string& where) {
  const std::string b = json_string(j, "behavior", file, where);
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  throw InputError(InputError::Kind::Unsupported, file, "", where + ": unsupported split behavior '" + b + "'");
}

// Segments of `s` where every occurrence of the single character `ch` (UTF-8) is a match of
// its own (tokenizers' char patterns).
std::vector<Seg> char_matches(const std::string& s, const std::string& ch) {
  std::vector<Seg> segs;
  size_t prev = 0, pos = 0;
  while ((pos = s.find(ch, pos)) != std::string::npos) {
    if (prev != pos) segs.push_back({prev, pos, false});
    segs.push_back({pos, pos + ch.size(), true});
    pos += ch.size();
    prev = pos;
  }
  if (prev != s.size() || s.empty()) segs.push_back({prev, s.size(), false});
  return segs;
}

class SplitPre final : public PreTokenizer {
 public:
  SplitPre(std::unique_ptr<Regex> re, SplitBehavior b, bool invert) : re_(std::move(re)), behavior_(b), invert_(invert) {}
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (const auto& p : pieces) split_piece(p, re_->find_matches(p.text, invert_), behavior_, out);
    pieces.swap(out);
  }
 private:
  std::unique_ptr<Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

// The GPT-2 split used by ByteLevel(use_regex=true) (byte_level.rs).
const Regex& gpt2_regex() {
  static const Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                        false, "", "ByteLevel");
  return re;
}

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> split;
    split.reserve(pieces.size());
    for (auto& p : pieces) {
      if (add_prefix_space_ && p.text[0] != ' ') p.text.insert(0, 1, ' ');
      if (use_regex_) split_piece(p, gpt2_regex().find_matches(p.text), SplitBehavior::Isolated, split);
      else split.push_back(std::move(p));
    }
    // Then every byte of every piece becomes its stand-in character.
    const auto& table = byte_to_unicode();
    for (auto& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char b : p.text) mapped += table[b];
      p.text = std::move(mapped);
    }
    pieces.swap(split);
  }
 private:
  bool add_prefix_space_, use_regex_;
};

enum class PrependScheme { Always, First, Never };

class MetaspacePre final : public PreTokenizer {
 public:
  MetaspacePre(std::string replacement, PrependScheme scheme, bool split)
      : rep_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (auto& p : pieces) {
      // Every ' ' (U+0020 only) becomes the replacement character.
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') t += rep_;
        else t += c;
      }
      const bool starts = t.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_origin)))
        t.insert(0, rep_);
      p.text = std::move(t);
      if (split_) split_piece(p, char_matches(p.text, rep_), SplitBehavior::MergedWithNext, out);
      else out.push_back(std::move(p));
    }
    pieces.swap(out);
  }
 private:
  std::string rep_;
  PrependScheme scheme_;
  bool split_;
};

// Digits: numeric characters (Rust char::is_numeric = Nd, Nl, No) split off one by one
// (individual_digits) or as runs.
class DigitsPre final : public PreTokenizer {
 public:
  explicit DigitsPre(bool individual) : individual_(individual) {}
  void apply(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (const auto& p : pieces) {
      std::vector<Seg> segs;
      size_t prev = 0, i = 0;
      while (i < p.text.size()) {
        const size_t at = i;
        const char32_t c = utf8_next(p.text, i);
        const int t = c < 0x80 ? (c >= '0' && c <= '9' ? int{U_DECIMAL_DIGIT_NUMBER} : int{U_UNASSIGNED})
                               : general_category(c);
        if (t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER) {
          if (prev < at) segs.push_back({prev, at, false});
          segs.push_back({at, i, true});
          prev = i;
        }
      }
      if (prev < p.text.size()) segs.push_back({prev, p.text.size(), false});
      split_piece(p, segs, individual_ ? SplitBehavior::Isolated : SplitBehavior::Contiguous, out);
    }
    pieces.swap(out);
  }
 private:
  bool individual_;
};

class PreSequence final : public PreTokenizer {
 public:
  explicit PreSequence(std::vector<std::unique_ptr<PreTokenizer>> items) : items_(std::move(items)) {}
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& p : items_) p->apply(pieces);
  }
 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, file, "normalizer");
  const std::string where = "normalizer '" + type + "'";
  if (type == "NFC") return std::make_unique<UnicodeNorm>(NormForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNorm>(NormForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNorm>(NormForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNorm>(NormForm::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNorm>();
  if (type == "Prepend") return std::make_unique<Prepend>(json_string(j, "prepend", file, where));
  if (type == "Replace")
    return std::make_unique<Replace>(json_pattern(j, "pattern", file, where), json_string(j, "content", file, where));
  if (type == "Strip")
    return std::make_unique<Strip>(json_bool(j, "strip_left", false, file, where),
                                   json_bool(j, "strip_right", false, file, where));
  if (type == "Sequence") {
    const auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array())
      throw InputError(InputError::Kind::BadFile, file, "", where + ": 'normalizers' must be a list");
    std::vector<std::unique_ptr<Normalizer>> items;
    for (const auto& n : *it)
      if (auto made = make_normalizer(n, file)) items.push_back(std::move(made));
    return std::make_unique<NormSequence>(std::move(items));
  }
  throw_unsupported(file, "normalizer", type);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& file) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, file, "pre_tokenizer");
  const std::string where = "pre_tokenizer '" + type + "'";
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPre>(json_bool(j, "add_prefix_space", true, file, where),
                                          json_bool(j, "use_regex", true, file, where));
  if (type == "Split")
    return std::make_unique<SplitPre>(json_pattern(j, "pattern", file, where), parse_behavior(j, file, where),
                                      json_bool(j, "invert", false, file, where));
  if (type == "Digits") return std::make_unique<DigitsPre>(json_bool(j, "individual_digits", false, file, where));
  if (type == "Metaspace") {
    const std::string rep = json_string(j, "replacement", file, where);
    size_t i = 0;
    if (rep.empty() || (utf8_next(rep, i), i != rep.size()))
      throw InputError(InputError::Kind::BadFile, file, "", where + ": 'replacement' must be one character");
    PrependScheme scheme = PrependScheme::Always;
    if (auto ps = json_opt_string(j, "prepend_scheme", file, where)) {
      if (*ps == "always") scheme = PrependScheme::Always;
      else if (*ps == "first") scheme = PrependScheme::First;
      else if (*ps == "never") scheme = PrependScheme::Never;
      else throw InputError(InputError::Kind::BadFile, file, "", where + ": unknown prepend_scheme '" + *ps + "'");
    }
    // Legacy add_prefix_space=false is accepted only together with prepend_scheme "never"
    // (prepend_scheme defaults to "always"); `tokenizers` refuses the file otherwise.
    const auto aps = j.find("add_prefix_space");
    if (aps != j.end() && aps->is_boolean() && !aps->get<bool>() && scheme != PrependScheme::Never)
      throw InputError(InputError::Kind::BadFile, file, "",
                       where + ": add_prefix_space=false contradicts prepend_scheme (default \"always\")");
    return std::make_unique<MetaspacePre>(rep, scheme, json_bool(j, "split", true, file, where));
  }
  if (type == "Sequence") {
    const auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array())
      throw InputError(InputError::Kind::BadFile, file, "", where + ": 'pretokenizers' must be a list");
    std::vector<std::unique_ptr<PreTokenizer>> items;
    for (const auto& p : *it)
      if (auto made = make_pre_tokenizer(p, file)) items.push_back(std::move(made));
    return std::make_unique<PreSequence>(std::move(items));
  }
  throw_unsupported(file, "pre_tokenizer", type);
}

}  // namespace qt::calib::tok
