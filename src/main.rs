//! The `georob` binary: a thin shell over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    georob::model::install_quiet_panic_hook();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("georob: error: {}", message(&e));
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

/// The error and its causes, joined by ": ", leaving out a cause whose text the message
/// already holds (library errors name their cause in their own text).
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
