//! A few rounds of the random fault suite (`mos_tests::faults`; the 100-round run is the
//! `fault_bench` binary): no process lost, no wrong output.
#[test]
fn random_faults_lose_nothing() {
    let r = mos_tests::faults::run(6, 0x5eed_1234, env!("CARGO_BIN_EXE_wl_rust"));
    println!("{r:?}");
    assert_eq!(r.rounds, 6);
    assert!(r.lost == 0 && r.wrong == 0, "{} lost, {} wrong: {:#?}", r.lost, r.wrong, r.problems);
}
