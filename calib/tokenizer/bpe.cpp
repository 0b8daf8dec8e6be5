// The BPE model of tokenizer.json (models/bpe/{model.rs,word.rs,serialization.rs}).
#include <nlohmann/json.hpp>

#include <cstdio>
#include <queue>
#include <string>

#include "calib/tokenizer/tokenizer_detail.h"
#include "libquant/error.h"

namespace qt::calib::tok {

namespace {

constexpr int64_t kMaxId = (int64_t{1} << 24) - 1;  // sanity bound: no real vocabulary is larger

}  // namespace

// ---------------------------------------------------------------- flat tables

void TokenTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap *= 2;  // load factor <= 1/2
  if (cap > slots_.size()) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    for (const Slot& s : old)
      if (s.id >= 0) slots_[probe(std::string_view(arena_).substr(s.off, s.len), s.hash)] = s;
  }
}

size_t TokenTable::probe(std::string_view key, uint64_t h) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = static_cast<size_t>(h) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.id < 0) return i;
    if (s.hash == h && s.len == key.size() && std::string_view(arena_).substr(s.off, s.len) == key) return i;
  }
}

void TokenTable::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void TokenTable::set(std::string_view key, int32_t id) {
  QT_ASSERT(id >= 0 && arena_.size() + key.size() < UINT32_MAX);
  if ((count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t h = std::hash<std::string_view>{}(key);
  Slot& s = slots_[probe(key, h)];
  if (s.id < 0) {
    s.hash = h;
    s.off = static_cast<uint32_t>(arena_.size());
    s.len = static_cast<uint32_t>(key.size());
    arena_.append(key);
    ++count_;
  }
  s.id = id;
}

int32_t TokenTable::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  return slots_[probe(key, std::hash<std::string_view>{}(key))].id;
}

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap *= 2;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(cap, Slot{});
  for (const Slot& s : old)
    if (s.key != kEmpty) slots_[slot_of(s.key)] = s;
}

size_t MergeTable::slot_of(uint64_t k) const {
  // Fibonacci hashing spreads the (a, b) id pairs, which are far from uniform.
  const size_t mask = slots_.size() - 1;
  for (size_t i = static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask;; i = (i + 1) & mask)
    if (slots_[i].key == k || slots_[i].key == kEmpty) return i;
}

void MergeTable::set(int32_t a, int32_t b, Merge m) {
  if ((count_ + 1) * 2 > slots_.size()) reserve(count_ + 1 > 8 ? (count_ + 1) * 2 : 8);
  Slot& s = slots_[slot_of(key(a, b))];
  if (s.key == kEmpty) ++count_;
  s.key = key(a, b);
  s.m = m;
}

const MergeTable::Merge* MergeTable::find(int32_t a, int32_t b) const {
  if (slots_.empty()) return nullptr;
  const Slot& s = slots_[slot_of(key(a, b))];
  return s.key == kEmpty ? nullptr : &s.m;
}

// ---------------------------------------------------------------- model

