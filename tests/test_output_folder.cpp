// Tests for the output side of every writing command (formats/output_folder.h): the claim on OUT
// (the lock), the partial folder, and a publish that never destroys what the run did not create.
// Library-level cases call PartialFolder / OutputLock / run_quantize directly; the CLI cases run
// the real qtool binary as a second process.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "formats/manifest.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using Kind = InputError::Kind;

using test::expect_exact;

std::string taken_text(const std::string& out) {
  return out + ": the output path is taken by something this run did not create (it appeared or changed during the "
               "run); it was left untouched and this run's output was discarded";
}

// Every entry of a folder, by name.
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

void make_qtool_output(const fs::path& dir, const std::string& marker) {
  fs::create_directories(dir);
  test::write_text(dir / kManifestFile, "{}\n");
  test::write_text(dir / "marker", marker);
}

TEST(OutputFolder, AFolderCreatedAtOutDuringTheRunSurvivesAndPublishFailsNamingOut) {
  test::TempDir d;
  const std::string out = fs::canonical(d.path()).string() + "/out";
  {
    PartialFolder pf = PartialFolder::create(out, "", false);
    test::write_text(fs::path(pf.path()) / "model.safetensors", "new");
    fs::create_directory(out);  // someone else, during the run
    test::write_text(fs::path(out) / "theirs.txt", "keep me");
    expect_exact([&] { pf.publish(); }, Kind::Io, taken_text(out));
  }
  EXPECT_EQ(test::read_text(fs::path(out) / "theirs.txt"), "keep me");
  EXPECT_EQ(names_in(d.path()), std::vector<std::string>{"out"});  // no partial folder, no lock file left
}

TEST(OutputFolder, AnEmptyOutFilledDuringTheRunIsNotReplaced) {
  test::TempDir d;
  const std::string out = fs::canonical(d.path()).string() + "/out";
  fs::create_directory(out);  // an empty OUT is accepted at the start
  {
    PartialFolder pf = PartialFolder::create(out, "", false);
    test::write_text(fs::path(out) / "theirs.txt", "keep me");
    expect_exact([&] { pf.publish(); }, Kind::Io, taken_text(out));
  }
  EXPECT_EQ(names_in(out), std::vector<std::string>{"theirs.txt"});
  {
    fs::remove(fs::path(out) / "theirs.txt");  // still empty at publish: replaced
    PartialFolder pf = PartialFolder::create(out, "", false);
    test::write_text(fs::path(pf.path()) / "f", "x");
    pf.publish();
  }
  EXPECT_EQ(test::read_text(fs::path(out) / "f"), "x");
}

TEST(OutputFolder, AFileCreatedAtOutDuringTheRunIsNotReplaced) {
  test::TempDir d;
  const std::string out = fs::canonical(d.path()).string() + "/out";
  {
    PartialFolder pf = PartialFolder::create(out, "", true);
    test::write_text(out, "a plain file");
    expect_exact([&] { pf.publish(); }, Kind::Io, taken_text(out));
  }
  EXPECT_EQ(test::read_text(out), "a plain file");
}

TEST(OutputFolder, ASecondClaimOnTheSameOutputFailsNamingOutAndTheFirstRun) {
  test::TempDir d;
  const std::string out = fs::canonical(d.path()).string() + "/out";
  {
    OutputLock first = OutputLock::acquire(out);
    EXPECT_TRUE(first.held());
    EXPECT_EQ(first.path(), out + ".qtool-lock");
    EXPECT_EQ(test::read_text(first.path()), std::to_string(::getpid()) + "\n");
    const std::string msg = out + ": another qtool run (pid " + std::to_string(::getpid()) +
                            ") is writing this output (it holds " + out +
                            ".qtool-lock); wait for it or choose another -o";
    expect_exact([&] { OutputLock::acquire(out); }, Kind::Io, msg);
    expect_exact([&] { PartialFolder::create(out, "", false); }, Kind::Io, msg);
    // The holder itself creates its partial folder with its lock.
    PartialFolder pf = PartialFolder::create(out, "", false, &first);
    pf.publish();
    EXPECT_TRUE(first.held());  // a lock handed in stays with its owner
  }
  EXPECT_FALSE(fs::exists(out + ".qtool-lock"));  // removed when released
  OutputLock again = OutputLock::acquire(out + "2");
  EXPECT_TRUE(again.held());
}

