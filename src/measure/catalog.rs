//! The catalogue of measures as Markdown (`docs/measures.md`), made from the registry's
//! declarations: what each measure is for, its parameters with their defaults, its headline
//! keys and its per-image values.

use std::fmt::Write;

use super::{registry, Units};

/// The page's opening, before the measures.
const INTRO: &str = r##"# Measures and their JSON

This page is generated from the measures' own declarations: `georob measure list --markdown >
docs/measures.md` writes it, and a test checks that the committed file is what the code
declares. `docs/methods.md` explains each measure: its definition, source, how to read its
numbers and its limits.

`georob measure list` prints every measure with its parameters and their defaults;
`georob measure NAME MODEL DATA -p KEY=VALUE ... --json FILE [--out DIR]` runs one.
The same measures run inside `georob audit` (see the README), with the same keys. An audit
runs each measure in work units: one per chunk of images (the suite's `chunk`, default 256)
for a measure whose per-image results do not depend on the other images, its summary made
from every chunk's rows; one over the whole data set for a measure whose result needs every
image at once ([`docs/scale.md`](scale.md)). Each measure below says which. In the headline
lists, ↑ marks a value that is better higher and ↓ one better lower: those are what `georob
gate NEW.json --baseline OLD.json --max-regression 5%` compares when no gate is given.
"##;

/// The page's closing, after the measures: spaces, outcomes and the JSON layouts.
const LAYOUT: &str = r##"Perturbations are measured in **image space** (`[0,1]` pixels, planar C×H×W, before the
model's mean/std) when the data are image files, and in **model input space** for `.npy`
tensors; `space` in the JSON says which. `--bounds LO,HI` (default `0,1` for images, none for
`.npy`) is the box iterates are clipped to.

Outcomes: `fooled` (a perturbation changed the prediction), `robust` (the model withstood a
fixed budget, e.g. a grid), `misclassified` (the clean prediction already differs from the
label: left out of robustness summaries), `failed` (nothing found within the budget: counted
apart, never averaged in).

## `georob measure --json` (schema `georob.measure/1`)

```json
{
  "schema": "georob.measure/1",
  "georob_version": "0.1.0",
  "model": { "path": "...", "sha256": "...", "backend": "tract", "backend_detail": "...",
             "threads": 2, "batch": 16, "input": { ... }, "classes": 10, "output_transform": "logits" },
  "backend": "tract",
  "gradient": "exact",                 // or "finite-difference"; null: the measure takes none
  "seed": 0,
  "data": "onnx_models/digits/test_x.npy",
  "bounds": [0.0, 1.0],                // or null
  "measure": "deepfool",
  "params": { "norm": "l2", "overshoot": 0.02, "max_iter": 50, "candidates": 10, "clip": true },
  "space": "model",                    // or "image"
  "summary": { "n": 450, "n_attacked": 441, "success_rate": 1.0,
               "median_norm_l2": 1.43, "median_rho": 0.12, "...": 0 },
  "counts": { "fooled": 441, "robust": 0, "misclassified": 9, "failed": 0 },
  "images": [
    { "index": 0, "name": "#0", "label": 2, "pred": 2, "success": true, "outcome": "fooled",
      "norm_l2": 0.79, "norm_linf": 0.19, "rho": 0.06, "adv_pred": 3, "iterations": 1 }
  ],
  "extra": { },                        // measure-specific structures (curves, spectra, sections)
  "artifacts": [ { "description": "...", "path": "deepfool_12.png" } ],
  "timings": { "seconds": 4.2, "model_seconds": 3.9 }  // model_seconds: inside model calls, summed over threads
}
```

Stable contract: every key above keeps its name and meaning within schema version 1; new
keys may be added. `summary` always has `n`, `n_attacked` (images not misclassified) and,
when any image was attacked, `success_rate` (fooled / attacked); the rest are the measure's
headline numbers (medians and means over fooled images, rates). Per-image values sit next to
`index` … `outcome` in each image object. JSON has no NaN: a value that is not a number is
written as `null`.

## `report.json` of `georob audit` (schema `georob.report/1`)

`schema`, `georob_version`, `seed`, `suite` (the suite that ran, paths as given, with its
`chunk`), `units_done`, `units_total` (work units: a measure on a model over a chunk of
images, or over all of them), `models` (per model: `name`, `model` {path, sha256, backend,
backend_detail, input, classes, output_transform}, `gradient`, `measures` — each the
object above from `measure` to `artifacts` plus its suite `id`, with the rows of all its
chunks and the summary made from them), `gates` (model, gate, kind `threshold|baseline`,
actual, passed, message), `verdict` (`pass|fail|partial`), and `run` (threads, shard,
seconds, seconds per measure): everything outside `run` is identical for equal suites
(chunk included) and seeds, whatever the thread count or sharding.
"##;

/// `docs/measures.md`.
pub fn markdown() -> String {
    let mut out = String::from(INTRO);
    for entry in registry() {
        let d = entry.declaration;
        let defaults = (entry.defaults)();
        let _ = write!(out, "\n## `{}`\n\n{}.\n\n", d.name, capitalised(d.about));
        if d.params.is_empty() {
            out.push_str("No parameters.\n\n");
        } else {
            out.push_str("| parameter | default | what it sets |\n|---|---|---|\n");
            for (key, doc) in d.params {
                let default = defaults.get(key).map_or("—".to_string(), shortest);
                let _ = writeln!(out, "| `{key}` | `{default}` | {} |", cell(doc));
            }
            out.push('\n');
        }
        if !d.headline.is_empty() {
            // ↑ higher is better, ↓ lower is better (what `gate --baseline` compares).
            let keys: Vec<String> = d
                .headline
                .iter()
                .map(|k| match d.better(k) {
                    Some(super::Better::Higher) => format!("`{k}` ↑"),
                    Some(super::Better::Lower) => format!("`{k}` ↓"),
                    None => format!("`{k}`"),
                })
                .collect();
            let _ = writeln!(out, "Headline: {}.\n", keys.join(", "));
        }
        let _ = match d.units {
            Units::Chunks => writeln!(out, "Audit units: one per chunk of images.\n"),
            Units::Whole(why) => {
                writeln!(out, "Audit units: one over the whole data set ({why}).\n")
            }
        };
        if !d.values.is_empty() {
            out.push_str("| per-image value | what it holds |\n|---|---|\n");
            for (key, doc) in d.values.iter().flat_map(|group| group.iter()) {
                let _ = writeln!(out, "| `{key}` | {} |", cell(doc));
            }
        }
    }
    out.push('\n');
    out.push_str(LAYOUT);
    out
}

/// `value` as JSON, with numbers that are `f32` parameters written as such (`0.02`, not
/// `0.019999999552965164`).
fn shortest(value: &serde_json::Value) -> String {
    match value.as_f64() {
        Some(v) if value.is_f64() && f64::from(v as f32) == v => format!("{}", v as f32),
        _ => value.to_string(),
    }
}

/// `text` with its first letter in upper case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or(String::new(), |c| c.to_uppercase().chain(chars).collect())
}

/// `text` made safe for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    /// The committed `docs/measures.md` is what the declarations say; to update it, run
    /// `georob measure list --markdown > docs/measures.md`.
    #[test]
    fn committed_page_matches_the_declarations() {
        let committed = include_str!("../../docs/measures.md");
        assert!(
            committed == super::markdown(),
            "docs/measures.md is stale: run `georob measure list --markdown > docs/measures.md`"
        );
    }

    /// `docs/methods.md` explains every registered measure in a section of its own.
    #[test]
    fn every_measure_has_a_methods_section() {
        let methods = include_str!("../../docs/methods.md");
        for entry in super::registry() {
            let heading = format!("\n## {}\n", entry.declaration.name);
            assert!(
                methods.contains(&heading),
                "docs/methods.md has no `## {}` section",
                entry.declaration.name
            );
        }
    }

    /// Every parameter a measure has is declared with a doc line, and nothing else is.
    #[test]
    fn every_parameter_is_declared() {
        for entry in super::registry() {
            let d = entry.declaration;
            let mut have: Vec<String> = match (entry.defaults)() {
                serde_json::Value::Object(map) => map.keys().cloned().collect(),
                _ => vec![],
            };
            let mut declared: Vec<String> = d.params.iter().map(|(k, _)| k.to_string()).collect();
            have.sort();
            declared.sort();
            assert_eq!(have, declared, "{}", d.name);
            assert!(
                d.params.iter().all(|(_, doc)| !doc.is_empty()),
                "{}",
                d.name
            );
        }
    }
}
