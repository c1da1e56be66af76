//! The canary: a sweep with a deliberately failing setting must report the failures
//! (grouped by invariant, with a reproduction line) and exit non-zero; and a clean
//! sweep passes. Runs the real binary, with one worker process per job.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walvault-sim"))
}

#[test]
fn a_broken_setting_makes_the_sweep_fail_loudly() {
    let out = sim()
        .args(["sweep", "--start", "0", "--count", "3", "--jobs", "2"])
        .args(["--mutation", "ack-before-store"])
        .output()
        .expect("run walvault-sim");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the sweep must fail:\n{text}");
    assert!(text.contains("failures: 3"), "{text}");
    assert!(text.contains("I1-durability: 3 seeds"), "{text}");
    assert!(
        text.contains("reproduce: walvault-sim run --seed 0 --mutation ack-before-store"),
        "{text}"
    );
    // --expect-failures turns the same outcome into success (the nightly canary).
    let ok = sim()
        .args(["sweep", "--start", "0", "--count", "2", "--jobs", "2"])
        .args(["--mutation", "ack-before-store", "--expect-failures"])
        .output()
        .expect("run walvault-sim");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[test]
fn a_clean_sweep_passes_and_reports_coverage() {
    let out = sim()
        .args(["sweep", "--start", "0", "--count", "4", "--jobs", "2"])
        .output()
        .expect("run walvault-sim");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("failures: none"), "{text}");
    assert!(text.contains("seeds/s per core"), "{text}");
    assert!(text.contains("crash between ack and persist"), "{text}");
}
