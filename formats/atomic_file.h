// Atomic file replacement: write a temporary file next to the target, fsync it, rename it over
// the target, fsync the directory. Readers (and a crash) see either the old file or the complete
// new one, never a torn one.
#pragma once

#include <string>
#include <string_view>

namespace qt {

// Writes `bytes` to `path` atomically (see above). The temporary file is
// temp_path_for(path) and is removed again on failure. Throws InputError(Io) naming `path`.
void write_file_atomic(const std::string& path, std::string_view bytes);

// "<dir>/.<name>.tmp-<pid>": hidden, in the target's directory (rename must not cross file
// systems), unique per process.
std::string temp_path_for(const std::string& path);

// fsyncs the directory holding `path` so a completed rename survives a crash. Throws
// InputError(Io) naming the directory.
void fsync_parent_directory(const std::string& path);

// Writes all of `bytes` at `offset` of `fd` (loops over short writes and EINTR). Throws
// InputError(Io) naming `path` (and `tensor`, if not empty) with the OS error.
void pwrite_all(int fd, const void* bytes, size_t size, uint64_t offset, const std::string& path,
                const std::string& tensor = {});

}  // namespace qt
