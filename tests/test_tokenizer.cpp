// Tests of calib/tokenizer.h.
//
// Golden ids come from the Hugging Face `tokenizers` package (testdata/tokenizers/make_goldens.py,
// see testdata/tokenizers/README.md) run on the real tokenizer.json files in
// ../shared/tokenizers (or $QTOOL_TOKENIZERS_DIR); tests that need those files skip without them.
// The hand-written tiny tokenizers below have expectations derived by hand (and cross-checked
// once with `tokenizers`, see the comments).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "calib/tokenizer/tokenizer.h"
#include "calib/tokenizer/tokenizer_detail.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// ------------------------------------------------------------------ shared fixtures

fs::path tokenizers_dir() {
  if (const char* env = std::getenv("QTOOL_TOKENIZERS_DIR"); env && *env) return env;
  return fs::path(QTOOL_SOURCE_DIR) / ".." / "shared" / "tokenizers";
}

bool have_real(const std::string& name) {
  std::error_code ec;
  return fs::is_regular_file(tokenizers_dir() / name / "tokenizer.json", ec);
}

#define SKIP_WITHOUT_REAL(name)                                                                  \
  if (!have_real(name))                                                                          \
  GTEST_SKIP() << "real tokenizer files not found in " << tokenizers_dir().string()              \
               << " (set QTOOL_TOKENIZERS_DIR to the folder holding llama2/, llama3_1/, ...)"

// Each big tokenizer is loaded once per test executable.
const Tokenizer& real_tokenizer(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[name];
  if (!slot) {
    const fs::path dir = tokenizers_dir() / name;
    slot = std::make_unique<Tokenizer>(Tokenizer::from_dir(dir));
  }
  return *slot;
}

const json& real_json(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, json> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache.emplace(name, json::parse(test::read_text(tokenizers_dir() / name / "tokenizer.json"))).first;
  return it->second;
}

json read_json(const std::string& rel) { return json::parse(test::read_text(test::source_path(rel))); }

std::string show(const std::vector<int32_t>& v, size_t from = 0, size_t n = 12) {
  std::string s = "[";
  for (size_t i = from; i < v.size() && i < from + n; ++i) s += (i > from ? "," : "") + std::to_string(v[i]);
  return s + (v.size() > from + n ? ",...]" : "]");
}

// A readable description of the first difference between two id lists.
std::string first_difference(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  const size_t from = i > 3 ? i - 3 : 0;
  return "first difference at index " + std::to_string(i) + ": got " + show(got, from) + " want " + show(want, from) +
         " (lengths " + std::to_string(got.size()) + " vs " + std::to_string(want.size()) + ")";
}

std::string clip(const std::string& s) { return json(s.size() > 100 ? s.substr(0, 100) + "..." : s).dump(); }

