//! Checkpoint and recovery (issue 6 item 4; issue 7's full disk during a checkpoint):
//! `mosrun -C/-A/-N`, `mosctl checkpoint`, `mosctl migrate PID checkpoint|chkstop|chkexit`,
//! `mosrun -R [-O]` and `mosrun -I`.
use mos_tests::{after, assert_same_output, bin, describe, reference, wl, Cluster, Proc};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");
const WL_FILES: &str = env!("CARGO_BIN_EXE_wl_files");
const LONG: Duration = Duration::from_secs(180);

/// Marks every descriptor above 2 of this test process close-on-exec: cargo's jobserver pipe would
/// otherwise reach the workloads, and a pipe that is not mosrun's stdio cannot be checkpointed.
fn hermetic() {
    use std::os::fd::BorrowedFd;
    for e in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()).filter(|fd| *fd > 2) {
            // SAFETY: `fd` was open when listed; a descriptor closed meanwhile only makes fcntl fail.
            let b = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `mosrun --control <node 1> ARGS` with `env`, started in directory `cwd`.
fn mosrun(c: &Cluster, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Proc {
    let mut cmd = Command::new(bin("mosrun"));
    cmd.arg("--control").arg(c.control(1)).args(args).env_remove("MOS_SOCKET").envs(env.iter().copied()).current_dir(cwd);
    Proc::spawn(cmd, format!("mosrun {}", args.join(" ")), true)
}

fn recover(c: &Cluster, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["-R", s(file)];
    args.extend_from_slice(extra);
    mosrun(c, &args, &[], Path::new("/")).output(after(LONG))
}

fn inspect(file: &Path) -> Output {
    mos_tests::run(
        {
            let mut cmd = Command::new(bin("mosrun"));
            cmd.arg("-I").arg(file);
            cmd
        },
        "mosrun -I",
        Duration::from_secs(60),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How the checkpointed process is ended before it is recovered.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `mosctl migrate PID chkstop`, then SIGKILL (the process and its mosrun die).
    StopThenKill,
    /// `mosctl migrate PID chkexit` (mosrun exits 0).
    Exit,
}

/// Runs `program args` under mosrun with `-C DIR/ck`, checkpoints it after `k` lines, ends it as
/// `end` says, recovers it from DIR/ck.1 and checks that the output before the checkpoint plus
/// the recovered process's output is the output of an uninterrupted run, with the same status.
fn roundtrip(program: &str, args: &[&str], k: usize, end: End) {
    let want = reference(program, args, LONG);
    hermetic();
    let c = Cluster::start(1);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-").tempdir().expect("temp dir");
    let base = dir.path().join("ck");
    let mut job = c.spawn_mosrun_with(1, &["-C", s(&base)], program, args);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(k, Duration::from_secs(60));
    let action = match end {
        End::StopThenKill => "chkstop",
        End::Exit => "chkexit",
    };
    let out = c.migrate(1, pid, action);
    println!("{}", text(&out.stdout).trim_end());
    let file = dir.path().join("ck.1");
    assert!(file.exists(), "no checkpoint file {}", file.display());
    assert!(!dir.path().join("ck.1.tmp").exists(), "a .tmp file was left");
    match end {
        End::StopThenKill => {
            // Stopped: it prints nothing more. Then it is killed, and so is its mosrun's program.
            let n = job.lines();
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(job.lines(), n, "the process printed after chkstop");
            // A stopped process can be checkpointed again; it stays stopped.
            let again = dir.path().join("again");
            let out = c.mosctl(1, &["checkpoint", &pid.to_string(), s(&again)]);
            assert!(out.status.success(), "checkpoint of a stopped process: {}", text(&out.stderr));
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(job.lines(), n, "the stopped process ran after a checkpoint");
            assert_eq!(std::fs::read(&again).unwrap().len(), std::fs::read(&file).unwrap().len(), "the two checkpoints differ in size");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
            let st = job.wait(LONG);
            assert_eq!(st.code(), Some(128 + 9), "mosrun of a killed process: {}", describe(&st));
        }
        End::Exit => {
            let st = job.wait(LONG);
            assert_eq!(st.code(), Some(0), "mosrun after chkexit: {}; stderr {}", describe(&st), text(&job.stderr()));
            assert!(!mos_tests::alive(pid), "the process outlived chkexit");
        }
    }
    let before = job.stdout();
    let got = recover(&c, &file, &[]);
    assert_eq!(got.status.code(), want.status.code(), "recovered status; stderr: {}", text(&got.stderr));
    let mut all = before.clone();
    all.extend_from_slice(&got.stdout);
    assert_same_output(&all, &want.stdout, &format!("{program} checkpointed after {k} lines and recovered"));
    println!(
        "{program}: {} lines before the checkpoint, {} after recovery",
        before.iter().filter(|b| **b == b'\n').count(),
        text(&got.stdout).lines().count()
    );
}

#[test]
fn counter_static_stop_kill_recover() {
    roundtrip(wl::COUNTER_STATIC, &["40", "30"], 10, End::StopThenKill);
}

#[test]
fn counter_dynamic_chkexit_recover() {
    roundtrip(wl::COUNTER_DYNAMIC, &["40", "30"], 12, End::Exit);
}

#[test]
fn counter_pie_stop_kill_recover() {
    roundtrip(wl::COUNTER_PIE, &["30", "30"], 5, End::StopThenKill);
}

#[test]
fn memtouch_48mib_chkexit_recover() {
    roundtrip(wl::MEMTOUCH_DYNAMIC, &["48", "40", "20"], 8, End::Exit);
}

#[test]
fn rust_workload_stop_kill_recover() {
    roundtrip(WL_RUST, &["40", "30"], 15, End::StopThenKill);
}

/// Open files: a file read through a buffer, one written at its offset, one in append mode and
/// /dev/null are reopened at recovery; the files' final contents match an uninterrupted run's.
#[test]
fn open_files_are_reopened_at_their_offsets() {
    let refdir = tempfile::Builder::new().prefix("mos-ckpt-ref-").tempdir().expect("temp dir");
    let want = reference(WL_FILES, &["40", "30", s(refdir.path())], LONG);
    hermetic();
    let c = Cluster::start(1);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-files-").tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let base = dir.path().join("files.ck");
    let mut job = c.spawn_mosrun_with(1, &["-C", s(&base)], WL_FILES, &["40", "30", s(&work)]);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(15, Duration::from_secs(60));
    c.migrate(1, pid, "chkexit");
    assert_eq!(job.wait(LONG).code(), Some(0), "mosrun after chkexit: {}", text(&job.stderr()));
    let file = dir.path().join("files.ck.1");
    let before = job.stdout();

    let info = inspect(&file);
    let shown = text(&info.stdout);
    println!("{shown}");
    assert!(info.status.success(), "mosrun -I: {}", text(&info.stderr));
    for want_text in [
        WL_FILES.to_string(),
        format!("pid:         {pid}"),
        "memory:".to_string(),
        format!("{}/data", work.display()),
        format!("{}/out", work.display()),
        format!("{}/log", work.display()),
        "/dev/null".to_string(),
        "mosrun's stdout".to_string(),
    ] {
        assert!(shown.contains(&want_text), "mosrun -I does not show `{want_text}`:\n{shown}");
    }
    let got = recover(&c, &file, &[]);
    assert_eq!(got.status.code(), want.status.code(), "recovered status; stderr: {}", text(&got.stderr));
    let mut all = before;
    all.extend_from_slice(&got.stdout);
    assert_same_output(&all, &want.stdout, "wl_files checkpointed and recovered");
    assert_eq!(std::fs::read(work.join("out")).unwrap(), std::fs::read(refdir.path().join("out")).unwrap(), "out file");
    assert_eq!(std::fs::read(work.join("log")).unwrap(), std::fs::read(refdir.path().join("log")).unwrap(), "log file");
}

/// `-O fd=PATH` reopens a descriptor on another file; a missing file is a clear error.
#[test]
fn reopen_overrides_and_missing_files() {
    hermetic();
    let c = Cluster::start(1);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-o-").tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let base = dir.path().join("ck");
    let mut job = c.spawn_mosrun_with(1, &["-C", s(&base)], WL_FILES, &["30", "20", s(&work)]);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(5, Duration::from_secs(60));
    c.migrate(1, pid, "chkexit");
    job.wait(LONG);
    let done = job.lines();
    let file = dir.path().join("ck.1");
    let info = text(&inspect(&file).stdout);
    let out_fd = info
        .lines()
        .find(|l| l.contains(&format!("{}/out", work.display())))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the out file in -I")
        .to_string();
    std::fs::rename(work.join("out"), work.join("out.moved")).expect("rename");
    let got = recover(&c, &file, &[]);
    let err = text(&got.stderr);
    assert!(!got.status.success() && err.contains(&format!("cannot reopen fd {out_fd}")) && err.contains("No such file"), "{err}");
    let other = dir.path().join("elsewhere");
    // (The workload reads `out` back by name at its end.)
    std::fs::write(work.join("out"), b"").expect("an empty out");
    let got = recover(&c, &file, &["-O", &format!("{out_fd}={}", other.display())]);
    assert!(got.status.success(), "recovery with -O: {}", text(&got.stderr));
    let written = std::fs::read_to_string(&other).expect("the substitute file");
    let first = written.split(' ').next().unwrap_or("");
    // (A step writes `out` before it prints: the checkpoint may fall between the two.)
    assert!(
        [done + 1, done + 2].iter().any(|n| n.to_string() == first) && written.lines().last().is_some_and(|l| l.starts_with("30 ")),
        "the substitute did not get the steps after the checkpoint (after {done} lines) from offset 0: {written:?}"
    );
    assert_eq!(std::fs::read(work.join("out")).unwrap(), b"", "the original path was written");
    let got = recover(&c, &file, &["-O", "77=/tmp/x"]);
    assert!(text(&got.stderr).contains("fd 77 was not open"), "{}", text(&got.stderr));
}

/// A truncated and a corrupted checkpoint are refused with a clear error (recovery and -I), and
/// nothing runs; the intact file still recovers.
#[test]
fn truncated_and_corrupted_checkpoints_are_refused() {
    hermetic();
    let dir = tempfile::Builder::new().prefix("mos-ckpt-bad-").tempdir().expect("temp dir");
    let c2 = Cluster::start(1);
    let base = dir.path().join("ck");
    let mut job = c2.spawn_mosrun_with(1, &["-C", s(&base)], wl::COUNTER_STATIC, &["20", "20"]);
    let pid = job.pid();
    c2.wait_registered(1, pid);
    job.wait_lines(3, Duration::from_secs(60));
    c2.migrate(1, pid, "chkexit");
    job.wait(LONG);
    let good = dir.path().join("ck.1");
    let bytes = std::fs::read(&good).expect("read checkpoint");
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let corrupted = dir.path().join("corrupted");
    let mut c_bytes = bytes.clone();
    let mid = c_bytes.len() / 2;
    c_bytes[mid] ^= 0x01;
    std::fs::write(&corrupted, &c_bytes).expect("write");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    for (f, word) in [(&truncated, "truncated"), (&corrupted, "corrupted"), (&empty, "not a MOS checkpoint")] {
        let got = recover(&c2, f, &[]);
        let err = text(&got.stderr);
        println!("recover {}: {err}", f.display());
        assert_eq!(got.status.code(), Some(127), "recovery from a bad file: {err}");
        assert!(err.contains(word) && err.contains("refusing") || word.starts_with("not"), "error for {}: {err}", f.display());
        assert!(got.stdout.is_empty(), "something ran from a bad file");
        let i = inspect(f);
        assert!(!i.status.success() && text(&i.stderr).contains(word), "-I on {}: {}", f.display(), text(&i.stderr));
    }
    let ok = recover(&c2, &good, &[]);
    assert_eq!(ok.status.code(), Some(7), "intact file: {}", text(&ok.stderr));
}

/// `mosrun -C FILE -A MINUTES -N MAX`: periodic checkpoints rotate over FILE.1..FILE.MAX; each is
/// intact, and the latest recovers to the end of the run's output.
#[test]
fn periodic_checkpoints_rotate() {
    let want = reference(wl::COUNTER_STATIC, &["60", "50"], LONG);
    hermetic();
    let c = Cluster::start(1);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-periodic-").tempdir().expect("temp dir");
    let base = dir.path().join("p");
    // 0.01 minute = 0.6 s over a run of about 3 s.
    let prog = std::fs::canonicalize(wl::COUNTER_STATIC).unwrap();
    let mut job = mosrun(&c, &["-C", s(&base), "-A", "0.01", "-N", "2", "--", s(&prog), "60", "50"], &[("MOS_LOG", "info")], dir.path());
    let st = job.wait(after(LONG));
    assert_eq!(st.code(), Some(7), "mosrun: {}", text(&job.stderr()));
    assert_same_output(&job.stdout(), &want.stdout, "counter under periodic checkpoints");
    let taken = text(&job.stderr()).matches("checkpoint written").count();
    println!("{taken} periodic checkpoints");
    assert!(taken >= 3, "only {taken} periodic checkpoints in ~3 s at 0.6 s:\n{}", text(&job.stderr()));
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["p.1", "p.2"], "files after {taken} checkpoints with -N 2");
    for n in &names {
        let i = inspect(&dir.path().join(n));
        assert!(i.status.success(), "-I {n}: {}", text(&i.stderr));
    }
    // The newest file recovers to a tail of the uninterrupted output.
    let newest = names.iter().map(|n| dir.path().join(n)).max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap()).unwrap();
    let got = recover(&c, &newest, &[]);
    assert_eq!(got.status.code(), Some(7), "{}", text(&got.stderr));
    assert!(
        !got.stdout.is_empty() && want.stdout.ends_with(&got.stdout),
        "recovered output is not a tail of the run's:\n{}",
        text(&got.stdout)
    );
}

struct Tmpfs(PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk during a checkpoint (a 1 MiB tmpfs): a clear error, no file left behind, and the
/// process keeps running unharmed (its output is an uninterrupted run's); a later checkpoint
/// elsewhere works.
#[test]
fn full_disk_during_a_checkpoint() {
    let want = reference(wl::MEMTOUCH_STATIC, &["8", "30", "50"], LONG);
    hermetic();
    let c = Cluster::start(1);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-full-").tempdir().expect("temp dir");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "mos-ckpt-test"]).arg(&small).status().expect("mount");
    assert!(st.success(), "mount a 1 MiB tmpfs");
    let _guard = Tmpfs(small.clone());
    let (mut job, pid) = c.start_job(1, wl::MEMTOUCH_STATIC, &["8", "30", "50"]);
    job.wait_lines(3, Duration::from_secs(60));
    let target = small.join("ck");
    let out = c.mosctl(1, &["checkpoint", &pid.to_string(), s(&target)]);
    let err = text(&out.stderr);
    println!("{err}");
    assert!(!out.status.success(), "a checkpoint into 1 MiB succeeded");
    assert!(err.contains("No space left on device") && err.contains("keeps running"), "error: {err}");
    let left: Vec<_> = std::fs::read_dir(&small).unwrap().collect();
    assert!(left.is_empty(), "files left on the full disk: {left:?}");
    let ok = dir.path().join("ok");
    let out = c.mosctl(1, &["checkpoint", &pid.to_string(), s(&ok)]);
    assert!(out.status.success(), "a checkpoint on a disk with room: {}", text(&out.stderr));
    let st = job.wait(LONG);
    assert_eq!(st.code(), want.status.code());
    assert_same_output(&job.stdout(), &want.stdout, "memtouch after a failed and a good checkpoint");
}

/// Only the owner or root may checkpoint a process: another uid's `mosctl checkpoint` and
/// `mosctl migrate PID chkexit` are refused, and the process runs on.
#[test]
fn another_user_cannot_checkpoint_my_process() {
    hermetic();
    let c = Cluster::start(1);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["40", "40"]);
    for args in [vec!["checkpoint", &pid.to_string() as &str, "/tmp/mos-not-allowed"], vec!["migrate", &pid.to_string(), "chkexit"]] {
        let args: Vec<&str> = args.iter().map(|a| &**a).collect();
        let out = c.mosctl_as(65534, 1, &args);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains("permission denied"), "{args:?} by uid 65534: {err}");
    }
    assert!(!Path::new("/tmp/mos-not-allowed").exists(), "a checkpoint was written");
    assert_eq!(job.wait(LONG).code(), Some(7));
}

