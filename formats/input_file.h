// Opening input files for reading, the one way every reader does it: anything that is not a
// regular file (a FIFO, a socket, a device, a folder) is refused before a read could block or
// never end, and every failure is an InputError naming the file.
//
//   no such file, a dangling symlink      -> Missing "no such file"
//   a symlink loop                        -> Missing "cannot open: a symlink loop (too many levels of symbolic links)"
//   a folder                              -> Missing "is a directory, not a file"
//   a FIFO / socket / device              -> Io "is a FIFO (named pipe), not a regular file; qtool reads only regular files"
//   permission denied and other OS errors -> Io "cannot open: <OS error>"
//
// The open itself uses O_NONBLOCK, so even a FIFO with no writer is refused at once instead of
// blocking in open(2).
#pragma once

#include <string>

namespace qt {

// Opens `path` read-only after the checks above; returns the descriptor (blocking mode, close-on-
// exec). The caller closes it.
int open_input_file(const std::string& path);

// The checks above without keeping the file open (for readers that open it themselves).
void check_input_file(const std::string& path);

// The whole file (after the checks above). Throws InputError(Io) on a read error.
std::string read_input_file(const std::string& path);

}  // namespace qt
