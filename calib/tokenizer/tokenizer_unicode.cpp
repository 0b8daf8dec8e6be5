// UTF-8 helpers, ICU-backed Unicode operations and the GPT-2 byte-level alphabet.
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uset.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <string>

#include "calib/tokenizer/tokenizer_detail.h"
#include "libquant/error.h"

namespace qt::calib::tok {

size_t utf8_invalid_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return k < n && (p[k] & 0xC0) == 0x80; };
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) {
      if (!cont(i + 1)) return i;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      if (i + 1 >= n) return i;
      const unsigned char c1 = p[i + 1];
      // E0 needs A0..BF (no overlongs); ED needs 80..9F (no UTF-16 surrogates).
      const unsigned char lo = (c == 0xE0) ? 0xA0 : 0x80, hi = (c == 0xED) ? 0x9F : 0xBF;
      if (c1 < lo || c1 > hi || !cont(i + 2)) return i;
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      if (i + 1 >= n) return i;
      const unsigned char c1 = p[i + 1];
      // F0 needs 90..BF (no overlongs); F4 needs 80..8F (nothing above U+10FFFF).
      const unsigned char lo = (c == 0xF0) ? 0x90 : 0x80, hi = (c == 0xF4) ? 0x8F : 0xBF;
      if (c1 < lo || c1 > hi || !cont(i + 2) || !cont(i + 3)) return i;
      i += 4;
    } else {
      return i;
    }
  }
  return std::string_view::npos;
}

char32_t utf8_next(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char c = p[i];
  if (c < 0x80) { ++i; return c; }
  if (c < 0xE0) {
    const char32_t cp = ((c & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    const char32_t cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
    i += 3;
    return cp;
  }
  const char32_t cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) |
                      ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
  i += 4;
  return cp;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

std::u16string to_utf16(std::string_view s) {
  UErrorCode st = U_ZERO_ERROR;
  int32_t len = 0;
  u_strFromUTF8(nullptr, 0, &len, s.data(), static_cast<int32_t>(s.size()), &st);
  if (st != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(st)) QT_ASSERT(false && "u_strFromUTF8 failed on valid UTF-8");
  std::u16string out(static_cast<size_t>(len), u'\0');
  st = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(out.data()), len, nullptr, s.data(),
                static_cast<int32_t>(s.size()), &st);
  QT_ASSERT(U_SUCCESS(st));
  return out;
}

std::string to_utf8(const UChar* s, int32_t n) {
  UErrorCode st = U_ZERO_ERROR;
  int32_t len = 0;
  u_strToUTF8(nullptr, 0, &len, s, n, &st);
  std::string out(static_cast<size_t>(len), '\0');
  st = U_ZERO_ERROR;
  u_strToUTF8(out.data(), len, nullptr, s, n, &st);
  QT_ASSERT(U_SUCCESS(st));
  return out;
}

// `tokenizers` normalizes with the `unicode-normalization-alignments` crate, whose tables are
// Unicode 9.0: a code point assigned later is an unknown starter (canonical combining class 0,
// no decomposition, no composition). ICU's FilteredNormalizer2 over [:Age=9.0:] does the same:
// code points outside the set pass through unchanged and split the text like starters.
// (Checked against `tokenizers` for every combining mark ICU knows; see make_goldens.py's corpus.)
constexpr char16_t kNormalizationAgeSet[] = u"[:Age=9.0:]";

const UNormalizer2* normalizer_for(NormForm f) {
  struct Filtered {
    std::array<UNormalizer2*, 4> n{};
    USet* set = nullptr;
    Filtered() {
      UErrorCode st = U_ZERO_ERROR;
      set = uset_openPattern(reinterpret_cast<const UChar*>(kNormalizationAgeSet), -1, &st);
      QT_ASSERT(U_SUCCESS(st));
      uset_freeze(set);
      const UNormalizer2* base[4] = {unorm2_getNFCInstance(&st), unorm2_getNFDInstance(&st),
                                     unorm2_getNFKCInstance(&st), unorm2_getNFKDInstance(&st)};
      QT_ASSERT(U_SUCCESS(st));
      for (int k = 0; k < 4; ++k) {
        n[static_cast<size_t>(k)] = unorm2_openFiltered(base[k], set, &st);
        QT_ASSERT(U_SUCCESS(st));
      }
    }
    // Lives for the whole process (normalizers are shared by every Tokenizer and thread).
  };
  static const Filtered filtered;
  return filtered.n[static_cast<size_t>(f)];
}

}  // namespace