/// A process that runs on another node is brought home, checkpointed there, and continues.
#[test]
fn an_away_process_is_brought_home_to_be_checkpointed() {
    let want = reference(wl::COUNTER_STATIC, &["40", "40"], LONG);
    hermetic();
    let c = Cluster::start(2);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-away-").tempdir().expect("temp dir");
    let (mut job, pid) = c.start_job(1, wl::COUNTER_STATIC, &["40", "40"]);
    job.wait_lines(3, Duration::from_secs(60));
    c.migrate(1, pid, "2");
    let file = dir.path().join("away.ck");
    let out = c.mosctl(1, &["checkpoint", &pid.to_string(), s(&file)]);
    assert!(out.status.success(), "checkpoint of an away process: {}", text(&out.stderr));
    let row = c.ps_row(1, pid, false).expect("row");
    assert_eq!(row["node"].as_u64(), Some(1), "the process is not home after its checkpoint");
    assert!(inspect(&file).status.success());
    assert_eq!(job.wait(LONG).code(), Some(7));
    assert_same_output(&job.stdout(), &want.stdout, "counter moved away, checkpointed at home");
}

/// `setpriv` to run a command as `uid` (group `uid`, no supplementary groups).
fn as_user(uid: u32, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into(), "--".into()]).arg(program);
    cmd
}