TEST(OutputFolder, OverwriteReplacesOnlyAQtoolOutputFolder) {
  test::TempDir d;
  const fs::path base = fs::canonical(d.path());
  test::write_text(base / "file", "plain");
  fs::create_directories(base / "foreign");
  test::write_text(base / "foreign" / "data.bin", "theirs");
  fs::create_directory_symlink(base / "foreign", base / "link");
  const std::string not_qtool =
      ": exists and is not a qtool output folder (a file, a symlink, or a folder without qtool_manifest.json); "
      "--overwrite replaces only a folder qtool wrote";
  for (const char* name : {"file", "foreign"})
    expect_exact([&] { check_output_folder((base / name).string(), "", true); }, Kind::Usage,
                 (base / name).string() + not_qtool);
  EXPECT_FALSE(is_qtool_output_folder((base / "link").string()));
  EXPECT_EQ(test::read_text(base / "foreign" / "data.bin"), "theirs");

  make_qtool_output(base / "q", "old");
  {
    PartialFolder pf = PartialFolder::create((base / "q").string(), "", true);
    make_qtool_output(pf.path(), "new");
    pf.publish();
  }
  EXPECT_EQ(test::read_text(base / "q" / "marker"), "new");
  // A qtool output at the start, replaced by a foreign folder during the run: not replaced.
  {
    PartialFolder pf = PartialFolder::create((base / "q").string(), "", true);
    make_qtool_output(pf.path(), "newer");
    fs::remove(base / "q" / kManifestFile);
    expect_exact([&] { pf.publish(); }, Kind::Io, taken_text((base / "q").string()));
  }
  EXPECT_EQ(test::read_text(base / "q" / "marker"), "new");
  EXPECT_EQ(names_in(base), (std::vector<std::string>{"file", "foreign", "link", "q"}));
}

TEST(OutputFolder, TheNoReplaceRenameAndItsFallbackNeverReplaceAnything) {
  test::TempDir d;
  const fs::path base = fs::canonical(d.path());
  for (bool fallback : {false, true}) {
    const fs::path a = base / "a", b = base / "b";
    fs::create_directories(a);
    test::write_text(a / "f", "from");
    fs::create_directories(b);
    test::write_text(b / "g", "theirs");
    const int err = rename_no_replace(a.string(), b.string(), fallback);
    EXPECT_TRUE(err == EEXIST || err == ENOTEMPTY) << err;
    EXPECT_EQ(test::read_text(b / "g"), "theirs");
    EXPECT_EQ(test::read_text(a / "f"), "from");
    fs::remove_all(b);
    test::write_text(b, "a file");
    EXPECT_NE(rename_no_replace(a.string(), b.string(), fallback), 0);
    EXPECT_EQ(test::read_text(b), "a file");
    fs::remove(b);
    EXPECT_EQ(rename_no_replace(a.string(), b.string(), fallback), 0);
    EXPECT_EQ(test::read_text(b / "f"), "from");
    EXPECT_FALSE(fs::exists(a));
    fs::remove_all(b);
  }
}

TEST(OutputFolder, AQuantizeRunWhoseOutAppearsMidwayFailsAndLeavesItAlone) {
  test::TempDir d;
  write_tiny_model(d.str("m"), {});
  const std::string out = fs::canonical(d.path()).string() + "/out";
  const ModelFolder m = ModelFolder::open(d.str("m"));
  calib::PlanOptions po;
  po.scheme = find_scheme("fp8-dynamic");
  const calib::QuantPlan plan = calib::build_quant_plan(m.checkpoint().tensors(), po, m.dir());
  calib::QuantizeJob job;
  job.output_dir = out;
  job.hash_inputs = false;
  bool made = false;
  job.on_tensor = [&](const calib::TensorProgress&) {
    if (made) return;
    made = true;
    fs::create_directory(out);
    test::write_text(fs::path(out) / "theirs.txt", "keep me");
  };
  calib::preflight_output(m, plan, job);
  expect_exact([&] { calib::run_quantize(m, plan, job); }, Kind::Io, taken_text(out));
  EXPECT_EQ(names_in(out), std::vector<std::string>{"theirs.txt"});
  EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"m", "out"}));
}

