//! Signals and exits of a process that runs away from home, and calls that bring it home.
use mos_tests::{after, wait_until, wl, Cluster};
use std::time::Duration;

const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const END_TIMEOUT: Duration = Duration::from_secs(120);
const WL_RUST: &str = env!("CARGO_BIN_EXE_wl_rust");

/// Node `node`'s log once it holds `needle` (mosd logs a guest's end just after telling home, so
/// the line may lag the job's exit).
fn log_with(c: &Cluster, node: u32, needle: &str) -> String {
    wait_until(after(Duration::from_secs(20)), &format!("node {node}'s log to say `{needle}`"), || {
        let log = c.log(node);
        log.contains(needle).then_some(log)
    })
}

fn wait_no_guest(c: &Cluster, node: u32, pid: u32) {
    wait_until(after(Duration::from_secs(20)), "the guest to disappear from the remote node", || {
        c.ps_row(node, pid, true).is_none().then_some(())
    });
}

/// SIGTERM sent to mosrun while the program runs on node 2 kills the program there (default
/// action), and mosrun exits with 128+15; nothing is left on node 2.
#[test]
fn sigterm_reaches_the_remote_process() {
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["300", "50"]);
    job.wait_lines(2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    assert!(c.ps_row(2, pid, true).is_some(), "node 2 does not host the process");
    let n = job.lines();
    job.wait_lines(n + 2, LINE_TIMEOUT);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(job.proc.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(143), "mosrun's status after SIGTERM to a remote process");
    wait_no_guest(&c, 2, pid);
}

/// SIGKILL of the home pid (the deputy) while away ends the remote component too.
#[test]
fn sigkill_of_the_home_pid_ends_the_remote_component() {
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["300", "50"]);
    job.wait_lines(2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let local = c.ps_row(2, pid, true).expect("guest row on node 2")["local_pid"].as_u64().expect("local_pid") as u32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(137), "mosrun's status after SIGKILL of the home pid");
    wait_no_guest(&c, 2, pid);
    wait_until(after(Duration::from_secs(20)), "the remote task to end", || (!mos_tests::alive(local)).then_some(()));
}

/// Files at home are used through the deputy (open/read/close of a home file while away: the
/// process stays away), and a call the remote side does not run (sysinfo) brings the process home
/// first; the output is as without MOS.
#[test]
fn home_files_through_the_deputy_and_unsupported_calls_bring_it_home() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home-only.txt");
    std::fs::write(&path, "written at home").unwrap();
    let p = path.to_str().unwrap();
    let hidden = dir.path().to_str().unwrap().to_string();
    let args = ["40", "100", p];
    let want = mos_tests::reference(wl::OPENER_DYNAMIC, &args, END_TIMEOUT);
    assert_eq!(want.status.code(), Some(3));
    let want_text = String::from_utf8_lossy(&want.stdout).into_owned();
    let line_of = |prefix: &str| want_text.lines().position(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line")) + 1;
    let (file_line, sysinfo_line) = (line_of("file: "), line_of("sysinfo "));
    // Node 2 cannot see the file: the open must run at home.
    let c = Cluster::start_with_env(2, &[(2, "MOS_TEST_HIDE", &hidden)]);
    let (mut job, pid) = c.start_job(1, wl::OPENER_DYNAMIC, &args);
    job.wait_lines(2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    job.wait_lines(file_line + 1, LINE_TIMEOUT);
    assert!(job.lines() < sysinfo_line, "the job ran past the sysinfo line too early for this check");
    assert_eq!(
        c.ps_row(1, pid, false).expect("home row")["node"].as_u64(),
        Some(2),
        "open/read/close of a home file brought the process home"
    );
    job.wait_lines(sysinfo_line + 1, LINE_TIMEOUT);
    wait_until(after(Duration::from_secs(20)), "the process to be home after sysinfo", || {
        (c.ps_row(1, pid, false).expect("home row")["node"].as_u64() == Some(1)).then_some(())
    });
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(3), "exit status");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "opener output");
    let log = c.log(2);
    assert!(log.contains("must run at home") && log.contains("sysinfo"), "node 2 did not send the process home for sysinfo: {log}");
}

