//! `images.csv`: one row per image and measure, the union of every
//! measure's per-image values as columns (empty where a measure has none).

use std::collections::BTreeSet;

use super::Report;
use crate::error::{Error, Result};

/// The CSV text.
pub fn images(report: &Report) -> Result<String> {
    let keys: BTreeSet<&str> = report
        .models
        .iter()
        .flat_map(|m| &m.measures)
        .flat_map(|e| &e.result.images)
        .flat_map(|i| i.values.keys())
        .collect();
    let err = |e: csv::Error| Error::Config(format!("images.csv: {e}"));
    let mut w = csv::Writer::from_writer(vec![]);
    let mut header = vec![
        "model", "measure", "index", "name", "label", "pred", "outcome", "success",
    ];
    header.extend(keys.iter().copied());
    w.write_record(&header).map_err(err)?;
    for m in &report.models {
        for e in &m.measures {
            for i in &e.result.images {
                let mut row = vec![
                    m.name.clone(),
                    e.id.clone(),
                    i.index.to_string(),
                    i.name.clone(),
                    i.label.map(|l| l.to_string()).unwrap_or_default(),
                    i.pred.to_string(),
                    serde_json::to_value(i.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    i.success().to_string(),
                ];
                row.extend(
                    keys.iter()
                        .map(|k| i.values.get(k).map(|v| v.to_string()).unwrap_or_default()),
                );
                w.write_record(&row).map_err(err)?;
            }
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Config(format!("images.csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Config(format!("images.csv: {e}")))
}
