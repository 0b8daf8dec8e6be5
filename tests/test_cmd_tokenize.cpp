// `qtool tokenize` end to end: runs the built binary on a tiny hand-written tokenizer.json (always)
// and on the real Llama-3.1 files when ../shared/tokenizers (or $QTOOL_TOKENIZERS_DIR) has them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>

#include "tests/support/test_support.h"
#include "tools/exit_codes.h"

namespace qt {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Characters a, b, c and merge "a b"; a template that adds "c" (id 2) as BOS.
json tiny_tokenizer() {
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor",
               {{"type", "TemplateProcessing"},
                {"single", {{{"SpecialToken", {{"id", "c"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                {"pair", json::array()},
                {"special_tokens", {{"c", {{"id", "c"}, {"ids", {2}}, {"tokens", {"c"}}}}}}}},
              {"decoder", nullptr},
              {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}}}, {"merges", {"a b"}}}}};
}

json parse_out(const test::RunResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

TEST(CmdTokenize, PrintsIdsAndCountForTextInAModelFolder) {
  test::TempDir dir;
  test::write_text(dir.path() / "tokenizer.json", tiny_tokenizer().dump());
  const json out = parse_out(test::run_qtool({"tokenize", dir.str(), "--text", "abba"}));
  EXPECT_EQ(out["ids"], json({2, 3, 1, 0}));
  EXPECT_EQ(out["count"], 4);
}

TEST(CmdTokenize, NoSpecialLeavesOutTheBos) {
  test::TempDir dir;
  test::write_text(dir.path() / "tokenizer.json", tiny_tokenizer().dump());
  const json out = parse_out(test::run_qtool({"tokenize", dir.str("tokenizer.json"), "--text", "ab", "--no-special"}));
  EXPECT_EQ(out["ids"], json({3}));
  EXPECT_EQ(out["count"], 1);
}

TEST(CmdTokenize, EncodesTheWholeContentOfAFile) {
  test::TempDir dir;
  test::write_text(dir.path() / "tokenizer.json", tiny_tokenizer().dump());
  test::write_text(dir.path() / "in.txt", "ab\nab");  // '\n' is not in the vocabulary: dropped
  const json out = parse_out(test::run_qtool({"tokenize", dir.str(), "--file", dir.str("in.txt"), "--no-special"}));
  EXPECT_EQ(out["ids"], json({3, 3}));
}

TEST(CmdTokenize, ErrorsUseTheDocumentedExitCodesAndNameTheFile) {
  test::TempDir dir;
  test::write_text(dir.path() / "tokenizer.json", tiny_tokenizer().dump());
  auto r = test::run_qtool({"tokenize", dir.str(), "--file", dir.str("nope.txt")});
  EXPECT_EQ(r.exit_code, kExitMissing);
  EXPECT_NE(r.err.find("nope.txt"), std::string::npos) << r.err;

  test::write_text(dir.path() / "bad.txt", "ab\xFF");
  r = test::run_qtool({"tokenize", dir.str(), "--file", dir.str("bad.txt")});
  EXPECT_EQ(r.exit_code, kExitBadValue);
  EXPECT_NE(r.err.find("bad.txt"), std::string::npos) << r.err;

  json unsupported = tiny_tokenizer();
  unsupported["normalizer"] = {{"type", "BertNormalizer"}};
  test::write_text(dir.path() / "tokenizer.json", unsupported.dump());
  r = test::run_qtool({"tokenize", dir.str(), "--text", "ab"});
  EXPECT_EQ(r.exit_code, kExitUnsupported);
  EXPECT_NE(r.err.find("unsupported normalizer 'BertNormalizer'"), std::string::npos) << r.err;

  r = test::run_qtool({"tokenize", dir.str()});  // neither --text nor --file
  EXPECT_EQ(r.exit_code, kExitUsage);
  r = test::run_qtool({"tokenize", dir.str(), "--text", "a", "--file", "x"});
  EXPECT_EQ(r.exit_code, kExitUsage);
}

TEST(CmdTokenize, MatchesTokenizersOnTheRealLlama31Files) {
  const char* env = std::getenv("QTOOL_TOKENIZERS_DIR");
  const fs::path root = (env && *env) ? fs::path(env) : fs::path(QTOOL_SOURCE_DIR) / ".." / "shared" / "tokenizers";
  std::error_code ec;
  if (!fs::is_regular_file(root / "llama3_1" / "tokenizer.json", ec))
    GTEST_SKIP() << "real tokenizer files not found in " << root.string();
  // Golden from `tokenizers`: see testdata/tokenizers/goldens_llama3_1.json, case "Hello world".
  const json out = parse_out(test::run_qtool({"tokenize", (root / "llama3_1").string(), "--text", "Hello world"}));
  EXPECT_EQ(out["ids"], json({128000, 9906, 1917}));
  EXPECT_EQ(out["count"], 3);
}

}  // namespace
}  // namespace qt