/// `mosrun -e` / `mosrun -w` (MOSIX): a call the remote side cannot run (sysinfo) fails there with
/// ENOSYS instead of bringing the process home; the process stays on node 2 to its end. With -w
/// mosrun also prints a warning naming the call; with -e it does not.
fn unsupported_call_fails_remotely(flag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home-only.txt");
    std::fs::write(&path, "written at home").unwrap();
    let p = path.to_str().unwrap();
    let args = ["40", "100", p];
    let c = Cluster::start_with_env(2, &[(2, "MOS_TEST_HIDE", dir.path().to_str().unwrap())]);
    let mut job = c.spawn_mosrun_with(1, &[flag], wl::OPENER_DYNAMIC, &args);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(3), "exit status");
    let out = String::from_utf8_lossy(&job.stdout()).into_owned();
    assert!(out.contains("file: written at home"), "the home file was not read through the deputy: {out}");
    assert!(out.contains("sysinfo Function not implemented"), "sysinfo did not fail with ENOSYS under mosrun {flag}: {out}");
    let log = log_with(&c, 2, "guest ended");
    assert!(!log.contains("went home") && !log.contains("must run at home"), "mosrun {flag}: the process was brought home: {log}");
    let err = String::from_utf8_lossy(&job.stderr()).into_owned();
    let warned = err.contains("warning: system call sysinfo is not supported on node 2");
    assert_eq!(warned, flag == "-w", "mosrun {flag} stderr: {err}");
}

#[test]
fn mosrun_e_fails_unsupported_calls_remotely() {
    unsupported_call_fails_remotely("-e");
}

#[test]
fn mosrun_w_fails_unsupported_calls_remotely_and_warns() {
    unsupported_call_fails_remotely("-w");
}

/// `mosrun -w` when the remote side meets a call only home runs before it has mosrun's policy
/// (here forced by holding the policy back until a return has been refused, while the process calls sysinfo all the time): home
/// refuses the return the call asks for, the call fails with ENOSYS on node 2, the process stays
/// there, and mosrun warns once.
#[test]
fn mosrun_w_refuses_a_return_that_comes_before_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home-only.txt");
    std::fs::write(&path, "written at home").unwrap();
    // 80 steps of 50 ms: the job must outlast a pre-copy move on a loaded machine (30 steps once
    // ended during the live copy, with VMs running beside the suite).
    let args = ["80", "50", path.to_str().unwrap(), "busy"];
    let c = Cluster::start(2);
    let mut job = c.spawn_mosrun_with_env(1, &["-w"], wl::OPENER_DYNAMIC, &args, &[("MOS_TEST_POLICY_HELD", "1")]);
    let pid = job.pid();
    c.wait_registered(1, pid);
    job.wait_lines(2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(3), "exit status");
    let out = String::from_utf8_lossy(&job.stdout()).into_owned();
    assert!(out.contains("sysinfo-busy ok 1 failed 1"), "sysinfo did not fail after the move: {out}");
    let log = log_with(&c, 2, "guest ended");
    assert!(log.contains("the target refused: mosrun -e: system call sysinfo"), "home did not refuse the return: {log}");
    assert!(!log.contains("guest went home"), "the process went home: {log}");
    let err = String::from_utf8_lossy(&job.stderr()).into_owned();
    assert_eq!(err.matches("warning: system call sysinfo is not supported on node 2").count(), 1, "mosrun -w stderr: {err}");
}

/// Files, directories, relative paths after chdir, getcwd, pipes, dup and lseek used while away:
/// all run at home through the deputy, the process never comes home, the output is as without MOS.
fn fileops_stays_away(program: &str) {
    let reference_dir = tempfile::tempdir().unwrap();
    std::fs::write(reference_dir.path().join("home-marker"), "only at home\n").unwrap();
    let rd = reference_dir.path().to_str().unwrap().to_string();
    let want = mos_tests::reference(program, &["24", "50", &rd], END_TIMEOUT);
    assert_eq!(want.status.code(), Some(5), "reference exit status");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("home-marker"), "only at home\n").unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    // Node 2 cannot see this directory's contents: every file operation must run at home.
    let c = Cluster::start_with_env(2, &[(2, "MOS_TEST_HIDE", &d)]);
    let (mut job, pid) = c.start_job(1, program, &["24", "50", &d]);
    job.wait_lines(1, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(5), "exit status");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "fileops output");
    let log = log_with(&c, 2, "guest ended");
    assert!(!log.contains("went home") && !log.contains("must run at home"), "fileops was brought home: {log}");
}

#[test]
fn fileops_dynamic_stays_away() {
    fileops_stays_away(wl::FILEOPS_DYNAMIC);
}

#[test]
fn fileops_static_stays_away() {
    fileops_stays_away(wl::FILEOPS_STATIC);
}

