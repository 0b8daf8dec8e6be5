// The tokenizer files of a Hugging Face folder rebuilt from a GGUF file's tokenizer.* metadata
// (used by `qtool convert model.gguf`, formats/gguf_to_hf.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "formats/gguf.h"

namespace qt {

// A pre-tokenizer of the table: what llama.cpp's `tokenizer.ggml.pre` name means as split regexes
// (applied in order, each splitting the pieces of the previous one, matches isolated), written
// into tokenizer.json as Split pre-tokenizers followed by ByteLevel. Regexes are the ones of the
// models' original tokenizer.json files (llama.cpp's comments quote them).
struct GgufPreTokenizer {
  std::string_view name;           // tokenizer.ggml.pre value
  std::vector<std::string> regexes;
  bool ignore_merges = false;      // llama.cpp: a whole pre-token found in the vocabulary wins
  bool add_bos = false;            // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
  bool clean_spaces = true;        // tokenizer_config clean_up_tokenization_spaces
};
// nullptr if `pre` is not in the table.
const GgufPreTokenizer* find_gguf_pre_tokenizer(std::string_view pre);
std::string gguf_pre_tokenizer_names();  // "gpt-2, smollm, llama-bpe, ..." for messages

// The tokenizer files of the HF folder.
struct HfTokenizerFiles {
  nlohmann::json tokenizer;          // tokenizer.json
  nlohmann::json tokenizer_config;   // tokenizer_config.json
  nlohmann::json generation_config;  // generation_config.json
  std::optional<int64_t> bos_id, eos_id, pad_id, unk_id;
  std::vector<std::string> notes;
};

// Rebuilds the tokenizer from tokenizer.ggml.*:
//  * model "gpt2": byte-level BPE. Vocabulary = tokens (already in the byte-to-unicode spelling),
//    merges = tokenizer.ggml.merges in file order (rank = position), pre-tokenizer from the table
//    by tokenizer.ggml.pre, ByteLevel decoder.
//  * model "llama": SentencePiece BPE as transformers' Llama tokenizer.json has it: normalizer
//    Prepend("\u2581") (when add_space_prefix, default true) + Replace(" ", "\u2581"), no
//    pre-tokenizer, byte_fallback on <0xXX> tokens, merges rebuilt from the scores: every split
//    of a token into two tokens, ranked by the merged token's score (descending; llama.cpp merges
//    the highest-scoring pair first), ties by merged token id, then left piece length.
//  * tokens of type CONTROL (3) become special added tokens, USER_DEFINED (4) plain added tokens,
//    UNKNOWN (2) special too; all with normalized=false (matched in raw text, as llama.cpp does).
//  * BOS/EOS are added by the post-processor when tokenizer.ggml.add_bos_token /
//    add_eos_token say so (defaults: llama.cpp's). chat_template is carried over.
// Throws InputError naming the file and key: Missing (tokens, merges for gpt2), Unsupported (other
// models, a pre-tokenizer not in the table), BadFile (array lengths that disagree, an id out of
// range, a token that is not valid UTF-8, a malformed merge).
HfTokenizerFiles build_hf_tokenizer(const GgufFile& g);

// The merges of a SentencePiece vocabulary (the "llama" case above): for every mergeable token
// (not CONTROL, UNKNOWN or BYTE; first occurrence of a duplicated string), every split at a UTF-8
// character boundary into two mergeable tokens, ordered by the token's score descending, then
// token id, then left piece length. types/scores have tokens.size() entries (QT_ASSERT).
std::vector<std::pair<std::string, std::string>> sentencepiece_merges(const std::vector<std::string>& tokens,
                                                                      const std::vector<int32_t>& types,
                                                                      const std::vector<float>& scores);

// A token id stored under `key` (any integer type), or nullopt when the key is absent, "none"
// (-1 / 0xFFFFFFFF, llama.cpp's convention) or outside [0, n_tokens) -- the last adds a note to
// `notes` (may be null).
std::optional<int64_t> gguf_token_id(const GgufFile& g, const char* key, int64_t n_tokens,
                                     std::vector<std::string>* notes);

}  // namespace qt
