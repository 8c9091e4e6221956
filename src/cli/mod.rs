//! The `georob` command line: parse, run the subcommand, map the outcome to
//! an exit code (0 success, 1 a gate failed, 2 error).

mod args;
mod audit;
mod corrupt;
mod eval;
mod grad;
mod inspect;
mod measure;
mod options;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Exit code: an error stopped the run.
pub const EXIT_ERROR: u8 = 2;

/// Exit code: a gate failed.
pub const EXIT_GATE: u8 = 1;

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(text) = &cli.max_memory {
        let bytes =
            georob::limits::parse_bytes(text).map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?;
        georob::limits::set_max_memory(bytes);
    }
    if let Some(n) = cli.command.threads() {
        georob::threads::limit(n)?;
    }
    match cli.command {
        args::Command::Inspect(a) => inspect::run(&a),
        args::Command::Eval(a) => eval::run(&a),
        args::Command::Measure(a) => measure::run(&a),
        args::Command::Grad(a) => grad::run_grad(&a),
        args::Command::ExportGrad(a) => grad::run_export(&a),
        args::Command::CheckGrad(a) => grad::run_check(&a),
        args::Command::Audit(a) => audit::run_audit(&a),
        args::Command::Gate(a) => audit::run_gate(&a),
        args::Command::Merge(a) => audit::run_merge(&a),
        args::Command::Corrupt(a) => corrupt::run(&a),
    }
}

/// Writes `text` to stdout; a closed pipe (`georob ... | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A table in the CLI's style with `header`.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// "1 image", "5 images".
pub fn images(n: usize) -> String {
    match n {
        1 => "1 image".into(),
        n => format!("{n} images"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