/// A signal sent straight to the home pid while the process runs on node 2 is delivered there:
/// SIGSTOP stops it (no new output), SIGCONT resumes it, SIGTERM ends it with status 143.
#[test]
fn signals_to_the_home_pid_reach_the_remote_process() {
    use nix::sys::signal::{kill, Signal};
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["400", "20"]);
    job.wait_lines(2, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let home = nix::unistd::Pid::from_raw(pid as i32);
    let local = c.ps_row(2, pid, true).expect("guest row")["local_pid"].as_u64().expect("local_pid") as u32;
    kill(home, Signal::SIGSTOP).unwrap();
    wait_until(after(Duration::from_secs(20)), "the remote task to stop", || {
        std::fs::read_to_string(format!("/proc/{local}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().starts_with('T')))
            .unwrap_or(false)
            .then_some(())
    });
    kill(home, Signal::SIGCONT).unwrap();
    let n = job.lines();
    job.wait_lines(n + 3, LINE_TIMEOUT);
    kill(home, Signal::SIGTERM).unwrap();
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(143), "mosrun's status after SIGTERM to the home pid");
    wait_no_guest(&c, 2, pid);
}

/// A line-echo server at home: answers "pong ..." to every line until the client closes.
fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        for line in std::io::BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if w.write_all(format!("pong {line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    (port, h)
}

/// While away: a TCP connection opened at home by the remote process, poll on a pipe, kill to
/// itself with a handler that runs remotely, and wait4 for a child forked at home before the move.
#[test]
fn sockets_poll_signals_and_children_while_away() {
    let (port, server) = echo_server();
    let p = port.to_string();
    let want = mos_tests::reference(wl::NETCLIENT_DYNAMIC, &["12", "80", &p], END_TIMEOUT);
    server.join().unwrap();
    assert_eq!(want.status.code(), Some(4), "reference: {}", String::from_utf8_lossy(&want.stderr));
    let (port, server) = echo_server();
    let p = port.to_string();
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, wl::NETCLIENT_DYNAMIC, &["12", "80", &p]);
    job.wait_lines(1, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let st = job.wait(END_TIMEOUT);
    server.join().unwrap();
    assert_eq!(st.code(), Some(4), "exit status");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "netclient output");
    let log = log_with(&c, 2, "guest ended");
    assert!(!log.contains("must run at home"), "netclient did not stay on node 2: {log}");
}

/// Writes far larger than the deputy's 1 MiB buffer arrive whole and in order, and a fatal fault
/// on the remote node (SIGSEGV) ends the process at home with that signal (mosrun: 128 + 11).
#[test]
fn big_writes_and_a_remote_crash() {
    let args = ["8", "50", "3500000"];
    let want = mos_tests::reference(wl::CRASHER_STATIC, &args, END_TIMEOUT);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(want.status.signal(), Some(11), "reference ends by SIGSEGV");
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, wl::CRASHER_STATIC, &args);
    job.wait_lines(1, LINE_TIMEOUT);
    c.migrate(1, pid, "2");
    let st = job.wait(END_TIMEOUT);
    assert_eq!(st.code(), Some(139), "mosrun's status after a remote SIGSEGV");
    mos_tests::assert_same_output(&job.stdout(), &want.stdout, "crasher output");
    let log = log_with(&c, 2, "guest ended");
    assert!(log.contains("Signal"), "the crash did not happen on node 2: {log}");
}

/// The remote task is held to the process's own resource limits, not its host daemon's.
#[test]
fn resource_limits_travel_with_the_process() {
    let c = Cluster::start(2);
    let (mut job, pid) = c.start_job(1, WL_RUST, &["200", "20"]);
    job.wait_lines(1, LINE_TIMEOUT);
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=77:99", "--stack=4194304:8388608"])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit failed");
    c.migrate(1, pid, "2");
    let local = c.ps_row(2, pid, true).expect("guest row")["local_pid"].as_u64().expect("local_pid");
    let limits = std::fs::read_to_string(format!("/proc/{local}/limits")).unwrap();
    let row = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {limits}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(row("Max open files").contains("77 99"), "remote open-files limit: {}", row("Max open files"));
    assert!(row("Max stack size").contains("4194304 8388608"), "remote stack limit: {}", row("Max stack size"));
    assert!(row("Max core file size").contains("0 0"), "a guest may dump core on its host: {}", row("Max core file size"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    job.wait(END_TIMEOUT);
}
