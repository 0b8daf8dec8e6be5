// ModelFolder: config.json, the checkpoint and the list of files a derived folder must copy;
// write_config_json formatting (Python json.dumps(indent=2, sort_keys=True) + "\n").
#include <gtest/gtest.h>

#include <filesystem>

#include "formats/model_folder.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

InputError open_error(const std::string& dir) {
  try {
    ModelFolder::open(dir);
  } catch (const InputError& e) {
    return e;
  }
  ADD_FAILURE() << "ModelFolder::open accepted " << dir;
  return InputError(InputError::Kind::BadFile, "", "", "");
}

TinyModelOptions small() {
  TinyModelOptions o;
  o.hidden_size = 32;
  o.intermediate_size = 64;
  o.num_layers = 1;
  o.vocab_size = 300;
  return o;
}

TEST(ModelFolder, OpensATinyModelFolder) {
  TempDir d;
  write_tiny_model(d.str(), small());
  const auto m = ModelFolder::open(d.str());
  EXPECT_EQ(m.config().at("hidden_size"), 32);
  EXPECT_EQ(m.config().at("architectures")[0], "LlamaForCausalLM");
  EXPECT_EQ(m.config_path(), d.str("config.json"));
  EXPECT_NE(m.checkpoint().find("model.embed_tokens.weight"), nullptr);
  EXPECT_EQ(m.other_files(), (std::vector<std::string>{"generation_config.json", "tokenizer.json",
                                                        "tokenizer_config.json"}));
  EXPECT_TRUE(m.skipped_files().empty());
}

TEST(ModelFolder, ListsEveryFileToCopyAndSkipsWeightsHiddenFilesAndFolders) {
  TempDir d;
  TinyModelOptions o = small();
  o.num_shards = 2;
  write_tiny_model(d.str(), o);
  for (const char* f : {"README.md", "LICENSE", "chat_template.jinja", "merges.txt", "vocab.json",
                        "tokenizer.model", "special_tokens_map.json", "added_tokens.json", ".gitattributes",
                        "pytorch_model.bin", "pytorch_model.bin.index.json", "consolidated.pth",
                        "other.safetensors.index.json"})
    test::write_text(d.path() / f, "x");
  fs::create_directory(d.path() / "original");
  fs::create_directory(d.path() / ".cache");
  fs::create_symlink(d.path() / "README.md", d.path() / "USE_POLICY.md");  // links are followed
  fs::create_symlink(d.path() / "gone", d.path() / "dangling.txt");
  const auto m = ModelFolder::open(d.str());
  EXPECT_EQ(m.checkpoint().num_shards(), 2u);
  EXPECT_EQ(m.other_files(),
            (std::vector<std::string>{"LICENSE", "README.md", "USE_POLICY.md", "added_tokens.json",
                                      "chat_template.jinja", "generation_config.json", "merges.txt",
                                      "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                                      "tokenizer_config.json", "vocab.json"}));
  std::vector<std::string> skipped;
  for (const auto& s : m.skipped_files()) skipped.push_back(s.name + ": " + s.reason);
  EXPECT_EQ(skipped, (std::vector<std::string>{
                         "consolidated.pth: weights in a format other than safetensors",
                         "dangling.txt: broken symbolic link",
                         "original: subfolder (not copied)",
                         "pytorch_model.bin: weights in a format other than safetensors",
                         "pytorch_model.bin.index.json: weights in a format other than safetensors"}));
}

TEST(ModelFolder, ReportsAMissingConfig) {
  TempDir d;
  write_tiny_model(d.str(), small());
  fs::remove(d.path() / "config.json");
  const auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_CONTAINS(e.what(), "config.json: no config.json in the model folder");
  EXPECT_EQ(open_error(d.str("nope")).kind(), InputError::Kind::Missing);
}

TEST(ModelFolder, ReportsInvalidConfigJsonWithLineAndColumn) {
  TempDir d;
  write_tiny_model(d.str(), small());
  test::write_text(d.path() / "config.json", "{\n  \"a\": 1,\n  \"b\": tru\n}\n");
  auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
  EXPECT_CONTAINS(e.what(), "config.json: file is not valid JSON: parse error at line 3, column 10: ");
  test::write_text(d.path() / "config.json", "[1]");
  e = open_error(d.str());
  EXPECT_CONTAINS(e.what(), "config.json: is not a JSON object (got array)");
}

TEST(ModelFolder, KeepsUnknownKeysAndTakesTheLastOfDuplicateKeysLikePython) {
  TempDir d;
  write_tiny_model(d.str(), small());
  test::write_text(d.path() / "config.json",
                   "{\"model_type\": \"llama\", \"x_custom\": {\"deep\": [1, 2.5]}, \"k\": 1, \"k\": 2}");
  const auto m = ModelFolder::open(d.str());
  EXPECT_EQ(m.config().at("x_custom").at("deep")[1], 2.5);
  EXPECT_EQ(m.config().at("k"), 2);
}

TEST(ModelFolder, ReportsAFolderWithoutWeights) {
  TempDir d;
  test::write_text(d.path() / "config.json", "{}");
  const auto e = open_error(d.str());
  EXPECT_EQ(e.kind(), InputError::Kind::Missing);
  EXPECT_CONTAINS(e.what(), "no *.safetensors file");
}

TEST(WriteConfigJson, FormatsLikePythonJsonDumpsWithSortedKeys) {
  TempDir d;
  const nlohmann::json j = nlohmann::json::parse(R"({
    "vocab_size": 512, "architectures": ["LlamaForCausalLM"], "rms_norm_eps": 1e-05,
    "rope_scaling": null, "tie_word_embeddings": false, "name": "caf\u00e9",
    "quantization_config": {"config_groups": {}, "ignore": [], "format": "float-quantized"}})");
  write_config_json(d.str(), j);
  // Derived by hand from Python's rules: keys sorted, indent 2, ", " / ": " separators,
  // non-ASCII as \uXXXX, empty containers as {} and [], newline at the end.
  EXPECT_EQ(test::read_text(d.path() / "config.json"),
            "{\n"
            "  \"architectures\": [\n"
            "    \"LlamaForCausalLM\"\n"
            "  ],\n"
            "  \"name\": \"caf\\u00e9\",\n"
            "  \"quantization_config\": {\n"
            "    \"config_groups\": {},\n"
            "    \"format\": \"float-quantized\",\n"
            "    \"ignore\": []\n"
            "  },\n"
            "  \"rms_norm_eps\": 1e-05,\n"
            "  \"rope_scaling\": null,\n"
            "  \"tie_word_embeddings\": false,\n"
            "  \"vocab_size\": 512\n"
            "}\n");
  EXPECT_EQ(read_json_file(d.str("config.json")), j);
}

}  // namespace
}  // namespace qt
