//! The `georob` binary: a thin shell over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    georob::model::install_quiet_panic_hook();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("georob: error: {e:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
