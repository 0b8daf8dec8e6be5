// What a run removes when it is stopped from outside, and the signal handling that does it.
//
// Every writing command creates things beside or instead of OUT: the partial folder, the lock
// file, temporary files of atomic writes. They are registered here while they exist. When the
// CLI has called install_interrupt_handling() (tools/main.cpp, before any thread starts):
//  * SIGINT, SIGTERM, SIGHUP: a dedicated thread (the signals are blocked in every other thread)
//    removes everything registered, says on stderr what it removed and what it kept (the
//    calibration statistics a later run reuses), and ends the process with 128 + the signal
//    number (130 for SIGINT, 143 for SIGTERM). A signal that was ignored when qtool started
//    (nohup) stays ignored.
//  * SIGBUS on a page of a registered input mapping (register_mapping; formats/mmap_file.cpp does
//    it for every mapped input), which is what the kernel raises when a mapped file is truncated
//    underneath qtool: the same cleanup, after the error "FILE: cannot read: the file was
//    truncated while qtool read it ...", and exit code 7 (I/O). Without the handling thread (a
//    library user) the error is printed and the process exits with 7 directly. A SIGBUS anywhere
//    else keeps its default action.
// Publishing holds hold_off_interrupts() across its renames, so an interrupt either comes before
// (the output is removed) or after (the output is complete).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace qt::cleanup {

// A registration: removes `path` (recursively) on an interrupt while the object lives; `what`, if
// not empty, is how the removal is announced ("this run's unfinished output").
class OnInterrupt {
 public:
  OnInterrupt() = default;
  OnInterrupt(std::string path, std::string what);
  OnInterrupt(OnInterrupt&& o) noexcept;
  OnInterrupt& operator=(OnInterrupt&& o) noexcept;
  OnInterrupt(const OnInterrupt&) = delete;
  OnInterrupt& operator=(const OnInterrupt&) = delete;
  ~OnInterrupt();
  void reset();  // unregister now

 private:
  uint64_t id_ = 0;
};

// Announces `path` as kept on an interrupt ("kept PATH (WHAT)") while the object lives.
class KeptOnInterrupt {
 public:
  KeptOnInterrupt() = default;
  KeptOnInterrupt(std::string path, std::string what);
  KeptOnInterrupt(KeptOnInterrupt&& o) noexcept;
  KeptOnInterrupt& operator=(KeptOnInterrupt&& o) noexcept;
  KeptOnInterrupt(const KeptOnInterrupt&) = delete;
  KeptOnInterrupt& operator=(const KeptOnInterrupt&) = delete;
  ~KeptOnInterrupt();

 private:
  uint64_t id_ = 0;
};

// While the returned lock is held, interrupt cleanup waits (publish, create-and-register).
std::unique_lock<std::recursive_mutex> hold_off_interrupts();

// Input mappings whose SIGBUS is reported as a truncated file (see above). `path` is copied.
// At most 1024 at a time; beyond that a mapping is simply not covered (default SIGBUS action).
void register_mapping(const void* begin, size_t length, const std::string& path);
void unregister_mapping(const void* begin);

// The CLI's signal handling (see above). Call once, first thing in main().
void install_interrupt_handling();

}  // namespace qt::cleanup
