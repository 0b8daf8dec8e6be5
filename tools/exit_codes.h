// qtool's exit codes: one per InputError::Kind, documented in man/qtool.1.md and the README.
#pragma once

#include "libquant/error.h"

namespace qt {

enum ExitCode : int {
  kExitOk = 0,
  kExitCheckFailed = 1,   // verify: a gate failed (the checkpoint is worse than allowed)
  kExitUsage = 2,         // bad command line, or a combination that cannot work
  kExitBadFile = 3,       // malformed input file (header, JSON, offsets, sizes)
  kExitMissing = 4,       // a required file or tensor is missing (shard, LFS pointer, config)
  kExitUnsupported = 5,   // well-formed input qtool does not handle (architecture, dtype, ...)
  kExitBadValue = 6,      // tensor values refused (NaN/Inf weights, zero statistics)
  kExitIo = 7,            // the OS refused (disk full, permission denied, ...)
  kExitInternal = 70,     // a bug in qtool (unexpected exception)
};

inline int exit_code_for(InputError::Kind k) {
  switch (k) {
    case InputError::Kind::BadFile: return kExitBadFile;
    case InputError::Kind::Missing: return kExitMissing;
    case InputError::Kind::Unsupported: return kExitUnsupported;
    case InputError::Kind::BadValue: return kExitBadValue;
    case InputError::Kind::Usage: return kExitUsage;
    case InputError::Kind::Io: return kExitIo;
    case InputError::Kind::CheckFailed: return kExitCheckFailed;
  }
  return kExitInternal;
}

}  // namespace qt
