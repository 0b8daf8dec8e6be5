#include "formats/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "formats/atomic_file.h"
#include "formats/direct_writer.h"
#include "formats/json_util.h"
#include "formats/safetensors.h"
#include "libquant/tensor_view.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;

namespace {

using Kind = InputError::Kind;

// JSON string as serde_json writes it: `"` and `\` escaped, control characters as \b \t \n \f \r
// or \u00xx (lower-case hex), everything else (incl. DEL and non-ASCII UTF-8) verbatim.
void append_json_string(std::string& out, std::string_view s) {
  static const char* kHex = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

uint64_t spec_bytes(const std::string& path, const TensorSpec& s) {
  uint64_t numel = 1;
  bool overflow = false, zero = false;
  for (int64_t d : s.shape) {
    if (d < 0)
      throw InputError(Kind::BadValue, path, s.name, "shape " + shape_string(s.shape) + " has a negative dimension");
    if (d == 0) zero = true;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel);
  }
  if (zero) return 0;
  const auto n = overflow ? std::nullopt : dtype_nbytes(s.dtype, numel);
  if (!n)
    throw InputError(Kind::BadValue, path, s.name,
                     "shape " + shape_string(s.shape) + " of " + std::string(dtype_name(s.dtype)) +
                         " is not a whole number of bytes or overflows 64 bits");
  return *n;
}

}  // namespace