TEST(OutputFolder, TheCliFailsCleanlyWhileAnotherProcessHoldsTheOutput) {
  test::TempDir d;
  write_tiny_model(d.str("m"), {});
  const std::string out = fs::canonical(d.path()).string() + "/out";
  OutputLock other = OutputLock::acquire(out);  // this test process plays the first run
  for (const char* scheme : {"fp8-dynamic", "fp8-static"}) {
    auto r = test::run_qtool({"quantize", d.str("m"), "-o", out, "--scheme", scheme, "--num-samples", "2"});
    EXPECT_EQ(r.exit_code, 7) << r.err;
    EXPECT_EQ(r.err, "qtool: error: " + out + ": another qtool run (pid " + std::to_string(::getpid()) +
                         ") is writing this output (it holds " + out + ".qtool-lock); wait for it or choose another -o\n");
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"m", "out.qtool-lock"}));  // the holder's lock only
  other.release();
  auto ok = test::run_qtool({"quantize", d.str("m"), "-o", out, "--scheme", "fp8-dynamic"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"m", "out"}));
}

// ---- an unwritable output location: refused before any expensive work ----

// A read-only folder: a read-only tmpfs when root (root ignores permission bits), else mode 0555.
struct ReadOnlyFolder {
  std::string path, os_error;
  bool mounted = false, ok = false;
  explicit ReadOnlyFolder(const std::string& p) : path(p) {
    fs::create_directories(p);
    if (::getuid() == 0) {
      mounted = ok = ::mount("tmpfs", p.c_str(), "tmpfs", MS_RDONLY, "size=1m") == 0;
      os_error = std::strerror(EROFS);
    } else {
      fs::permissions(p, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                             fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
      ok = true;
      os_error = std::strerror(EACCES);
    }
  }
  ~ReadOnlyFolder() {
    if (mounted) ::umount(path.c_str());
    else fs::permissions(path, fs::perms::owner_all);
  }
};

TEST(OutputFolder, AReadOnlyOutputLocationIsRefusedBeforeCalibrating) {
  test::TempDir d;
  write_tiny_model(d.str("m"), {});
  ReadOnlyFolder ro(fs::canonical(d.path()).string() + "/ro");
  if (!ro.ok) GTEST_SKIP() << "cannot make a read-only folder here";
  const std::string want = "qtool: error: " + ro.path + ": the output location is not writable (" + ro.os_error + ")\n";
  for (bool dry : {false, true}) {
    std::vector<std::string> args{"quantize", d.str("m"), "-o", ro.path + "/out", "--scheme", "fp8-static",
                                  "--num-samples", "2"};
    if (dry) args.push_back("--dry-run");
    auto r = test::run_qtool(args);
    EXPECT_EQ(r.exit_code, 7);
    EXPECT_EQ(r.err, want);  // nothing else: no calibration line, no plan
  }
  auto s = test::run_qtool({"quantize", d.str("m"), "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "2",
                            "--save-stats", ro.path + "/stats.zst"});
  EXPECT_EQ(s.exit_code, 7);
  EXPECT_EQ(s.err, "qtool: error: " + ro.path + ": the --save-stats location is not writable (" + ro.os_error + ")\n");
  auto m = test::run_qtool({"quantize", d.str("m"), "-o", d.str("out"), "--scheme", "fp8-static", "--save-stats",
                            d.str("no/such/stats.zst")});
  EXPECT_EQ(m.exit_code, 4);
  EXPECT_EQ(m.err, "qtool: error: " + fs::canonical(d.path()).string() + "/no/such: the --save-stats location does not exist\n");
  // The lock (taken right before calibrating) says the same where access(2) cannot tell.
  try {
    OutputLock::acquire(ro.path + "/out");
    ADD_FAILURE() << "the lock was created in a read-only folder";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), ro.path + ": the output location is not writable (cannot create out.qtool-lock: " +
                                         ro.os_error + ")");
  }
  EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"m", "ro"}));
}

// ---- interrupts ----