/// An unprivileged owner checkpoints their own process (`chkexit`) and recovers it as themself
/// (without CAP_CHECKPOINT_RESTORE); another user, even root, cannot recover it.
#[test]
fn an_unprivileged_owner_checkpoints_and_recovers() {
    use std::os::unix::fs::PermissionsExt;
    hermetic();
    const NOBODY: u32 = 65534;
    let want = reference(wl::COUNTER_DYNAMIC, &["30", "30"], LONG);
    let c = Cluster::start(1);
    std::fs::set_permissions(c.dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod cluster dir");
    let dir = tempfile::Builder::new().prefix("mos-ckpt-user-").tempdir().expect("temp dir");
    nix::unistd::chown(dir.path(), Some(NOBODY.into()), Some(NOBODY.into())).expect("chown");
    let base = dir.path().join("ck");
    let prog = std::fs::canonicalize(wl::COUNTER_DYNAMIC).unwrap();
    let mut cmd = as_user(NOBODY, &bin("mosrun"));
    cmd.arg("--control").arg(c.control(1)).args(["-C", s(&base), "--"]).arg(&prog).args(["30", "30"]).env_remove("MOS_SOCKET");
    let mut job = Proc::spawn(cmd, "mosrun as nobody", true);
    let mosrun_pid = job.id();
    let pid = mos_tests::wait_until(after(Duration::from_secs(10)), "the program under mosrun", || {
        mos_tests::children_of(mosrun_pid).into_iter().find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == prog))
    });
    c.wait_registered(1, pid);
    job.wait_lines(6, after(Duration::from_secs(60)));
    let out = c.mosctl_as(NOBODY, 1, &["migrate", &pid.to_string(), "chkexit"]);
    assert!(out.status.success(), "chkexit by the owner: {}", text(&out.stderr));
    assert_eq!(job.wait(after(LONG)).code(), Some(0), "{}", text(&job.stderr()));
    let file = dir.path().join("ck.1");
    let by_root = recover(&c, &file, &[]);
    assert!(text(&by_root.stderr).contains("belongs to uid 65534"), "root recovering nobody's checkpoint: {}", text(&by_root.stderr));
    let mut cmd = as_user(NOBODY, &bin("mosrun"));
    cmd.arg("--control").arg(c.control(1)).arg("-R").arg(&file).env_remove("MOS_SOCKET").current_dir("/");
    let got = Proc::spawn(cmd, "mosrun -R as nobody", true).output(after(LONG));
    assert_eq!(got.status.code(), Some(7), "recovery as nobody: {}", text(&got.stderr));
    let mut all = job.stdout();
    all.extend_from_slice(&got.stdout);
    assert_same_output(&all, &want.stdout, "counter checkpointed and recovered by an unprivileged owner");
}