// A tokenizer.json object around a BPE model (no normalizer, pre-tokenizer or post-processor).
json tiny(json vocab, json merges, json model_extra = json::object()) {
  json m = {{"type", "BPE"},          {"dropout", nullptr},         {"unk_token", nullptr},
            {"fuse_unk", false},      {"byte_fallback", false},     {"ignore_merges", false},
            {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  m.update(model_extra);
  return json{{"version", "1.0"},       {"truncation", nullptr},  {"padding", nullptr},
              {"added_tokens", json::array()}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
              {"post_processor", nullptr}, {"decoder", nullptr},   {"model", m}};
}

std::vector<int32_t> enc(const json& j, const std::string& text, bool special = true) {
  return Tokenizer::from_json(j, "tiny.json").encode(text, special);
}

using Ids = std::vector<int32_t>;

// ------------------------------------------------------------------ byte-level alphabet

TEST(ByteLevelAlphabet, PrintableBytesMapToThemselvesAndTheRestFollowU0100InByteOrder) {
  const auto& t = tok::byte_to_unicode();
  EXPECT_EQ(t['A'], "A");
  EXPECT_EQ(t['!'], "!");
  EXPECT_EQ(t['~'], "~");
  EXPECT_EQ(t[0xA1], "\u00A1");
  EXPECT_EQ(t[0xFF], "\u00FF");
  // 0x00-0x20 -> U+0100..U+0120, 0x7F-0xA0 -> U+0121..U+0142, 0xAD -> U+0143 (GPT-2 bytes_to_unicode).
  EXPECT_EQ(t[0x00], "\u0100");
  EXPECT_EQ(t['\t'], "\u0109");  // ĉ
  EXPECT_EQ(t['\n'], "\u010A");  // Ċ
  EXPECT_EQ(t[' '], "\u0120");   // Ġ
  EXPECT_EQ(t[0x7F], "\u0121");
  EXPECT_EQ(t[0xA0], "\u0142");
  EXPECT_EQ(t[0xAD], "\u0143");  // Ń
}

TEST(ByteLevelAlphabet, IsABijectionOnAll256Bytes) {
  const auto& t = tok::byte_to_unicode();
  std::set<std::string> seen;
  for (int b = 0; b < 256; ++b) {
    size_t i = 0;
    const char32_t cp = tok::utf8_next(t[b], i);
    EXPECT_EQ(i, t[b].size());
    EXPECT_EQ(tok::unicode_to_byte(cp), b) << "byte " << b;
    seen.insert(t[b]);
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(tok::unicode_to_byte(U'\u0144'), -1);
  EXPECT_EQ(tok::unicode_to_byte(U' '), -1);  // space itself is not in the alphabet
  EXPECT_EQ(tok::unicode_to_byte(0x7F), -1);
}

TEST(Utf8, ValidatorFollowsRustStrRules) {
  EXPECT_EQ(tok::utf8_invalid_at("plain ascii"), std::string_view::npos);
  EXPECT_EQ(tok::utf8_invalid_at("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), std::string_view::npos);
  EXPECT_EQ(tok::utf8_invalid_at("ab\xC0\xAF"), 2u);          // overlong '/'
  EXPECT_EQ(tok::utf8_invalid_at("a\xED\xA0\x80"), 1u);       // UTF-16 surrogate U+D800
  EXPECT_EQ(tok::utf8_invalid_at("\xF4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_EQ(tok::utf8_invalid_at("abc\xE2\x82"), 3u);         // truncated
  EXPECT_EQ(tok::utf8_invalid_at("\x80"), 0u);                // lone continuation byte
}

// ------------------------------------------------------------------ BPE on tiny hand-written files

const json kVocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"d", 3},  {"ab", 4},
                     {"bc", 5}, {"abc", 6}, {"aa", 7}, {"aaaa", 8}, {"cd", 9}};

TEST(TinyBpe, MergesTheLowestRankedPairFirstNotTheLeftmost) {
  // "abc": (b,c) has rank 0, (a,b) rank 1 -> a|bc, and no merge joins a+bc.
  EXPECT_EQ(enc(tiny(kVocab, {"b c", "a b"}), "abc"), (Ids{0, 5}));
  // With "a bc" available the second step builds abc; with the other order ab+c does.
  EXPECT_EQ(enc(tiny(kVocab, {"b c", "a b", "a bc"}), "abc"), (Ids{6}));
  EXPECT_EQ(enc(tiny(kVocab, {"a b", "b c", "ab c"}), "abc"), (Ids{6}));
}

TEST(TinyBpe, EqualRanksMergeLeftmostFirstAndMergesRepeatUntilNoneApplies) {
  const json t = tiny(kVocab, {"a a", "aa aa"});
  EXPECT_EQ(enc(tiny(kVocab, {"a a"}), "aaa"), (Ids{7, 0}));  // aa|a, not a|aa
  EXPECT_EQ(enc(t, "aaaa"), (Ids{8}));                        // aa|aa -> aaaa
  EXPECT_EQ(enc(t, "aaaaa"), (Ids{8, 0}));
  EXPECT_EQ(enc(t, "a"), (Ids{0}));
  EXPECT_EQ(enc(t, ""), (Ids{}));
}

TEST(TinyBpe, PairMergesAndStringMergesGiveTheSameIds) {
  const json pairs = json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"a", "bc"})});
  EXPECT_EQ(enc(tiny(kVocab, pairs), "abcabc"), enc(tiny(kVocab, {"b c", "a b", "a bc"}), "abcabc"));
  EXPECT_EQ(enc(tiny(kVocab, pairs), "abcabc"), (Ids{6, 6}));
  // A "#version" header line is not a merge.
  EXPECT_EQ(enc(tiny(kVocab, {"#version: 0.2", "b c", "a b", "a bc"}), "abc"), (Ids{6}));
}

TEST(TinyBpe, IgnoreMergesTakesAWholeWordVocabEntry) {
  EXPECT_EQ(enc(tiny(kVocab, {"a b"}), "abc"), (Ids{4, 2}));
  EXPECT_EQ(enc(tiny(kVocab, {"a b"}, {{"ignore_merges", true}}), "abc"), (Ids{6}));
}

TEST(TinyBpe, ContinuingSubwordPrefixIsAddedToInnerCharactersAndDroppedWhenMerging) {
  const json v = {{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}};
  // Symbols a, ##b, ##c; merge "a ##b" makes "ab" (b's prefix removed).
  EXPECT_EQ(enc(tiny(v, {"a ##b"}, {{"continuing_subword_prefix", "##"}}), "abc"), (Ids{3, 2}));
}

TEST(TinyBpe, ByteFallbackUsesUppercaseHexByteTokensWhenEveryByteHasOne) {
  const json v = {{"<unk>", 0}, {"<0xE2>", 1}, {"<0x82>", 2}, {"<0xAC>", 3}, {"a", 4}};
  const json m = {{"unk_token", "<unk>"}, {"byte_fallback", true}};
  EXPECT_EQ(enc(tiny(v, json::array(), m), "a\u20ACa"), (Ids{4, 1, 2, 3, 4}));  // € = E2 82 AC
  // é = C3 A9 has no byte tokens: unk instead, one per character...
  EXPECT_EQ(enc(tiny(v, json::array(), m), "a\u00E9\u00E9a"), (Ids{4, 0, 0, 4}));
  // ...or one for the whole run with fuse_unk.
  json fused = m;
  fused["fuse_unk"] = true;
  EXPECT_EQ(enc(tiny(v, json::array(), fused), "a\u00E9\u00E9a"), (Ids{4, 0, 4}));
  // Without unk_token an unknown character is dropped, as in tokenizers.
  EXPECT_EQ(enc(tiny(v, json::array()), "a\u00E9a"), (Ids{4, 4}));
}

TEST(TinyBpe, ByteFallbackDecodesBackToTheOriginalText) {
  json j = tiny({{"<unk>", 0}, {"<0xE2>", 1}, {"<0x82>", 2}, {"<0xAC>", 3}, {"a", 4}}, json::array(),
                {{"unk_token", "<unk>"}, {"byte_fallback", true}});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  const Tokenizer t = Tokenizer::from_json(j, "tiny.json");
  EXPECT_EQ(t.decode(t.encode("a\u20ACa")), "a\u20ACa");
  // A lone byte that is not valid UTF-8 decodes to U+FFFD.
  EXPECT_EQ(t.decode(Ids{4, 1, 4}), "a\uFFFDa");
}

// ------------------------------------------------------------------ added tokens

json tiny_with_added() {
  json v = json::object();
  const std::string letters = "abcdxyz <>mrt";
  for (size_t i = 0; i < letters.size(); ++i) v[std::string(1, letters[i])] = static_cast<int>(i);
  json j = tiny(v, json::array());
  auto added = [](int id, const char* content, bool lstrip, bool rstrip, bool single_word) {
    return json{{"id", id},         {"content", content},         {"single_word", single_word},
                {"lstrip", lstrip}, {"rstrip", rstrip},           {"normalized", false},
                {"special", true}};
  };
  j["added_tokens"] = {added(13, "<m>", true, false, false), added(14, "<r>", false, true, false),
                       added(15, "cat", false, false, true)};
  return j;
}

TEST(AddedTokens, LstripSwallowsTheWhitespaceBeforeTheToken) {
  // ids: x=4 y=5 ' '=7 <m>=13; "x  <m>  y" -> x, <m> (with its two leading spaces), ' ', ' ', y.
  EXPECT_EQ(enc(tiny_with_added(), "x  <m>  y"), (Ids{4, 13, 7, 7, 5}));
}

TEST(AddedTokens, RstripSwallowsTheWhitespaceAfterTheToken) {
  EXPECT_EQ(enc(tiny_with_added(), "x  <r>  y"), (Ids{4, 7, 7, 14, 5}));
}

TEST(AddedTokens, StrippedWhitespaceIsNotTakenTwiceByNeighbouringTokens) {
  EXPECT_EQ(enc(tiny_with_added(), " <m><r> <m>"), (Ids{13, 14, 13}));
  EXPECT_EQ(enc(tiny_with_added(), "<m>"), (Ids{13}));
}

TEST(AddedTokens, SingleWordTokensOnlyMatchBetweenNonWordCharacters) {
  // cat=15 c=2 a=0 t=12 x=4: "catx" and "xcat" keep their letters.
  EXPECT_EQ(enc(tiny_with_added(), "cat catx xcat cat"), (Ids{15, 7, 2, 0, 12, 4, 7, 4, 2, 0, 12, 7, 15}));
}

TEST(AddedTokens, AreSplitOutBeforeThePreTokenizerAndNormalizerSee) {
  // Llama-2-style normalizer: Prepend applies again to the text after every added token.
  // (ids renumbered so that "\u2581" is 13 and the added tokens follow at 14..16, as
  // `tokenizers` assigns them from the vocabulary size.)
  json j = tiny_with_added();
  j["model"]["vocab"]["\u2581"] = 13;
  for (int k = 0; k < 3; ++k) j["added_tokens"][k]["id"] = 14 + k;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  EXPECT_EQ(enc(j, "x<r>y"), (Ids{13, 4, 15, 13, 5}));
}

// ------------------------------------------------------------------ post-processor, lookups

TEST(PostProcessor, TemplateAddsItsSpecialTokensAroundTheTextOnlyWithAddSpecialTokens) {
  json j = tiny(kVocab, {"a b"});
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "B"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                  {{"SpecialToken", {{"id", "E"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens", {{"B", {{"id", "B"}, {"ids", {3, 2}}, {"tokens", {"d", "c"}}}},
                          {"E", {{"id", "E"}, {"ids", {9}}, {"tokens", {"cd"}}}}}}};
  const Tokenizer t = Tokenizer::from_json(j, "tiny.json");
  EXPECT_EQ(t.encode("ab"), (Ids{3, 2, 4, 9}));
  EXPECT_EQ(t.encode("ab", false), (Ids{4}));
  EXPECT_EQ(t.encode(""), (Ids{3, 2, 9}));
  EXPECT_EQ(t.special_prefix(), (Ids{3, 2}));
  EXPECT_EQ(t.special_suffix(), (Ids{9}));
  EXPECT_EQ(t.bos_id(), 3);
  EXPECT_EQ(t.eos_id(), 9);
}

TEST(TokenizerLookups, VocabSizeCoversModelAndAddedIds) {
  const Tokenizer t = Tokenizer::from_json(tiny_with_added(), "tiny.json");
  EXPECT_EQ(t.vocab_size(), 16);
  EXPECT_EQ(t.token_to_id("<m>"), 13);
  EXPECT_EQ(t.token_to_id("y"), 5);
  EXPECT_EQ(t.token_to_id("nope"), std::nullopt);
  EXPECT_EQ(t.id_to_token(15), "cat");
  EXPECT_EQ(t.id_to_token(99), std::nullopt);
  EXPECT_EQ(t.bos_id(), std::nullopt);
  EXPECT_TRUE(t.warnings().empty());
}

TEST(TokenizerLookups, AddedTokenIdsFollowTokenizersAndMismatchesAreReported) {
  json j = tiny_with_added();
  j["added_tokens"][1]["id"] = 40;  // `tokenizers` assigns the next free id (14) regardless
  const Tokenizer t = Tokenizer::from_json(j, "tiny.json");
  EXPECT_EQ(t.token_to_id("<r>"), 14);
  ASSERT_EQ(t.warnings().size(), 1u);
  EXPECT_NE(t.warnings()[0].find("'<r>'"), std::string::npos) << t.warnings()[0];
}

// ------------------------------------------------------------------ errors

// Writes `j` to a file and expects from_file to throw `kind` mentioning the file and `needle`.
void expect_load_error(const json& j, InputError::Kind kind, const std::string& needle) {
  test::TempDir tmp;
  const std::string path = tmp.str("tokenizer.json");
  test::write_text(path, j.dump());
  try {
    (void)Tokenizer::from_file(path);
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_EQ(e.file(), path);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, UnsupportedComponentsAreRefusedNamingFileAndFeature) {
  using K = InputError::Kind;
  json j = tiny(kVocab, {"a b"});
  j["model"]["type"] = "WordPiece";
  expect_load_error(j, K::Unsupported, "unsupported model 'WordPiece'");

  j = tiny(kVocab, {"a b"});
  j["normalizer"] = {{"type", "BertNormalizer"}};
  expect_load_error(j, K::Unsupported, "unsupported normalizer 'BertNormalizer'");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Precompiled"}}}}};
  expect_load_error(j, K::Unsupported, "unsupported normalizer 'Precompiled'");

  j = tiny(kVocab, {"a b"});
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_load_error(j, K::Unsupported, "unsupported pre_tokenizer 'Whitespace'");

  j = tiny(kVocab, {"a b"});
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_load_error(j, K::Unsupported, "unsupported post_processor 'RobertaProcessing'");

  j = tiny(kVocab, {"a b"}, {{"dropout", 0.1}});
  expect_load_error(j, K::Unsupported, "unsupported BPE dropout");

  j = tiny(kVocab, {"a b"});
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "'(?i:[sdmt]|ll)|\\p{N}{1,3}+"}}},
                        {"behavior", "Isolated"}, {"invert", false}};
  expect_load_error(j, K::Unsupported, "counted repeat followed by '+'");
  j["pre_tokenizer"]["pattern"]["Regex"] = "\\w+";
  expect_load_error(j, K::Unsupported, "\\w");
  j["pre_tokenizer"]["pattern"]["Regex"] = "(unclosed";
  expect_load_error(j, K::Unsupported, "does not compile");
  j["pre_tokenizer"]["pattern"]["Regex"] = "\\p{L}+";
  j["pre_tokenizer"]["behavior"] = "Sideways";
  expect_load_error(j, K::Unsupported, "unsupported split behavior 'Sideways'");
}

