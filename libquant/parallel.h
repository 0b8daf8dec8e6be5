// Thread counts, in one place: what a `threads` argument means everywhere in qtool.
//
// Every parallel loop in qtool splits its work into tasks that do not depend on the thread
// count, so results are identical whatever these return; only speed changes.
#pragma once

namespace qt {

// The OpenMP thread count a `threads` argument means: `requested` when > 0, else the process
// default (set_default_threads, or OpenMP's own default); 1 without OpenMP.
int resolve_threads(int requested);

// Sets the process-wide default thread count (`-j N`); n <= 0 leaves it unchanged.
void set_default_threads(int n);

}  // namespace qt