/// A recovered process is a normal MOS process: it migrates to another node, is checkpointed
/// again (brought home for it, `chkexit`) and recovered again; the three pieces of output are an
/// uninterrupted run's.
#[test]
fn a_recovered_process_migrates_and_is_checkpointed_again() {
    hermetic();
    let want = reference(wl::COUNTER_DYNAMIC, &["45", "40"], LONG);
    let c = Cluster::start(2);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-again-").tempdir().expect("temp dir");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let mut job = c.spawn_mosrun_with(1, &["-C", s(&first)], wl::COUNTER_DYNAMIC, &["45", "40"]);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(5, Duration::from_secs(60));
    c.migrate(1, pid, "chkexit");
    assert_eq!(job.wait(LONG).code(), Some(0));
    let mut again = mosrun(&c, &["-C", s(&second), "-R", s(&dir.path().join("first.1"))], &[], Path::new("/"));
    let mosrun_pid = again.id();
    let new_pid = mos_tests::wait_until(after(Duration::from_secs(10)), "the recovered process", || {
        mos_tests::children_of(mosrun_pid).into_iter().next()
    });
    assert_ne!(new_pid, pid, "a recovered process gets a new pid");
    c.wait_registered(1, new_pid);
    let n = again.lines();
    again.wait_lines(n + 3, after(Duration::from_secs(60)));
    c.migrate(1, new_pid, "2");
    assert_eq!(c.ps_row(1, new_pid, false).expect("row")["node"].as_u64(), Some(2), "not on node 2");
    let n = again.lines();
    again.wait_lines(n + 3, after(Duration::from_secs(60)));
    c.migrate(1, new_pid, "chkexit");
    let st = again.wait(after(LONG));
    assert_eq!(st.code(), Some(0), "{}", text(&again.stderr()));
    let last = recover(&c, &dir.path().join("second.1"), &[]);
    assert_eq!(last.status.code(), Some(7), "{}", text(&last.stderr));
    let mut all = job.stdout();
    all.extend_from_slice(&again.stdout());
    all.extend_from_slice(&last.stdout);
    assert_same_output(&all, &want.stdout, "counter recovered, migrated, checkpointed and recovered again");
}