BpeModel::BpeModel(const nlohmann::json& m, const std::string& file) {
  const std::string where = "model 'BPE'";
  auto bad = [&](const std::string& what) { return InputError(InputError::Kind::BadFile, file, "", where + ": " + what); };

  // dropout: only null/0 is deterministic; calibration data must not depend on a random draw.
  if (auto it = m.find("dropout"); it != m.end() && !it->is_null()) {
    if (!it->is_number()) throw bad("'dropout' must be a number or null");
    if (it->get<double>() != 0.0)
      throw InputError(InputError::Kind::Unsupported, file, "",
                       "unsupported BPE dropout " + it->dump() + " (only null or 0 is deterministic)");
  }
  fuse_unk_ = json_bool(m, "fuse_unk", false, file, where);
  byte_fallback_ = json_bool(m, "byte_fallback", false, file, where);
  ignore_merges_ = json_bool(m, "ignore_merges", false, file, where);
  prefix_ = json_opt_string(m, "continuing_subword_prefix", file, where);
  suffix_ = json_opt_string(m, "end_of_word_suffix", file, where);

  const auto vit = m.find("vocab");
  if (vit == m.end() || !vit->is_object()) throw bad("'vocab' must be an object of token -> id");
  vocab_.reserve(vit->size());
  int64_t max_id = -1;
  for (const auto& [tok, idj] : vit->items()) {
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() > kMaxId)
      throw bad("vocab entry '" + tok + "' has id " + idj.dump() + " (expected an integer in [0, 2^24))");
    const int64_t id = idj.get<int64_t>();
    vocab_.set(tok, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  vocab_r_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_id_.assign(static_cast<size_t>(max_id + 1), false);
  vocab_.for_each([&](std::string_view tok, int32_t id) {
    vocab_r_[static_cast<size_t>(id)] = tok;
    has_id_[static_cast<size_t>(id)] = true;
  });

  if (auto unk = json_opt_string(m, "unk_token", file, where)) {
    const int32_t id = vocab_.find(*unk);
    if (id < 0) throw bad("unk_token '" + *unk + "' is not in the vocabulary");
    unk_id_ = id;
  }

  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);  // uppercase hex, as byte_fallback looks up
    byte_ids_[b] = vocab_.find(name);
  }

  // Merges: "a b" strings (legacy; "#version" lines skipped) or ["a", "b"] pairs. Rank = index
  // in the list; a pair listed twice keeps the later rank (hash-map overwrite in tokenizers).
  const auto mit = m.find("merges");
  if (mit == m.end() || !mit->is_array()) throw bad("'merges' must be a list");
  merges_.reserve(mit->size());
  const size_t prefix_len = prefix_ ? prefix_->size() : 0;
  uint32_t rank = 0;
  std::string merged;
  for (const auto& e : *mit) {
    std::string_view a, b;
    if (e.is_string()) {
      const std::string& line = e.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
        throw bad("merge #" + std::to_string(rank + 1) + " '" + line + "' is not two tokens separated by one space");
      a = std::string_view(line).substr(0, sp);
      b = std::string_view(line).substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get_ref<const std::string&>();
      b = e[1].get_ref<const std::string&>();
    } else {
      throw bad("merge #" + std::to_string(rank + 1) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    auto where_merge = [&] { return "merge #" + std::to_string(rank + 1) + ": "; };
    const int32_t ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia < 0) throw bad(where_merge() + "token '" + std::string(a) + "' is not in the vocabulary");
    if (ib < 0) throw bad(where_merge() + "token '" + std::string(b) + "' is not in the vocabulary");
    if (b.size() < prefix_len) throw bad(where_merge() + "'" + std::string(b) + "' is shorter than continuing_subword_prefix");
    // The merged token is a + b without b's continuing_subword_prefix (bytes dropped unchecked,
    // as in tokenizers).
    merged.assign(a);
    merged.append(b.substr(prefix_len));
    const int32_t in = vocab_.find(merged);
    if (in < 0) throw bad(where_merge() + "result '" + merged + "' is not in the vocabulary");
    merges_.set(ia, ib, MergeTable::Merge{rank, in});
    ++rank;
  }

  // The cut optimization needs plain characters as first symbols: no prefix/suffix rules.
  if (!prefix_ && !suffix_) {
    for (const char* cand : {"\u2581", " "}) {
      const std::string_view c(cand);
      bool ok = vocab_.find(c) >= 0;
      vocab_.for_each([&](std::string_view tok, int32_t) {
        for (size_t p = tok.find(c, 1); ok && p != std::string_view::npos; p = tok.find(c, p + 1))
          if (p < c.size() || tok.compare(p - c.size(), c.size(), c) != 0) ok = false;
      });
      if (ok) {
        cut_char_ = c;
        break;
      }
    }
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const int32_t id = vocab_.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !has_id_[static_cast<size_t>(id)]) return nullptr;
  return &vocab_r_[static_cast<size_t>(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  // ignore_merges (Llama-3): a word that is a vocabulary entry is that entry, whatever the merges
  // would make of it. Checked on the bare word, before any prefix/suffix.
  if (ignore_merges_) {
    if (const int32_t id = vocab_.find(word); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  if (cut_char_.empty() || word.size() < kCacheMaxWord) {
    tokenize_piece(word, out);
    return;
  }
  // Cut in front of every run of cut_char_ (see cut_char_); each part is merged on its own.
  const size_t n = cut_char_.size();
  size_t start = 0;
  for (size_t pos = word.find(cut_char_, 1); pos != std::string_view::npos; pos = word.find(cut_char_, pos + n)) {
    if (pos >= n && word.compare(pos - n, n, cut_char_) == 0) continue;  // inside a run
    tokenize_piece(word.substr(start, pos - start), out);
    start = pos;
  }
  tokenize_piece(word.substr(start), out);
}

void BpeModel::tokenize_piece(std::string_view word, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() < kCacheMaxWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // Doubly linked symbols over a vector (word.rs::Symbol); len == 0 marks a symbol merged away.
  struct Sym {
    int32_t id, prev, next;
    uint32_t len;
  };
  std::vector<Sym> syms;
  syms.reserve(word.size());
  auto add = [&syms](int32_t id, uint32_t len) {
    const auto idx = static_cast<int32_t>(syms.size());
    syms.push_back(Sym{id, idx - 1, -1, len});
    if (idx > 0) syms[static_cast<size_t>(idx - 1)].next = idx;
  };

  // 1. Initial symbols: one per character (model.rs::merge_word).
  bool have_unk = false;
  int32_t unk_id = 0;
  uint32_t unk_len = 0;
  std::string keybuf;
  size_t i = 0;
  while (i < word.size()) {
    const size_t start = i;
    const auto clen = static_cast<uint32_t>(utf8_seq_len(static_cast<unsigned char>(word[i])));
    i += clen;
    const bool is_first = start == 0, is_last = i >= word.size();
    std::string_view key = word.substr(start, clen);
    if ((!is_first && prefix_) || (is_last && suffix_)) {
      keybuf.clear();
      if (!is_first && prefix_) keybuf += *prefix_;
      keybuf += key;
      if (is_last && suffix_) keybuf += *suffix_;
      key = keybuf;
    }
    if (const int32_t id = vocab_.find(key); id >= 0) {
      if (have_unk) {
        add(unk_id, unk_len);
        have_unk = false;
      }
      add(id, clen);
      continue;
    }
    if (byte_fallback_) {
      // Every byte of the (prefixed) character needs its <0xXX> token, or none is used. A pending
      // unk is deliberately not flushed first (tokenizers does not either).
      bool all = true;
      for (unsigned char b : key) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : key) add(byte_ids_[b], 1);
        continue;
      }
    }
    if (unk_id_) {
      if (have_unk && fuse_unk_) {
        unk_len += clen;  // consecutive unknowns collapse into one unk
      } else {
        if (have_unk) add(unk_id, unk_len);
        have_unk = true;
        unk_id = *unk_id_;
        unk_len = clen;
      }
    }
    // No vocab entry, no byte tokens, no unk: the character is dropped (as in tokenizers).
  }
  if (have_unk) add(unk_id, unk_len);

  // 2. Merge loop (word.rs::merge_all): repeatedly apply the lowest-rank adjacent pair, ties to
  // the leftmost; a min-heap of candidates with lazy invalidation.
  struct Cand {
    uint32_t rank;
    int32_t pos, new_id;
  };
  auto later = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(later)> queue(later);
  for (size_t k = 0; k + 1 < syms.size(); ++k)
    if (const MergeTable::Merge* m = merges_.find(syms[k].id, syms[k + 1].id))
      queue.push(Cand{m->rank, static_cast<int32_t>(k), m->new_id});
  while (!queue.empty()) {
    const Cand top = queue.top();
    queue.pop();
    Sym& s = syms[static_cast<size_t>(top.pos)];
    if (s.len == 0 || s.next < 0) continue;
    const int32_t right_pos = s.next;
    const Sym right = syms[static_cast<size_t>(right_pos)];
    // Stale entry: the pair at this position changed since it was queued.
    const MergeTable::Merge* m = merges_.find(s.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    s.id = top.new_id;
    s.len += right.len;
    s.next = right.next;
    syms[static_cast<size_t>(right_pos)].len = 0;
    if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = top.pos;
    if (s.prev >= 0)
      if (const MergeTable::Merge* pm = merges_.find(syms[static_cast<size_t>(s.prev)].id, s.id))
        queue.push(Cand{pm->rank, s.prev, pm->new_id});
    if (s.next >= 0)
      if (const MergeTable::Merge* nm = merges_.find(s.id, syms[static_cast<size_t>(s.next)].id))
        queue.push(Cand{nm->rank, top.pos, nm->new_id});
  }
  for (const Sym& s : syms)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace qt::calib::tok