std::string unicode_normalize(std::string_view s, NormForm form) {
  // ASCII is invariant under all four forms; most calibration text takes this path.
  if (is_ascii(s)) return std::string(s);
  const UNormalizer2* norm = normalizer_for(form);
  const std::u16string in = to_utf16(s);
  const auto* src = reinterpret_cast<const UChar*>(in.data());
  const int32_t n = static_cast<int32_t>(in.size());
  UErrorCode st = U_ZERO_ERROR;
  // Already-normalized text (the common case) is returned without rebuilding it.
  if (unorm2_isNormalized(norm, src, n, &st) && U_SUCCESS(st)) return std::string(s);
  st = U_ZERO_ERROR;
  int32_t len = unorm2_normalize(norm, src, n, nullptr, 0, &st);
  std::u16string out(static_cast<size_t>(len), u'\0');
  st = U_ZERO_ERROR;
  unorm2_normalize(norm, src, n, reinterpret_cast<UChar*>(out.data()), len, &st);
  QT_ASSERT(U_SUCCESS(st));
  return to_utf8(reinterpret_cast<const UChar*>(out.data()), len);
}

std::string unicode_lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out += static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b);
      ++i;
      continue;
    }
    const char32_t cp = utf8_next(s, i);
    // One code point at a time through ICU's full (SpecialCasing) mapping in the root locale;
    // with no neighbours in the string no context rule (final sigma) can fire, which is
    // exactly Rust's char::to_lowercase.
    UChar src[2];
    int32_t n = 0;
    U16_APPEND_UNSAFE(src, n, cp);
    UChar dst[8];
    UErrorCode st = U_ZERO_ERROR;
    const int32_t len = u_strToLower(dst, 8, src, n, "", &st);
    QT_ASSERT(U_SUCCESS(st) && len <= 8);
    out += to_utf8(dst, len);
  }
  return out;
}

namespace {
#include "calib/tokenizer/tokenizer_unicode_table.inc"
}  // namespace

std::span<const CategoryRange> onig_newer_ranges() { return kOnigNewerRanges; }
const char* onig_table_base_unicode() { return kOnigTableBaseUnicode; }

int general_category(char32_t c) {
  const int t = u_charType(static_cast<UChar32>(c));
  if (t != U_UNASSIGNED) return t;
  const auto ranges = onig_newer_ranges();
  const auto it = std::upper_bound(ranges.begin(), ranges.end(), c,
                                   [](char32_t v, const CategoryRange& r) { return v < r.first; });
  if (it != ranges.begin() && c <= std::prev(it)->last) return std::prev(it)->category;
  return U_UNASSIGNED;
}

bool is_white_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(c)) != 0;
}

bool is_word_char(char32_t c) {
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  const auto cp = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) || u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL))
    return true;
  const int t = general_category(c);
  // (Alphabetic is letters plus some marks and Nl; for code points newer than ICU the letter
  // categories stand in for it.)
  if (u_charType(cp) == U_UNASSIGNED && (U_MASK(t) & (U_GC_L_MASK | U_GC_NL_MASK))) return true;
  return t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK ||
         t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION;
}

namespace {

// bytes_char(): printable bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF stand for themselves; the other
// 68 bytes, in increasing byte order, get U+0100, U+0101, ... (space -> U+0120 'Ġ').
struct ByteTables {
  std::array<std::string, 256> to_str;
  std::array<int, 0x144> from_cp{};  // the whole alphabet lies below U+0144
  ByteTables() {
    from_cp.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = self ? static_cast<char32_t>(b) : next++;
      from_cp[cp] = b;
      utf8_append(to_str[b], cp);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() { return byte_tables().to_str; }

int unicode_to_byte(char32_t cp) {
  return cp < 0x144 ? byte_tables().from_cp[cp] : -1;
}

}  // namespace qt::calib::tok