SafetensorsLayout plan_safetensors_layout(const std::string& path, const std::vector<TensorSpec>& specs,
                                          const std::map<std::string, std::string>& metadata) {
  SafetensorsLayout L;
  L.order = specs;
  // Reference order: dtype descending in enum order, then name ascending (std::string compares
  // bytes as unsigned char, like Rust's String ordering).
  std::sort(L.order.begin(), L.order.end(), [](const TensorSpec& a, const TensorSpec& b) {
    if (a.dtype != b.dtype) return a.dtype > b.dtype;
    return a.name < b.name;
  });
  for (size_t i = 0; i < L.order.size(); ++i) {
    const std::string& name = L.order[i].name;
    if (i > 0 && L.order[i - 1].name == name)
      throw InputError(Kind::BadValue, path, name, "tensor name given twice");
    if (name == "__metadata__")
      throw InputError(Kind::BadValue, path, name, "'__metadata__' is reserved and cannot name a tensor");
    if (find_invalid_utf8(name)) throw InputError(Kind::BadValue, path, printable(name), "tensor name is not valid UTF-8");
  }
  // Equal names can sort apart only with different dtypes; catch those too.
  {
    std::vector<std::string> names;
    for (const auto& s : specs) names.push_back(s.name);
    std::sort(names.begin(), names.end());
    if (auto it = std::adjacent_find(names.begin(), names.end()); it != names.end())
      throw InputError(Kind::BadValue, path, *it, "tensor name given twice");
  }
  for (const auto& [k, v] : metadata)
    if (find_invalid_utf8(k) || find_invalid_utf8(v))
      throw InputError(Kind::BadValue, path, "", "metadata entry '" + printable(k) + "' is not valid UTF-8");

  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) json += ',';
      first = false;
      append_json_string(json, k);
      json += ':';
      append_json_string(json, v);
    }
    json += '}';
  }
  uint64_t offset = 0;  // relative to the data buffer
  std::vector<uint64_t> rel;
  for (const TensorSpec& s : L.order) {
    const uint64_t size = spec_bytes(path, s);
    if (json.size() > 1) json += ',';
    append_json_string(json, s.name);
    json += ":{\"dtype\":\"";
    json += dtype_name(s.dtype);
    json += "\",\"shape\":[";
    for (size_t i = 0; i < s.shape.size(); ++i) {
      if (i) json += ',';
      json += std::to_string(s.shape[i]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + size) + "]}";
    rel.push_back(offset);
    offset += size;
    L.slots.push_back({0, size});
  }
  json += '}';
  // Pad N up to a multiple of 8 with spaces (never NULs: strict JSON readers reject them).
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > kMaxHeaderBytes)
    throw InputError(Kind::BadValue, path, "",
                     "header would be " + std::to_string(json.size()) + " bytes, above the " +
                         std::to_string(kMaxHeaderBytes) + "-byte limit of safetensors readers (too "
                         "many tensors or too long names for one file: use more shards)");
  const uint64_t n = json.size();
  L.header.resize(8);
  for (int i = 0; i < 8; ++i) L.header[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  L.header += json;
  for (size_t i = 0; i < L.slots.size(); ++i) L.slots[i].offset = 8 + n + rel[i];
  L.file_size = 8 + n + offset;
  return L;
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<TensorSpec> specs,
                                     std::map<std::string, std::string> metadata)
    : path_(std::move(path)), metadata_(std::move(metadata)) {
  metadata_.emplace("format", "pt");
  plan_ = plan_safetensors_layout(path_, specs, metadata_);
  for (size_t i = 0; i < plan_.order.size(); ++i) {
    slots_.emplace(plan_.order[i].name, plan_.slots[i]);
    written_[plan_.order[i].name];
  }
  temp_path_ = temp_path_for(path_);
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw InputError(Kind::Io, path_, "",
                     "cannot create temporary file " + temp_path_ + ": " + std::strerror(errno));
  try {
    // Reserve the whole file now: a full disk fails here rather than after hours of work.
    // fallocate (not posix_fallocate) so a file system without it is not emulated byte by byte;
    // then ftruncate still gives the right size (sparse).
    if (plan_.file_size > 0 &&
        ::fallocate(fd_, 0, 0, static_cast<off_t>(plan_.file_size)) != 0) {
      const int err = errno;
      if (err != EOPNOTSUPP && err != ENOSYS && err != EINVAL)
        throw InputError(Kind::Io, path_, "",
                         "cannot reserve " + std::to_string(plan_.file_size) + " bytes: " + std::strerror(err));
      if (::ftruncate(fd_, static_cast<off_t>(plan_.file_size)) != 0)
        throw InputError(Kind::Io, path_, "",
                         "cannot set file size to " + std::to_string(plan_.file_size) + ": " +
                             std::strerror(errno));
    }
    direct_ = DirectWriter::attach(fd_, path_, plan_.file_size);
    if (direct_) direct_->write(0, {reinterpret_cast<const uint8_t*>(plan_.header.data()), plan_.header.size()}, "");
    else pwrite_all(fd_, plan_.header.data(), plan_.header.size(), 0, path_);
  } catch (...) {
    direct_.reset();
    ::close(fd_);
    ::unlink(temp_path_.c_str());
    fd_ = -1;
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  direct_.reset();  // waits for its write in progress: the descriptor must outlive it
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void SafetensorsWriter::write(const std::string& name, std::span<const uint8_t> bytes) {
  const auto it = slots_.find(name);
  if (it != slots_.end() && bytes.size() != it->second.size)
    throw std::logic_error(path_ + ": tensor '" + name + "': write of " + std::to_string(bytes.size()) +
                           " bytes, but the tensor has " + std::to_string(it->second.size) + " bytes");
  write_chunk(name, 0, bytes);
}

bool SafetensorsWriter::book(const std::string& name, uint64_t begin, uint64_t end, TensorSlot& slot) {
  const auto it = slots_.find(name);
  if (it == slots_.end())
    throw std::logic_error(path_ + ": tensor '" + name + "' is not in this file's layout");
  slot = it->second;
  if (end < begin || end > slot.size)
    throw std::logic_error(path_ + ": tensor '" + name + "': chunk [" + std::to_string(begin) + "," +
                           std::to_string(end) + ") is outside the tensor's " +
                           std::to_string(slot.size) + " bytes");
  // Book the range under the lock; the caller writes outside it so threads overlap their I/O.
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) throw std::logic_error(path_ + ": write after commit");
  if (begin == end) return false;
  auto& ranges = written_[name];
  auto next = ranges.lower_bound(begin);  // first range starting at or after begin
  if (next != ranges.end() && next->first < end)
    throw std::logic_error(path_ + ": tensor '" + name + "': bytes [" + std::to_string(next->first) +
                           "," + std::to_string(std::min(end, next->second)) + ") written twice");
  if (next != ranges.begin()) {
    auto prev = std::prev(next);
    if (prev->second > begin)
      throw std::logic_error(path_ + ": tensor '" + name + "': bytes [" + std::to_string(begin) + "," +
                             std::to_string(std::min(end, prev->second)) + ") written twice");
  }
  // Insert [begin,end) merged with touching neighbours to keep the map short.
  uint64_t nb = begin, ne = end;
  if (next != ranges.end() && next->first == end) { ne = next->second; next = ranges.erase(next); }
  if (next != ranges.begin()) {
    auto prev = std::prev(next);
    if (prev->second == begin) { nb = prev->first; ranges.erase(prev); }
  }
  ranges.emplace(nb, ne);
  return true;
}

void SafetensorsWriter::write_chunk(const std::string& name, uint64_t offset_in_tensor,
                                    std::span<const uint8_t> bytes) {
  TensorSlot slot;
  if (!book(name, offset_in_tensor, offset_in_tensor + bytes.size(), slot)) return;
  if (direct_) return direct_->write(slot.offset + offset_in_tensor, bytes, name);
  pwrite_all(fd_, bytes.data(), bytes.size(), slot.offset + offset_in_tensor, path_, name);
  start_writeback(slot.offset + offset_in_tensor, bytes.size());
}

namespace {
std::atomic<SafetensorsWriter::KernelCopy> g_kernel_copy{SafetensorsWriter::KernelCopy::Auto};
}  // namespace

void SafetensorsWriter::kernel_copy_for_tests(KernelCopy mode) { g_kernel_copy.store(mode); }

uint64_t SafetensorsWriter::write_copy(const std::string& name, std::span<const uint8_t> bytes, int src_fd,
                                       uint64_t src_offset) {
  const auto it = slots_.find(name);
  if (it != slots_.end() && bytes.size() != it->second.size)
    throw std::logic_error(path_ + ": tensor '" + name + "': write of " + std::to_string(bytes.size()) +
                           " bytes, but the tensor has " + std::to_string(it->second.size) + " bytes");
  TensorSlot slot;
  if (!book(name, 0, bytes.size(), slot)) return 0;
  const KernelCopy mode = g_kernel_copy.load();
  const uint64_t size = bytes.size();
  uint64_t done = 0;
  if (direct_) {
    // Direct I/O: the range is read from src_fd into the writer's buffers (pread: no mapping, no
    // page-cache copy of the output); whatever is not read is written from `bytes`.
    if (mode != KernelCopy::Off && src_fd >= 0) {
      const uint64_t want = mode == KernelCopy::FailAfterFirstChunk ? std::min<uint64_t>(size, 4096) : size;
      done = direct_->copy(src_fd, src_offset, slot.offset, want, name);
    }
    if (done < size) direct_->write(slot.offset + done, bytes.subspan(done), name);
    return done;
  }
  // copy_file_range copies inside the kernel (on one file system: through the page cache, or by
  // sharing blocks where the file system can). Any failure (EXDEV across file systems on some
  // kernels, EOPNOTSUPP, ENOSYS, EINVAL, an I/O error) or a short copy of 0 ends the attempt; the
  // rest is written from `bytes`, which reports real I/O errors the usual way. A failed call may
  // have written part of its range: the pwrite below covers that range again.
  while (mode != KernelCopy::Off && done < size) {
    if (mode == KernelCopy::FailAfterFirstChunk && done > 0) break;
    uint64_t want = std::min<uint64_t>(size - done, 1ull << 30);
    if (mode == KernelCopy::FailAfterFirstChunk) want = std::min<uint64_t>(want, 4096);
    off64_t in = static_cast<off64_t>(src_offset + done), out = static_cast<off64_t>(slot.offset + done);
    const ssize_t r = ::copy_file_range(src_fd, &in, fd_, &out, static_cast<size_t>(want), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    done += static_cast<uint64_t>(r);
  }
  if (done < size) pwrite_all(fd_, bytes.data() + done, size - done, slot.offset + done, path_, name);
  start_writeback(slot.offset, size);
  return done;
}

// Without this, a file smaller than the kernel's dirty-page threshold (10 % of RAM by default)
// sits in the page cache until commit()'s fsync, which then writes all of it while nothing else
// happens: quantizing first and writing after, instead of both at once. Asking the kernel to start
// writing each large range as soon as it is written (SYNC_FILE_RANGE_WRITE: start, do not wait)
// lets the disk work while the next tensor is quantized, so the fsync waits only for the tail.
// Small writes (scales) are left to the fsync. Advisory: an error here is ignored, the fsync
// reports real I/O errors.
void SafetensorsWriter::start_writeback(uint64_t offset, uint64_t size) {
  constexpr uint64_t kMinRange = 1u << 20;
  if (size < kMinRange) return;
#ifdef SYNC_FILE_RANGE_WRITE
  (void)::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(size), SYNC_FILE_RANGE_WRITE);
#endif
}

void SafetensorsWriter::commit() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) throw std::logic_error(path_ + ": commit called twice");
  for (const TensorSpec& s : plan_.order) {
    const auto& ranges = written_[s.name];
    uint64_t have = 0;
    for (const auto& [b, e] : ranges) have += e - b;
    const uint64_t size = slots_[s.name].size;
    if (have != size)
      throw std::logic_error(path_ + ": tensor '" + s.name + "': only " + std::to_string(have) + " of " +
                             std::to_string(size) + " bytes were written before commit");
  }
  if (direct_) direct_->finish();
  if (::fsync(fd_) != 0) throw InputError(Kind::Io, path_, "", std::string("cannot sync: ") + std::strerror(errno));
  direct_.reset();
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw InputError(Kind::Io, path_, "", std::string("cannot close: ") + std::strerror(errno));
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    throw InputError(Kind::Io, path_, "",
                     "cannot rename " + temp_path_ + " into place: " + std::strerror(errno));
  committed_ = true;
  fsync_parent_directory(path_);
}

