// An output model folder written atomically: everything goes into a sibling folder
// `<OUT>.qtool-partial-<pid>`, which is renamed to OUT only by publish(), after every file in it
// is complete and fsynced. Used by `qtool convert` (the same scheme as the quantize pipeline).
//
//   PartialFolder pf = PartialFolder::create(out, input_path, overwrite);  // checks, then mkdir
//   ... write files under pf.path() ...
//   pf.publish();   // rename into place (an existing OUT is replaced only now, with overwrite)
//
// If publish() is never reached (an exception), the destructor removes the partial folder, so an
// interrupted run never leaves a folder named OUT that looks complete.
#pragma once

#include <string>

namespace qt {

// The absolute, normalised form of an output path (no trailing separator; symlinks in existing
// parts resolved), as every output-folder check compares paths.
std::string canonical_or_abs(const std::string& path);

// Preflight for an output folder, before anything is written. Throws InputError:
//   Usage   - out is empty; out is `input` or inside it (or contains it); out exists and is not
//             an empty folder (unless `overwrite`)
//   Missing - the parent folder of out does not exist
// `input` may be a file or a folder ("" skips the containment checks).
void check_output_folder(const std::string& out, const std::string& input, bool overwrite);

class PartialFolder {
 public:
  // Runs check_output_folder, then creates `<abs(out)>.qtool-partial-<pid>` (removing a stale one
  // of the same name). Throws InputError(Io) if it cannot be created.
  static PartialFolder create(const std::string& out, const std::string& input, bool overwrite);

  PartialFolder(PartialFolder&& o) noexcept;
  PartialFolder& operator=(PartialFolder&&) = delete;
  PartialFolder(const PartialFolder&) = delete;
  PartialFolder& operator=(const PartialFolder&) = delete;
  ~PartialFolder();  // removes the partial folder unless published

  const std::string& path() const { return partial_; }  // where to write
  const std::string& out() const { return out_; }       // the final (absolute) path

  // Renames the partial folder to out (moving an existing out aside first and deleting it after
  // the rename) and fsyncs the parent folder. Throws InputError(Io). Call once.
  void publish();

 private:
  PartialFolder(std::string out, std::string partial) : out_(std::move(out)), partial_(std::move(partial)) {}
  std::string out_, partial_;
  bool armed_ = true;
};

}  // namespace qt
