#include "formats/run_cleanup.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

namespace qt::cleanup {
namespace {

namespace fs = std::filesystem;

struct Entry {
  std::string path, what;
  bool kept = false;
};

std::recursive_mutex& mu() {
  static std::recursive_mutex m;
  return m;
}
std::map<uint64_t, Entry>& entries() {
  static std::map<uint64_t, Entry> e;
  return e;
}
uint64_t g_next_id = 1;

uint64_t add(std::string path, std::string what, bool kept) {
  std::lock_guard<std::recursive_mutex> g(mu());
  const uint64_t id = g_next_id++;
  entries()[id] = Entry{std::move(path), std::move(what), kept};
  return id;
}
void remove_entry(uint64_t id) {
  if (id == 0) return;
  std::lock_guard<std::recursive_mutex> g(mu());
  entries().erase(id);
}

// ---- input mappings (SIGBUS) ----

constexpr int kSlots = 1024;
constexpr size_t kPathBytes = 1024;
struct Slot {
  std::atomic<bool> used{false};
  std::atomic<uintptr_t> begin{0}, end{0};
  char path[kPathBytes] = {};
};
Slot g_slots[kSlots];
std::atomic<int> g_bus_slot{-1};
std::atomic<bool> g_thread_running{false};
struct sigaction g_old_bus {};

void write_str(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

const char* const kTruncated =
    ": cannot read: the file was truncated while qtool read it (changed by another process; qtool assumes its "
    "inputs do not change during a run)\n";

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
  const auto addr = reinterpret_cast<uintptr_t>(si->si_addr);
  int found = -1;
  for (int i = 0; i < kSlots && found < 0; ++i)
    if (g_slots[i].used.load(std::memory_order_acquire) && addr >= g_slots[i].begin.load() && addr < g_slots[i].end.load())
      found = i;
  if (found < 0) {
    // Not one of ours: the previous action (by default: terminate with a core dump).
    if ((g_old_bus.sa_flags & SA_SIGINFO) && g_old_bus.sa_sigaction != nullptr) {
      g_old_bus.sa_sigaction(sig, si, ctx);
      return;
    }
    if (g_old_bus.sa_handler != SIG_DFL && g_old_bus.sa_handler != SIG_IGN && g_old_bus.sa_handler != nullptr) {
      g_old_bus.sa_handler(sig);
      return;
    }
    ::signal(SIGBUS, SIG_DFL);
    return;  // the faulting access runs again and now ends the process
  }
  int expected = -1;
  const bool first = g_bus_slot.compare_exchange_strong(expected, found);
  if (g_thread_running.load()) {
    if (first) ::kill(::getpid(), SIGUSR2);  // the handling thread cleans up and exits
    for (;;) ::pause();
  }
  if (!first)
    for (;;) ::pause();  // the first faulting thread reports and exits
  write_str("qtool: error: ");
  write_str(g_slots[found].path);
  write_str(kTruncated);
  ::_exit(7);
}

void install_bus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_old_bus);
  });
}

// ---- the handling thread ----

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
  }
}

[[noreturn]] void clean_up_and_exit(int code) {
  mu().lock();  // never released: nothing publishes or registers from now on
  for (const auto& [id, e] : entries()) {
    if (e.kept) continue;
    std::error_code ec;
    const bool existed = fs::exists(fs::symlink_status(e.path, ec));
    // Another thread may still be creating files inside a folder being removed: try again.
    for (int attempt = 0; attempt < 5; ++attempt) {
      ec.clear();
      fs::remove_all(e.path, ec);
      if (!ec) break;
    }
    if (existed && !e.what.empty()) {
      if (ec)
        std::fprintf(stderr, "qtool: could not remove %s (%s): %s\n", e.path.c_str(), e.what.c_str(), ec.message().c_str());
      else
        std::fprintf(stderr, "qtool: removed %s (%s)\n", e.path.c_str(), e.what.c_str());
    }
  }
  for (const auto& [id, e] : entries()) {
    std::error_code ec;
    if (e.kept && fs::exists(e.path, ec)) std::fprintf(stderr, "qtool: kept %s (%s)\n", e.path.c_str(), e.what.c_str());
  }
  std::fflush(stderr);
  ::_exit(code);
}

void handling_thread(sigset_t set) {
  for (;;) {
    siginfo_t si {};
    const int sig = ::sigwaitinfo(&set, &si);
    if (sig < 0) continue;
    if (sig == SIGUSR2) {
      const int slot = g_bus_slot.load();
      if (slot < 0) continue;  // a SIGUSR2 from outside: not ours to act on
      std::fprintf(stderr, "qtool: error: %s%s", g_slots[slot].path, kTruncated);
      clean_up_and_exit(7);
    }
    std::fprintf(stderr, "qtool: interrupted by %s\n", signal_name(sig));
    clean_up_and_exit(128 + sig);
  }
}

}  // namespace

OnInterrupt::OnInterrupt(std::string path, std::string what) : id_(add(std::move(path), std::move(what), false)) {}
OnInterrupt::OnInterrupt(OnInterrupt&& o) noexcept : id_(o.id_) { o.id_ = 0; }
OnInterrupt& OnInterrupt::operator=(OnInterrupt&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    o.id_ = 0;
  }
  return *this;
}
OnInterrupt::~OnInterrupt() { reset(); }
void OnInterrupt::reset() {
  remove_entry(id_);
  id_ = 0;
}

KeptOnInterrupt::KeptOnInterrupt(std::string path, std::string what) : id_(add(std::move(path), std::move(what), true)) {}
KeptOnInterrupt::KeptOnInterrupt(KeptOnInterrupt&& o) noexcept : id_(o.id_) { o.id_ = 0; }
KeptOnInterrupt& KeptOnInterrupt::operator=(KeptOnInterrupt&& o) noexcept {
  if (this != &o) {
    remove_entry(id_);
    id_ = o.id_;
    o.id_ = 0;
  }
  return *this;
}
KeptOnInterrupt::~KeptOnInterrupt() { remove_entry(id_); }

std::unique_lock<std::recursive_mutex> hold_off_interrupts() { return std::unique_lock<std::recursive_mutex>(mu()); }

void register_mapping(const void* begin, size_t length, const std::string& path) {
  install_bus_handler();
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (!g_slots[i].used.load() && g_slots[i].used.compare_exchange_strong(expected, true)) {
      Slot& s = g_slots[i];
      std::strncpy(s.path, path.c_str(), kPathBytes - 1);
      s.path[kPathBytes - 1] = '\0';
      s.begin.store(reinterpret_cast<uintptr_t>(begin));
      s.end.store(reinterpret_cast<uintptr_t>(begin) + length, std::memory_order_release);
      return;
    }
  }
}

void unregister_mapping(const void* begin) {
  if (begin == nullptr) return;
  const auto b = reinterpret_cast<uintptr_t>(begin);
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    if (s.used.load(std::memory_order_acquire) && s.begin.load() == b && s.end.load() != 0) {
      s.end.store(0);
      s.begin.store(0);
      s.used.store(false, std::memory_order_release);
      return;
    }
  }
}

void install_interrupt_handling() {
  static std::once_flag once;
  std::call_once(once, [] {
    install_bus_handler();
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      ::sigaction(sig, nullptr, &old);
      if (old.sa_handler != SIG_IGN) sigaddset(&set, sig);  // nohup / `cmd &` in a script: stays ignored
    }
    sigaddset(&set, SIGUSR2);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by every thread started from now on
    std::thread(handling_thread, set).detach();
    g_thread_running.store(true);
  });
}

}  // namespace qt::cleanup