// --- sharding --------------------------------------------------------------------------------

std::string shard_file_name(size_t index0, size_t count) {
  if (count <= 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index0 + 1, count);
  return buf;
}

std::vector<ShardPlan> plan_shards(const std::vector<TensorSpec>& specs, uint64_t max_shard_bytes) {
  QT_ASSERT(max_shard_bytes > 0);
  std::vector<ShardPlan> shards(1);
  for (const TensorSpec& s : specs) {
    const uint64_t size = spec_bytes("", s);
    ShardPlan* cur = &shards.back();
    if (!cur->tensors.empty() && cur->tensor_bytes + size > max_shard_bytes) {
      shards.emplace_back();
      cur = &shards.back();
    }
    cur->tensors.push_back(s);
    cur->tensor_bytes += size;
    // An oversized tensor fills its shard alone: close it so the next tensor starts a new one.
    if (size > max_shard_bytes) shards.emplace_back();
  }
  if (shards.size() > 1 && shards.back().tensors.empty()) shards.pop_back();
  for (size_t i = 0; i < shards.size(); ++i) shards[i].file_name = shard_file_name(i, shards.size());
  return shards;
}

void write_index_json(const std::string& dir, uint64_t total_size,
                      const std::map<std::string, std::string>& weight_map) {
  nlohmann::json j;
  j["metadata"]["total_size"] = total_size;
  j["weight_map"] = nlohmann::json::object();
  for (const auto& [k, v] : weight_map) j["weight_map"][k] = v;
  write_file_atomic((fs::path(dir) / kIndexFileName).string(), dump_json_python_style(j));
}

}  // namespace qt
