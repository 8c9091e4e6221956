//! `summary.md`: the verdict, headline numbers and gates, for CI step
//! summaries (e.g. `$GITHUB_STEP_SUMMARY`).

use std::fmt::Write;

use super::{Report, Verdict};

/// The Markdown text.
pub fn summary(report: &Report) -> String {
    let mut s = String::new();
    let verdict = match report.verdict {
        Verdict::Pass => "✅ pass",
        Verdict::Fail => "❌ fail",
        Verdict::Partial => "⏸ partial",
    };
    let _ = writeln!(s, "# georob audit: {verdict}\n");
    let _ = writeln!(
        s,
        "{} model(s), {} of {} units, seed {}, georob {}\n",
        report.models.len(),
        report.units_done,
        report.units_total,
        report.seed,
        report.georob_version
    );
    for m in &report.models {
        let _ = writeln!(s, "## {}\n", m.name);
        if let Some(info) = &m.model {
            let _ = writeln!(
                s,
                "`{}` · backend {} · sha256 `{}`\n",
                info.path.display(),
                info.backend_detail,
                &info.sha256[..info.sha256.len().min(12)]
            );
        }
        let _ = writeln!(s, "| measure | value |\n|---|---|");
        for e in &m.measures {
            for (k, v) in Report::headline(&e.result) {
                let _ = writeln!(s, "| {}.{k} | {v:.4} |", e.id);
            }
        }
        let _ = writeln!(s);
        for e in &m.measures {
            for w in Report::warnings(&e.result) {
                let _ = writeln!(s, "> ⚠ {}: {w}\n", e.id);
            }
        }
    }
    if !report.gates.is_empty() {
        let _ = writeln!(
            s,
            "## Gates\n\n| model | gate | value | result |\n|---|---|---|---|"
        );
        for g in &report.gates {
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} |",
                g.model,
                g.gate,
                g.actual.map(super::number).unwrap_or_else(|| "—".into()),
                if g.passed { "pass" } else { "**FAIL**" }
            );
        }
    }
    s
}
