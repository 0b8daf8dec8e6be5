#include "formats/output_folder.h"

#include <unistd.h>

#include <filesystem>

#include "formats/atomic_file.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;

std::string canonical_or_abs(const std::string& path) {
  // Absolute first (a relative path with no existing part would stay relative), and without a
  // trailing separator ("out/" must name the folder "out", not an empty name inside it).
  fs::path a = fs::absolute(path).lexically_normal();
  if (a.has_relative_path() && a.filename().empty()) a = a.parent_path();
  std::error_code ec;
  fs::path c = fs::weakly_canonical(a, ec);
  return (ec ? a : c).string();
}

namespace {

bool is_inside(const std::string& child, const std::string& parent) {
  if (child == parent) return true;
  std::string p = parent;
  if (!p.empty() && p.back() != '/') p += '/';
  return child.rfind(p, 0) == 0;
}

}  // namespace

void check_output_folder(const std::string& out_arg, const std::string& input, bool overwrite) {
  if (out_arg.empty()) throw InputError(InputError::Kind::Usage, "", "", "no output folder given (-o OUT)");
  const std::string out = canonical_or_abs(out_arg);
  if (!input.empty()) {
    const std::string in = canonical_or_abs(input);
    if (is_inside(out, in))
      throw InputError(InputError::Kind::Usage, out_arg, "", "output folder is the input or inside it; choose another -o");
    if (is_inside(in, out))
      throw InputError(InputError::Kind::Usage, out_arg, "", "output folder contains the input; choose another -o");
  }
  std::error_code ec;
  if (fs::exists(out, ec) && !overwrite) {
    if (!fs::is_directory(out, ec) || !fs::is_empty(out, ec))
      throw InputError(InputError::Kind::Usage, out_arg, "",
                       "output folder exists and is not empty (use --overwrite to replace it after success)");
  }
  const fs::path parent = fs::path(out).parent_path();
  if (!fs::exists(parent, ec))
    throw InputError(InputError::Kind::Missing, parent.string(), "", "parent folder of the output does not exist");
}

PartialFolder PartialFolder::create(const std::string& out_arg, const std::string& input, bool overwrite) {
  check_output_folder(out_arg, input, overwrite);
  const std::string out = canonical_or_abs(out_arg);
  const std::string partial = out + ".qtool-partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) throw InputError(InputError::Kind::Io, partial, "", "cannot create folder: " + ec.message());
  return PartialFolder(out, partial);
}

PartialFolder::PartialFolder(PartialFolder&& o) noexcept
    : out_(std::move(o.out_)), partial_(std::move(o.partial_)), armed_(o.armed_) {
  o.armed_ = false;
}

PartialFolder::~PartialFolder() {
  if (armed_) {
    std::error_code ec;
    fs::remove_all(partial_, ec);
  }
}

void PartialFolder::publish() {
  QT_ASSERT(armed_);
  std::error_code ec;
  if (fs::exists(out_, ec)) {
    // Replace only now, after success: move the old folder aside, rename, then delete the old one.
    const std::string old = out_ + ".qtool-old-" + std::to_string(::getpid());
    fs::rename(out_, old, ec);
    if (ec) throw InputError(InputError::Kind::Io, out_, "", "cannot move the old output aside: " + ec.message());
    fs::rename(partial_, out_, ec);
    if (ec) throw InputError(InputError::Kind::Io, out_, "", "cannot publish the output: " + ec.message());
    fs::remove_all(old, ec);
  } else {
    fs::rename(partial_, out_, ec);
    if (ec) throw InputError(InputError::Kind::Io, out_, "", "cannot publish the output: " + ec.message());
  }
  armed_ = false;
  fsync_parent_directory(out_);
}

}  // namespace qt
