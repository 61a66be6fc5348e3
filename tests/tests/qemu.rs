//! Native mode on a real multi-kernel cluster: QEMU VMs running MOS's own Rust-enabled kernel
//! (qemu-harness/, docs/NATIVE.md). Each test boots its VMs through `qemu-harness/run boot`, which
//! runs one scenario script per VM (qemu-harness/guest/scenarios/) and keeps each VM's console log;
//! on failure every log is printed.
//!
//! The first run builds the kernel (minutes; cached outside the repository afterwards). Without
//! `CI` in the environment and without a cached kernel, the tests are skipped with a message; with
//! `CI` set they always run (and build what is missing). The tests of this file run one at a time:
//! three VMs under TCG already fill two cores.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the repository").to_path_buf()
}

fn harness() -> PathBuf {
    repo().join("qemu-harness/run")
}

/// Serialises the scenarios of this test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// The outcome of `qemu-harness/run build`, done once per test process.
static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Whether to run: always under CI, otherwise only when the kernel is already cached.
fn should_run(test: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        return true;
    }
    let st = Command::new(harness()).arg("status").output().expect("run qemu-harness/run status");
    if st.status.success() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: the guest kernel is not built ({}); run `qemu-harness/run build` (4-8 min once) or set CI=1",
        String::from_utf8_lossy(&st.stdout).trim()
    );
    false
}

fn build() {
    let res = BUILT.get_or_init(|| {
        let out = Command::new(harness()).arg("build").output().map_err(|e| format!("cannot run qemu-harness/run build: {e}"))?;
        if out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        } else {
            Err(format!(
                "qemu-harness/run build failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = res {
        panic!("{e}");
    }
}

/// Boots `vms` VMs running `scenario`; returns VM 1's console log. Panics with every log if the
/// scenario did not pass.
fn scenario(scenario: &str, vms: u32) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    build();
    let out_dir = repo().join("target/qemu/runs").join(scenario);
    let out = Command::new(harness())
        .args(["boot", scenario, "-n", &vms.to_string(), "-t", "300", "-o"])
        .arg(&out_dir)
        .output()
        .expect("run qemu-harness/run boot");
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    eprint!("{summary}");
    let mut logs = String::new();
    for i in 1..=vms {
        let p = out_dir.join(format!("vm{i}.log"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| format!("(cannot read {}: {e})", p.display()));
        logs.push_str(&format!("===== VM {i} console ({}) =====\n{text}\n", p.display()));
    }
    if !out.status.success() {
        panic!("scenario {scenario} failed: {summary}{}\n{logs}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::read_to_string(out_dir.join("vm1.log")).expect("VM 1's log")
}

#[test]
fn module_loads_and_answers_its_abi_version() {
    if !should_run("module_loads_and_answers_its_abi_version") {
        return;
    }
    let log = scenario("module", 1);
    assert!(log.contains("MOSIX_PROBE_OK abi=2"), "the probe did not report ABI version 2");
    assert!(log.contains("mosix: /dev/mosix ready (ABI version 2)"), "the module's load message is missing");
}

#[test]
fn three_mosd_in_three_vms_form_a_cluster() {
    if !should_run("three_mosd_in_three_vms_form_a_cluster") {
        return;
    }
    let log = scenario("cluster", 3);
    assert!(log.contains("3 of 3 nodes up"), "VM 1 did not see three nodes up");
}

#[test]
fn workload_migrates_vm1_to_vm2_to_vm3() {
    if !should_run("workload_migrates_vm1_to_vm2_to_vm3") {
        return;
    }
    let log = scenario("migrate", 3);
    let engine = log.lines().find_map(|l| l.strip_prefix("MOS_ENGINE ")).unwrap_or("unknown").trim().to_string();
    eprintln!("migration engine used: {engine}");
    assert!(log.contains("MOS_PASS migrate engine="), "the scenario did not pass");
    assert_eq!(engine, "native", "the moves out of home were not made by the native engine");
    // On VM 2 and VM 3 the guest's system calls were intercepted by the module, not seccomp.
    for vm in [2, 3] {
        let p = repo().join(format!("target/qemu/runs/migrate/vm{vm}.log"));
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        assert!(text.contains("system calls intercepted by the module"), "VM {vm} did not intercept with the module:\n{text}");
        // The kernel lane: register-only calls went module to module, past both daemons.
        assert!(text.contains("kernel lane open"), "VM {vm} did not open the kernel lane:\n{text}");
    }
    assert!(log.contains("kernel lane open: the module serves the deputy"), "home did not serve the deputy with the module");
    // The returns home from VM 2 were frozen by VM 2's module (no ptrace on the guest): the
    // recalled counter, and execer, sent home by its execve (a call held while freezing).
    let vm2 = std::fs::read_to_string(repo().join("target/qemu/runs/migrate/vm2.log")).unwrap_or_default();
    let native_homes = vm2.lines().filter(|l| l.contains("sent home") && l.contains(r#"engine="native""#)).count();
    assert_eq!(native_homes, 2, "VM 2 did not freeze both guests with the module to send them home:\n{vm2}");
    assert!(vm2.contains("call must run at home") && vm2.contains("execve"), "execer was not sent home by its execve:\n{vm2}");
}

/// Issue 5: automatic balancing spreads 6 CPU-bound jobs started on VM 1 over the three VMs,
/// moved by the native engine; every output equals an unmigrated run's.
#[test]
fn balancing_spreads_six_jobs_over_three_vms() {
    if !should_run("balancing_spreads_six_jobs_over_three_vms") {
        return;
    }
    let log = scenario("balance", 3);
    assert!(log.contains("MOS_PASS balance"), "the scenario did not pass");
    assert!(log.contains("MOS_ENGINE native"), "the automatic moves were not made by the native engine");
}

/// Issue 5: a VM that dies during a migration leaves the process running at home. VM 2 reboots
/// itself (the VM vanishes: no FIN, no RST) while a 48 MiB process streams to it.
#[test]
fn vm_killed_during_migration_leaves_the_process_at_home() {
    if !should_run("vm_killed_during_migration_leaves_the_process_at_home") {
        return;
    }
    let log = scenario("vmkill", 3);
    assert!(log.contains("MOS_PASS vmkill"), "the scenario did not pass");
}

/// Issue 5: both engines speak the same stream, in both directions. A job is checkpointed by one
/// engine and recovered by the other (portable -> native, native -> portable, native -> native);
/// the native restore is the module's MOSIX_IOC_RESTORE, with no ptrace. Each output equals an
/// unmigrated run's.
#[test]
fn a_checkpoint_by_either_engine_is_restored_by_the_other() {
    if !should_run("a_checkpoint_by_either_engine_is_restored_by_the_other") {
        return;
    }
    let log = scenario("restore", 2);
    for pair in ["portable-native", "native-portable", "native-native"] {
        assert!(log.contains(&format!("MOS_RESTORE {pair} ok")), "{pair} did not pass");
    }
    assert!(log.contains("MOS_PASS restore 3 pairs"), "the scenario did not pass");
}
