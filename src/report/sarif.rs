//! `report.sarif`: SARIF 2.1.0, one result per failed gate, pointing at the
//! model file (a partial report adds one note).

use serde_json::json;

use super::{Report, Verdict};
use crate::error::{Error, Result};

/// The SARIF JSON text.
pub fn document(report: &Report) -> Result<String> {
    let path_of = |model: &str| {
        report
            .model(model)
            .and_then(|m| m.model.as_ref())
            .map(|i| {
                // Repository-relative where possible: code-scanning UIs
                // resolve URIs against the checkout.
                let cwd = std::env::current_dir().unwrap_or_default();
                let p = i.path.strip_prefix(&cwd).unwrap_or(&i.path);
                p.to_string_lossy().replace('\\', "/")
            })
            .unwrap_or_else(|| model.to_string())
    };
    let mut results: Vec<serde_json::Value> = report
        .gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| {
            json!({
                "ruleId": format!("georob/{}", g.kind),
                "level": "error",
                "message": { "text": g.message },
                "locations": [{
                    "physicalLocation": { "artifactLocation": { "uri": path_of(&g.model) } }
                }],
                "properties": { "gate": g.gate, "model": g.model, "actual": g.actual },
            })
        })
        .collect();
    if report.verdict == Verdict::Partial {
        results.push(json!({
            "ruleId": "georob/partial",
            "level": "note",
            "message": { "text": format!("partial audit: {} of {} units", report.units_done, report.units_total) },
        }));
    }
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "georob",
                "version": report.georob_version,
                "informationUri": "https://github.com/georob/georob",
                "rules": [
                    { "id": "georob/threshold", "shortDescription": { "text": "A robustness value crossed its threshold" } },
                    { "id": "georob/baseline", "shortDescription": { "text": "A robustness value regressed against the baseline" } },
                    { "id": "georob/partial", "shortDescription": { "text": "The audit did not finish every unit" } }
                ]
            }},
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&doc).map_err(|e| Error::Config(format!("report.sarif: {e}")))
}
