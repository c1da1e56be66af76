//! walvault-sim: the deterministic simulator (seeded runs of the real engine through
//! crashes and storage faults). Not built yet: see issue 4 and BATTLE_TESTING.md.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "walvault-sim: the simulator is not built yet. The engine's model-based tests \
         (cargo test -p walvault-engine) and the end-to-end crash tests cover the failure \
         catalog meanwhile; see BATTLE_TESTING.md."
    );
    ExitCode::from(2)
}