// The qtool binary as a child process (stdout to /dev/null, stderr to `err`), with `env` added.
pid_t spawn_qtool(const std::vector<std::string>& args, const std::string& err, const std::string& env) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(e, 2);
    if (!env.empty()) ::putenv(const_cast<char*>(env.c_str()));
    std::vector<char*> argv{const_cast<char*>(QTOOL_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(QTOOL_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits (up to 120 s) until `file` contains `text`.
bool wait_for_text(const std::string& file, const std::string& text) {
  for (int i = 0; i < 1200; ++i) {
    if (test::read_text(file).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(Interrupts, SigtermRemovesWhatTheRunCreatedKeepsTheStatisticsAndSaysSo) {
  test::TempDir d;
  write_tiny_model(d.str("m"), {});
  const std::string out = fs::canonical(d.path()).string() + "/out";
  const std::string err = d.str("err.txt");
  const pid_t pid = spawn_qtool({"quantize", d.str("m"), "-o", out, "--scheme", "fp8-static", "--num-samples", "2",
                                 "--seq-len", "32", "-q"},
                                err, "QTOOL_FAULT_INJECT=wait-before-publish");
  ASSERT_TRUE(wait_for_text(err, "waiting for a signal")) << test::read_text(err);
  const std::string partial = out + ".qtool-partial-" + std::to_string(pid);
  EXPECT_TRUE(fs::exists(fs::path(partial) / "config.json"));  // everything written, not published
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit_code(pid), 143);
  EXPECT_EQ(test::read_text(err), "qtool: QTOOL_FAULT_INJECT=wait-before-publish: waiting for a signal\n"
                                  "qtool: interrupted by SIGTERM\n"
                                  "qtool: removed " + partial + " (this run's unfinished output)\n"
                                  "qtool: kept " + out + ".qtool-stats.zst (calibration statistics: the same command reuses them)\n");
  EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"err.txt", "m", "out.qtool-stats.zst"}));
}

TEST(Interrupts, SigintDuringAConvertLeavesNothing) {
  test::TempDir d;
  write_tiny_model(d.str("m"), {});
  ASSERT_EQ(test::run_qtool({"quantize", d.str("m"), "-o", d.str("q"), "--scheme", "fp8-dynamic"}).exit_code, 0);
  const std::string out = fs::canonical(d.path()).string() + "/dq";
  const std::string err = d.str("err.txt");
  const pid_t pid = spawn_qtool({"convert", d.str("q"), "-o", out, "--dequantize", "-q"}, err,
                                "QTOOL_FAULT_INJECT=wait-before-publish");
  ASSERT_TRUE(wait_for_text(err, "waiting for a signal")) << test::read_text(err);
  ::kill(pid, SIGINT);
  EXPECT_EQ(wait_exit_code(pid), 130);
  EXPECT_EQ(test::read_text(err), "qtool: QTOOL_FAULT_INJECT=wait-before-publish: waiting for a signal\n"
                                  "qtool: interrupted by SIGINT\n"
                                  "qtool: removed " + out + ".qtool-partial-" + std::to_string(pid) +
                                      " (this run's unfinished output)\n");
  EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"err.txt", "m", "q"}));
}

