// An output model folder written atomically and never at the cost of anything else at OUT.
//
//   OutputLock lock = OutputLock::acquire(out);   // optional: claim OUT early (quantize does,
//                                                  // before calibrating)
//   PartialFolder pf = PartialFolder::create(out, input_path, overwrite, &lock);  // checks, mkdir
//   ... write files under pf.path() ...
//   pf.publish();   // rename into place
//
// The rules (documented for users in qtool-quantize(1) and qtool-files(5)):
//  * One run per OUT. A run holds an exclusive flock(2) on the lock file `<OUT>.qtool-lock` from
//    its start to its publish; a second run on the same OUT fails at once, naming OUT. The lock
//    file is removed when the run ends.
//  * Everything is written into the sibling folder `<OUT>.qtool-partial-<pid>`, which is renamed
//    to OUT only by publish(), after every file in it is complete and fsynced. If publish() is
//    never reached (an exception), the destructor removes the partial folder.
//  * Publishing never destroys what this run did not create. OUT is checked again at publish:
//      - absent: renameat2(RENAME_NOREPLACE), so a folder or file that appears at OUT in the last
//        instant makes the rename fail instead of being replaced;
//      - an empty folder: removed with rmdir (which fails if anything was put into it) and then
//        the same no-replace rename;
//      - a qtool output folder (one with a qtool_manifest.json) and `overwrite`: moved aside to
//        `<OUT>.qtool-old-<pid>` (no-replace), checked again to still be a qtool output, the new
//        folder renamed in (no-replace), then the old one deleted;
//      - anything else (a plain file, a symlink, a folder that is not a qtool output, or any
//        non-empty folder without `overwrite`): publish fails naming OUT, and OUT is untouched.
//    Where the file system refuses RENAME_NOREPLACE (EINVAL: some network and FUSE file systems)
//    the rename is made safe another way: mkdir(OUT) claims the name (it fails if anything is
//    there), then rename(2) replaces that empty folder, which the kernel refuses (ENOTEMPTY) if
//    something was put into it meanwhile.
//  * Interrupts (formats/run_cleanup.h): the partial folder and the lock file are registered for
//    removal while they exist; publish runs with interrupt cleanup held off.
//  * Leftovers of killed runs: when the lock is taken, sibling folders `<OUT>.qtool-partial-<N>`
//    are looked at. One whose process N is no longer running and that carries the marker file
//    `.qtool-partial` (written into every partial folder, removed just before publish) is removed;
//    any other is left alone. Either way notes() says what was found.
#pragma once

#include <string>
#include <vector>

#include "formats/run_cleanup.h"

namespace qt {

// The absolute, normalised form of an output path (no trailing separator; symlinks in existing
// parts resolved), as every output-folder check compares paths.
std::string canonical_or_abs(const std::string& path);

// Preflight for an output folder, before anything is written. Throws InputError:
//   Usage   - out is empty; out is `input` or inside it (or contains it); out exists and is not
//             an empty folder (unless `overwrite`); with `overwrite`, out exists and is not a
//             qtool output folder (a plain file, a symlink, a folder without qtool_manifest.json)
//   Missing - the parent folder of out does not exist
// `input` may be a file or a folder ("" skips the containment checks). `offers_overwrite`: whether
// the command has --overwrite (only then does the error suggest it).
void check_output_folder(const std::string& out, const std::string& input, bool overwrite,
                         bool offers_overwrite = true);

// Throws InputError(Io) "DIR: WHAT is not writable (OS error)" when files cannot be created in
// the folder `dir` (a read-only file system, no write permission), InputError(Missing) "DIR: WHAT
// does not exist"; checked with access(2), so it writes nothing (also for a dry run).
void check_writable_folder(const std::string& dir, const std::string& what);

// True if `dir` is a folder (not a symlink) holding a qtool_manifest.json: something qtool wrote.
bool is_qtool_output_folder(const std::string& dir);

// The exclusive claim on one output path for one run (see above). Movable; releasing it (the
// destructor) removes the lock file.
class OutputLock {
 public:
  // `out` as given by the user (made absolute here). Throws InputError:
  //   Io - another run holds the lock ("OUT: another qtool run (pid N) is writing this output"),
  //        or the lock file cannot be created (the output location is not writable: read-only
  //        file system, permission denied; the message names the folder and the OS error).
  static OutputLock acquire(const std::string& out);

  OutputLock() = default;
  OutputLock(OutputLock&& o) noexcept;
  OutputLock& operator=(OutputLock&& o) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  ~OutputLock();

  bool held() const { return fd_ >= 0; }
  const std::string& out() const { return out_; }     // absolute OUT
  const std::string& path() const { return path_; }   // `<OUT>.qtool-lock`
  // What acquire() found and did about leftover partial folders of killed runs (one line each).
  const std::vector<std::string>& notes() const { return notes_; }
  void release();

 private:
  int fd_ = -1;
  std::string out_, path_;
  std::vector<std::string> notes_;
  cleanup::OnInterrupt on_interrupt_;
};

// The marker file in every partial folder (removed before publish).
inline constexpr const char* kPartialMarker = ".qtool-partial";

// `<abs(out)>.qtool-lock`.
std::string output_lock_path(const std::string& out);

class PartialFolder {
 public:
  // Runs check_output_folder, takes the OutputLock unless `held` is one already held for the same
  // OUT, then creates `<abs(out)>.qtool-partial-<pid>` (removing a stale one of the same name).
  // Throws InputError(Io) if it cannot be created or the lock is held by another run.
  // `offers_overwrite` as for check_output_folder.
  static PartialFolder create(const std::string& out, const std::string& input, bool overwrite,
                              const OutputLock* held = nullptr, bool offers_overwrite = true);

  PartialFolder(PartialFolder&& o) noexcept;
  PartialFolder& operator=(PartialFolder&&) = delete;
  PartialFolder(const PartialFolder&) = delete;
  PartialFolder& operator=(const PartialFolder&) = delete;
  ~PartialFolder();  // removes the partial folder unless published

  const std::string& path() const { return partial_; }  // where to write
  const std::string& out() const { return out_; }       // the final (absolute) path
  // The notes of the lock create() took itself (empty when the caller's lock was used).
  const std::vector<std::string>& notes() const { return own_lock_.notes(); }

  // Renames the partial folder to out by the rules above and fsyncs the parent folder. Throws
  // InputError(Io) naming OUT when OUT is something publishing must not replace (then the partial
  // folder is removed by the destructor, and OUT is untouched). Call once.
  void publish();

 private:
  PartialFolder(std::string out, std::string partial, bool overwrite)
      : out_(std::move(out)), partial_(std::move(partial)), overwrite_(overwrite) {}
  std::string out_, partial_;
  bool overwrite_ = false;
  bool armed_ = true;
  OutputLock own_lock_;  // when create() took the lock itself
  cleanup::OnInterrupt on_interrupt_;
};

// Renames `from` to `to` only if nothing exists at `to` (renameat2 RENAME_NOREPLACE, or the
// mkdir + rename scheme above for a folder where the file system refuses the flag). Returns 0 or
// the errno (EEXIST / ENOTEMPTY when something is at `to`). `force_fallback` is for tests.
int rename_no_replace(const std::string& from, const std::string& to, bool force_fallback = false);

}  // namespace qt
