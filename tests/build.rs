//! Compiles the C workloads in `workloads/` with gcc into OUT_DIR, each in three variants:
//! static (`-static`), dynamic non-PIE (`-no-pie`) and PIE (`-fPIE -pie`), and exposes their
//! paths as `WL_<NAME>_<VARIANT>` (e.g. `WL_COUNTER_STATIC`) to the crate's code. The workloads of
//! `DYNAMIC_ONLY` are built in the dynamic variant only.
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKLOADS: &[&str] = &["counter", "memtouch", "threads", "opener", "fileops", "callbench", "netclient", "crasher", "cpujob", "churn"];
const VARIANTS: &[(&str, &[&str])] = &[("STATIC", &["-static"]), ("DYNAMIC", &["-no-pie"]), ("PIE", &["-fPIE", "-pie"])];
/// Big workloads whose behaviour does not depend on how they are linked: one build is enough.
const DYNAMIC_ONLY: &[&str] = &["zdtm"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cc = std::env::var("MOS_TEST_CC").unwrap_or_else(|_| "gcc".to_string());
    println!("cargo:rerun-if-env-changed=MOS_TEST_CC");
    println!("cargo:rerun-if-changed=workloads/common.h");
    let builds = WORKLOADS.iter().map(|n| (*n, VARIANTS)).chain(DYNAMIC_ONLY.iter().map(|n| (*n, &VARIANTS[1..2])));
    for (name, variants) in builds {
        let src = Path::new("workloads").join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        for (variant, flags) in variants {
            let exe = out.join(format!("{name}_{}", variant.to_lowercase()));
            let mut cmd = Command::new(&cc);
            cmd.args(["-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"]).args(*flags).arg("-o").arg(&exe).arg(&src);
            let res = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` ({e}): install gcc (Debian package `gcc`)"));
            if !res.status.success() {
                let stderr = String::from_utf8_lossy(&res.stderr);
                let hint = if *variant == "STATIC" {
                    "\nthe static variant needs the static C library libc.a: install the Debian package `libc6-dev`"
                } else {
                    ""
                };
                panic!("compiling workload {name} ({variant}) failed: {cmd:?}\n{stderr}{hint}");
            }
            println!("cargo:rustc-env=WL_{}_{variant}={}", name.to_uppercase(), exe.display());
        }
    }
}