TEST(Interrupts, LeftoversOfKilledRunsAreRemovedOnlyWhenTheirProcessIsGoneAndTheyAreMarked) {
  test::TempDir d;
  const std::string out = fs::canonical(d.path()).string() + "/out";
  const pid_t child = ::fork();  // a pid that is certainly no longer running once reaped
  if (child == 0) ::_exit(0);
  wait_exit_code(child);
  const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
  const std::string p_dead = out + ".qtool-partial-" + dead, p_unmarked = out + ".qtool-partial-999999999",
                    p_alive = out + ".qtool-partial-" + alive;
  for (const auto& p : {p_dead, p_alive}) {
    fs::create_directories(p);
    test::write_text(fs::path(p) / kPartialMarker, "x\n");
    test::write_text(fs::path(p) / "model.safetensors", "partial");
  }
  fs::create_directories(p_unmarked);
  test::write_text(fs::path(p_unmarked) / "mine.txt", "a user's folder with a qtool-like name");
  fs::create_directories(out + "x.qtool-partial-" + dead);  // another OUT's: not looked at
  {
    OutputLock l = OutputLock::acquire(out);
    std::vector<std::string> notes = l.notes();
    std::sort(notes.begin(), notes.end());
    std::vector<std::string> want{
        p_alive + ": an unfinished output of process " + alive + ", which is still running (or its pid was reused); left alone",
        p_unmarked + ": looks like an unfinished output of process 999999999" +
            " but has no .qtool-partial marker (an older qtool, or not qtool's); left alone, delete it yourself",
        "removed the unfinished output of process " + dead + " (no longer running): " + p_dead};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(notes, want);
  }
  EXPECT_FALSE(fs::exists(p_dead));
  EXPECT_TRUE(fs::exists(fs::path(p_alive) / "model.safetensors"));
  EXPECT_EQ(test::read_text(fs::path(p_unmarked) / "mine.txt"), "a user's folder with a qtool-like name");
  // The CLI says it.
  fs::create_directories(p_dead);
  test::write_text(fs::path(p_dead) / kPartialMarker, "x\n");
  write_tiny_model(d.str("m"), {});
  auto r = test::run_qtool({"quantize", d.str("m"), "-o", out, "--scheme", "fp8-dynamic"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_CONTAINS(r.err, "removed the unfinished output of process " + dead + " (no longer running): " + p_dead + "\n");
  EXPECT_FALSE(fs::exists(p_dead));
}

// tiny-model publishes as quantize and convert do (PartialFolder): an existing OUT is refused and
// left alone, an interrupted run leaves nothing, a killed one leaves no OUT (only its marked
// partial folder, which the next run removes and names).
TEST(Interrupts, TinyModelNeverReplacesOutAndAKilledRunLeavesNoHalfFolder) {
  test::TempDir d;
  const std::string out = fs::canonical(d.path()).string() + "/out";
  fs::create_directories(out);
  test::write_text(fs::path(out) / "mine.txt", "the user's");
  auto r = test::run_qtool({"tiny-model", out});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "qtool: error: " + out + ": output folder exists and is not empty; this command writes only a new "
                   "or empty folder\n");
  EXPECT_EQ(names_in(out), (std::vector<std::string>{"mine.txt"}));
  fs::remove_all(out);
  const std::string err = d.str("err.txt");
  for (int sig : {SIGTERM, SIGKILL}) {
    fs::remove(err);  // not the previous run's text
    const pid_t pid = spawn_qtool({"tiny-model", out}, err, "QTOOL_FAULT_INJECT=wait-before-publish");
    ASSERT_TRUE(wait_for_text(err, "waiting for a signal")) << test::read_text(err);
    const std::string partial = out + ".qtool-partial-" + std::to_string(pid);
    EXPECT_TRUE(fs::exists(fs::path(partial) / "config.json"));  // everything written, not published
    EXPECT_FALSE(fs::exists(out));
    ::kill(pid, sig);
    EXPECT_EQ(wait_exit_code(pid), 128 + sig);
    if (sig == SIGTERM) {
      EXPECT_EQ(test::read_text(err), "qtool: QTOOL_FAULT_INJECT=wait-before-publish: waiting for a signal\n"
                                      "qtool: interrupted by SIGTERM\n"
                                      "qtool: removed " + partial + " (this run's unfinished output)\n");
      EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"err.txt"}));
      continue;
    }
    EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"err.txt", "out.qtool-lock", "out.qtool-partial-" +
                                                                                          std::to_string(pid)}));
    r = test::run_qtool({"tiny-model", out});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_CONTAINS(r.err, "removed the unfinished output of process " + std::to_string(pid) +
                               " (no longer running): " + partial + "\n");
    EXPECT_EQ(names_in(d.path()), (std::vector<std::string>{"err.txt", "out"}));
  }
  // The published folder is byte-identical to one written directly.
  write_tiny_model(d.str("direct"), {});
  for (const auto& name : names_in(out)) EXPECT_EQ(test::read_file(fs::path(out) / name), test::read_file(d.path() / "direct" / name)) << name;
  EXPECT_EQ(names_in(out), names_in(d.path() / "direct"));
}

TEST(Interrupts, ThePublishedOutputHasNoMarkerFile) {
  test::TempDir d;
  const std::string out = d.str("out");
  {
    PartialFolder pf = PartialFolder::create(out, "", false);
    EXPECT_EQ(test::read_text(fs::path(pf.path()) / kPartialMarker), std::to_string(::getpid()) + "\n");
    pf.publish();
  }
  EXPECT_TRUE(fs::is_empty(out));
}

}  // namespace
}  // namespace qt