/// A periodic checkpoint that falls due while the process runs on another node brings it home
/// first (and it stays home); the output is an uninterrupted run's.
#[test]
fn a_periodic_checkpoint_brings_an_away_process_home() {
    hermetic();
    let want = reference(wl::COUNTER_STATIC, &["80", "60"], LONG);
    let c = Cluster::start(2);
    let dir = tempfile::Builder::new().prefix("mos-ckpt-periodic-away-").tempdir().expect("temp dir");
    let base = dir.path().join("p");
    let prog = std::fs::canonicalize(wl::COUNTER_STATIC).unwrap();
    // 0.04 minute = 2.4 s; the run takes about 5 s.
    let mut job = mosrun(&c, &["-L", "-C", s(&base), "-A", "0.04", "--", s(&prog), "80", "60"], &[("MOS_LOG", "info")], dir.path());
    let mosrun_pid = job.id();
    let pid =
        mos_tests::wait_until(after(Duration::from_secs(10)), "the program", || mos_tests::children_of(mosrun_pid).into_iter().next());
    c.wait_registered(1, pid);
    job.wait_lines(2, after(Duration::from_secs(60)));
    c.migrate(1, pid, "2");
    let st = job.wait(after(LONG));
    let err = text(&job.stderr());
    assert_eq!(st.code(), Some(7), "{err}");
    assert_same_output(&job.stdout(), &want.stdout, "counter under periodic checkpoints, moved away");
    assert!(err.contains("process coming home") && err.contains("checkpoint written"), "no recall and checkpoint in mosrun's log:\n{err}");
    assert!(inspect(&dir.path().join("p.1")).status.success(), "p.1 is not an intact checkpoint");
}
