//! Panics inside a run are a finding (invariant 7), not a crash of the simulator: a
//! hook records where the panic happened (and stays quiet during sweeps), and
//! `run_plan` turns the unwound payload into a violation.

use std::sync::Mutex;

static LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Installs the hook (once per process). `quiet`: do not print panics (sweeps report
/// them per seed).
pub fn install(quiet: bool) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut l) = LOCATION.lock() {
            *l = info
                .location()
                .map(|l| format!("at {}:{}", l.file(), l.line()));
        }
        if !quiet {
            default(info);
        }
    }));
}

/// Where the last panic happened, if the hook saw it.
pub fn take_location() -> Option<String> {
    LOCATION.lock().ok().and_then(|mut l| l.take())
}
