//! The `walvault-sim` binary: see `walvault-sim --help` and BATTLE_TESTING.md.

fn main() -> std::process::ExitCode {
    walvault_sim::cli::main()
}
