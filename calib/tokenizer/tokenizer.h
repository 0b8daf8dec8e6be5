// A native encoder for Hugging Face `tokenizer.json` files (BPE models), for calibration data.
//
// What it reproduces: the ids of the Rust `tokenizers` library (what `transformers`' fast
// tokenizers use) for the same file and text: added-token extraction (leftmost-longest, with
// single_word/lstrip/rstrip/normalized), normalizers, pre-tokenizers, BPE (merge-rank heap,
// byte fallback, unk, ignore_merges) and the post-processor's special tokens (BOS/EOS). The
// pipeline and every supported component are described in tokenizer_detail.h.
//
// What it refuses: anything in the file it does not implement (WordPiece/Unigram models, BERT
// pre-tokenizers, Precompiled normalizers, non-zero BPE dropout, ...) throws
// qt::InputError(Kind::Unsupported, <file>, "", "unsupported <component> '<type>'") at load time,
// so a tokenizer either encodes exactly like `tokenizers` or does not load. Decoders are only
// needed for decode(); an unsupported decoder is reported when decode() is called.
//
// Unicode versions (what the goldens in testdata/tokenizers pin down for `tokenizers` 0.23):
// split regexes run on PCRE2 (Unicode 14 tables) but are translated so that classes match the
// Oniguruma that `tokenizers` uses (Unicode 16 tables; `\s` = White_Space); NFC/NFD/NFKC/NFKD use
// ICU restricted to Unicode 9.0, like the Rust normalization crate `tokenizers` uses; case
// mapping and whitespace/word tests use ICU 72 (Unicode 15). Regex constructs the two engines
// read differently and that cannot be translated (`X{n,m}+`, `\w`, `\b`, `\h`, inline (?m)/(?s))
// are refused as Unsupported.
//
// Thread safety: a loaded Tokenizer is immutable apart from an internal word cache guarded by
// a mutex; encode()/decode() may be called from several threads at once. Copies share state.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qt::calib {

class Tokenizer {
 public:
  // Loads `tokenizer_json` and, when given (non-empty path), `tokenizer_config_json`, which is only
  // used for bos_id()/eos_id()/config_add_bos(). Throws InputError naming the file: Missing (no
  // such file), BadFile (malformed JSON or structure), Unsupported (a component qtool does not
  // implement).
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json,
                             const std::filesystem::path& tokenizer_config_json = {});

  // Loads `dir`/tokenizer.json and, if present, `dir`/tokenizer_config.json.
  static Tokenizer from_dir(const std::filesystem::path& dir);

  // From already-parsed JSON (tests, or callers that edit a file before loading). `source_name`
  // is used as the file name in error messages. `config` may be null.
  static Tokenizer from_json(const nlohmann::json& tokenizer, const std::string& source_name,
                             const nlohmann::json* config = nullptr);

  // Token ids for `text` (UTF-8). With add_special_tokens the post-processor's tokens are added
  // (e.g. BOS for Llama-2/3.1; nothing for Qwen3/DeepSeek-V3, as in `tokenizers`). Added tokens
  // written literally in the text ("<|im_start|>") become their ids, as in `tokenizers`.
  // Throws InputError(BadValue, "<text>", ...) if `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;

  // Best-effort text for `ids` through the file's decoder (ByteLevel, Metaspace, Replace,
  // ByteFallback, Fuse, Strip, Sequence). Unknown ids are skipped, like `tokenizers`. Throws
  // InputError(Unsupported) if the file's decoder is not implemented.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // BOS/EOS ids: from tokenizer_config.json's bos_token/eos_token when a config was loaded and
  // names one; otherwise BOS is the first special token the post-processor puts before the text
  // (if any) and EOS is unknown. nullopt when there is none (Qwen3 has no BOS).
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

  // tokenizer_config.json's `add_bos_token`, if present. transformers' LlamaTokenizerFast obeys it
  // (DeepSeek-V3 says true while its tokenizer.json adds no BOS); the `tokenizers` library and
  // encode() follow the file's post-processor only. Callers decide which one they want.
  std::optional<bool> config_add_bos() const;

  // The ids encode(text, true) puts before / after the ids of encode(text, false).
  const std::vector<int32_t>& special_prefix() const;
  const std::vector<int32_t>& special_suffix() const;

  // 1 + the largest id of the model vocabulary and the added tokens: every id encode() can
  // return is below it (the model's embedding table may be larger).
  int32_t vocab_size() const;

  // Lookups in the added tokens first, then the model vocabulary (raw token strings, e.g. "Ġthe").
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

  // Non-fatal oddities found while loading, e.g. an added token whose id in the file differs from
  // the id `tokenizers` assigns (the assigned one is used, like `tokenizers`). Empty for the
  // tokenizers qtool targets.
  const std::vector<std::string>& warnings() const;

  // The file name used in messages.
  const std::string& source() const;

  struct Impl;  // tokenizer_detail.h

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace qt::calib
