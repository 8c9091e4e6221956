//! Progress bars on stderr, hidden when stderr is not a terminal or when the
//! user asked for quiet output.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether and where to draw progress.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Progress on stderr unless `quiet` or stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        Progress {
            visible: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Never draws (library use, tests).
    pub fn hidden() -> Self {
        Progress { visible: false }
    }

    /// A bar of `len` steps labelled `what`.
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }
}
