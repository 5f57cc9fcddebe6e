//! The `wavault` binary: parse arguments, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // First, while single-threaded: passphrase variables out of the
    // environment, core dumps off (src/hardening.rs).
    let notes = wavault::hardening::at_start();
    let cli = match wavault::cli::parse_args() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                wavault::error::exit::USAGE
            } else {
                0
            });
        }
    };
    wavault::logs::init_with(cli.log_format());
    notes.iter().for_each(|n| n.log());
    match wavault::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wavault: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
