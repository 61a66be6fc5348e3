//! The seed corpus replayed through the fuzz targets' own checks, on a stable toolchain (what
//! `scripts/fuzz-smoke.sh` runs when cargo-fuzz or nightly is missing). Every target in
//! `fuzz_targets/` must have a seed directory and be known to `run_target`, and every seed
//! directory must belong to a target: nothing is skipped silently.
use std::path::Path;

#[test]
fn every_seed_of_every_target_passes_its_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut targets: Vec<String> = std::fs::read_dir(root.join("fuzz_targets"))
        .expect("fuzz_targets/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut dirs: Vec<String> =
        std::fs::read_dir(root.join("corpus")).expect("corpus/").map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    dirs.sort();
    assert_eq!(targets, dirs, "fuzz targets and seed directories differ");
    let mut total = 0;
    for t in &targets {
        let mut n = 0;
        for e in std::fs::read_dir(root.join("corpus").join(t)).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.')) {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            mos_proto_fuzz::run_target(t, &data).unwrap_or_else(|| panic!("target {t} unknown to run_target"));
            n += 1;
        }
        assert!(n > 0, "target {t} has no seeds");
        println!("replayed {n} seeds of {t}");
        total += n;
    }
    println!("replayed {total} seeds of {} targets", targets.len());
}