TEST(TokenizerErrors, MalformedFilesAreBadFile) {
  using K = InputError::Kind;
  expect_load_error(tiny(kVocab, {"a z"}), K::BadFile, "token 'z' is not in the vocabulary");
  expect_load_error(tiny(kVocab, {"a b c"}), K::BadFile, "not two tokens");
  expect_load_error(tiny(kVocab, {"b d"}), K::BadFile, "result 'bd' is not in the vocabulary");
  expect_load_error(tiny(kVocab, {"a b"}, {{"unk_token", "<unk>"}}), K::BadFile, "unk_token '<unk>'");
  json j = tiny(kVocab, {"a b"});
  j.erase("model");
  expect_load_error(j, K::BadFile, "missing 'model'");

  test::TempDir tmp;
  test::write_text(tmp.path() / "tokenizer.json", "{ not json");
  EXPECT_THROW((void)Tokenizer::from_file(tmp.path() / "tokenizer.json"), InputError);
  try {
    (void)Tokenizer::from_file(tmp.path() / "missing.json");
    ADD_FAILURE();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), K::Missing);
  }
}

TEST(TokenizerErrors, UnsupportedDecoderOnlyFailsDecode) {
  json j = tiny(kVocab, {"a b"});
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  const Tokenizer t = Tokenizer::from_json(j, "tiny.json");
  EXPECT_EQ(t.encode("ab"), (Ids{4}));
  try {
    (void)t.decode(Ids{4});
    ADD_FAILURE();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::Unsupported);
    EXPECT_NE(std::string(e.what()).find("unsupported decoder 'WordPiece'"), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, InvalidUtf8TextIsRefused) {
  const Tokenizer t = Tokenizer::from_json(tiny(kVocab, {"a b"}), "tiny.json");
  try {
    (void)t.encode("ab\xFF");
    ADD_FAILURE();
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::BadValue);
    EXPECT_NE(std::string(e.what()).find("byte 2"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------ goldens on the real files

class RealGoldens : public ::testing::TestWithParam<std::string> {};

TEST_P(RealGoldens, EveryCorpusLineEncodesToTheTokenizersIds) {
  const std::string name = GetParam();
  SKIP_WITHOUT_REAL(name);
  const Tokenizer& t = real_tokenizer(name);
  EXPECT_TRUE(t.warnings().empty()) << t.warnings().front();
  const json g = read_json("testdata/tokenizers/goldens_" + name + ".json");
  size_t n = 0, bad = 0;
  for (const auto& c : g["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const Ids want = c["ids"].get<Ids>(), want_sp = c["ids_special"].get<Ids>();
    const Ids got = t.encode(text, false), got_sp = t.encode(text, true);
    if (got != want) {
      ++bad;
      ADD_FAILURE() << name << " case " << n << " " << clip(text) << ": " << first_difference(got, want);
    }
    if (got_sp != want_sp) {
      ++bad;
      ADD_FAILURE() << name << " case " << n << " (special) " << clip(text) << ": " << first_difference(got_sp, want_sp);
    }
    ++n;
  }
  EXPECT_GT(n, 150u);
  EXPECT_EQ(bad, 0u) << bad << " mismatching cases of " << n;
}

TEST_P(RealGoldens, DecodeMatchesTokenizersOnEveryCorpusLine) {
  const std::string name = GetParam();
  SKIP_WITHOUT_REAL(name);
  const Tokenizer& t = real_tokenizer(name);
  const json g = read_json("testdata/tokenizers/goldens_" + name + ".json");
  size_t n = 0;
  for (const auto& c : g["cases"]) {
    EXPECT_EQ(t.decode(c["ids_special"].get<Ids>()), c["decoded"].get<std::string>())
        << name << " case " << n << " " << clip(c["text"].get<std::string>());
    ++n;
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, RealGoldens, ::testing::Values("llama2", "llama3_1", "qwen3", "deepseek_v3"),
                         [](const auto& info) { return info.param; });

TEST(RealTokenizers, BosEosAndVocabSizeMatchTheFiles) {
  SKIP_WITHOUT_REAL("llama3_1");
  const Tokenizer& l2 = real_tokenizer("llama2");
  EXPECT_EQ(l2.bos_id(), 1);
  EXPECT_EQ(l2.eos_id(), 2);
  EXPECT_EQ(l2.vocab_size(), 32000);
  EXPECT_EQ(l2.special_prefix(), (Ids{1}));
  const Tokenizer& l3 = real_tokenizer("llama3_1");
  EXPECT_EQ(l3.bos_id(), 128000);
  EXPECT_EQ(l3.vocab_size(), 128256);
  EXPECT_EQ(l3.special_prefix(), (Ids{128000}));
  const Tokenizer& q3 = real_tokenizer("qwen3");
  EXPECT_EQ(q3.bos_id(), std::nullopt);  // Qwen has no BOS
  EXPECT_EQ(q3.special_prefix(), (Ids{}));
  EXPECT_EQ(q3.vocab_size(), 151669);
  const Tokenizer& ds = real_tokenizer("deepseek_v3");
  EXPECT_EQ(ds.special_prefix(), (Ids{}));  // the file adds nothing...
  EXPECT_EQ(ds.bos_id(), 0);                // ...but the config names <｜begin▁of▁sentence｜>
  EXPECT_EQ(ds.config_add_bos(), true);
}

// The variants replace parts of the real files (Metaspace, GPT-2 ByteLevel, Digits, other
// Split behaviours and normalizers, added-token flags, templates); see make_goldens.py.
TEST(RealTokenizers, EditedFilesEncodeLikeTokenizers) {
  SKIP_WITHOUT_REAL("llama3_1");
  SKIP_WITHOUT_REAL("llama2");
  const json g = read_json("testdata/tokenizers/goldens_variants.json");
  const auto texts = g["texts"].get<std::vector<std::string>>();
  for (const auto& v : g["variants"]) {
    const std::string name = v["name"].get<std::string>();
    json& base = const_cast<json&>(real_json(v["base"].get<std::string>()));
    // Edit the cached base in place and restore it afterwards (copying 10 MB per variant is slow).
    std::map<std::string, json> saved, saved_model;
    for (const auto& [k, val] : v["set"].items()) {
      saved[k] = base[k];
      base[k] = val;
    }
    for (const auto& [k, val] : v["model_set"].items()) {
      saved_model[k] = base["model"].contains(k) ? base["model"][k] : json();
      base["model"][k] = val;
    }
    const json saved_added = base["added_tokens"];
    for (const auto& a : v["added_tokens_append"]) base["added_tokens"].push_back(a);
    try {
      const Tokenizer t = Tokenizer::from_json(base, name);
      const auto want = v["ids"].get<std::vector<Ids>>();
      ASSERT_EQ(want.size(), texts.size());
      for (size_t i = 0; i < texts.size(); ++i) {
        const Ids got = t.encode(texts[i], true);
        EXPECT_EQ(got, want[i]) << name << " text " << i << " " << clip(texts[i]) << ": " << first_difference(got, want[i]);
      }
    } catch (const InputError& e) {
      ADD_FAILURE() << name << ": " << e.what();
    }
    for (auto& [k, val] : saved) base[k] = val;
    for (auto& [k, val] : saved_model) base["model"][k] = val;
    base["added_tokens"] = saved_added;
  }
}

TEST(RealTokenizers, EncodeGivesTheSameIdsFromSeveralThreads) {
  SKIP_WITHOUT_REAL("llama3_1");
  const Tokenizer& t = real_tokenizer("llama3_1");
  const std::string text = test::read_text(test::source_path("testdata/tokenizers/corpus.txt"));
  const Ids want = t.encode(text);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < got.size(); ++k) threads.emplace_back([&, k] { got[k] = t.encode(text); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

// Throughput on ~1 MB of mixed text (the corpus repeated with a counter, so not all cache hits).
// The target is >= 1 MB/s per core; the assertion is looser because test machines are shared.
TEST(RealTokenizers, EncodeThroughputIsAboutAMegabytePerSecondOrBetter) {
  SKIP_WITHOUT_REAL("llama3_1");
  const std::string corpus = test::read_text(test::source_path("testdata/tokenizers/corpus.txt"));
  std::string text;
  for (int k = 0; text.size() < (1u << 20); ++k) text += corpus + " run " + std::to_string(k * 7919) + "\n";
  for (const char* name : {"llama2", "llama3_1", "qwen3", "deepseek_v3"}) {
    if (!have_real(name)) continue;
    const Tokenizer& t = real_tokenizer(name);
    const auto t0 = std::chrono::steady_clock::now();
    const Ids ids = t.encode(text);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double mbps = static_cast<double>(text.size()) / (1 << 20) / s;
    std::printf("[ perf ] %-12s %.2f MB in %.3f s = %.2f MB/s (%zu ids)\n", name,
                static_cast<double>(text.size()) / (1 << 20), s, mbps, ids.size());
    EXPECT_GT(mbps, 0.3) << name;
  }
}

}  // namespace
}  // namespace qt::calib
