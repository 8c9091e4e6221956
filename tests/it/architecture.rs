//! The layering the code promises (README, "Layout"), checked on the sources: reports
//! render and do not run audits, measures neither parse command lines nor evaluate data
//! sets, and no measure opens a data set or a model file (the caller opens what a measure
//! names, through `Context::resources`).

use std::path::PathBuf;

use crate::common::repo;

/// The `.rs` files under `src/<dir>`, with their text.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = repo("src").join(dir);
    let mut out = vec![];
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under src/{dir}");
    out
}

/// Fails naming each file of `src/<dir>` whose text contains one of `forbidden`.
fn assert_none(dir: &str, forbidden: &[&str], why: &str) {
    let mut found = vec![];
    for (path, text) in sources(dir) {
        for f in forbidden {
            if text.contains(f) {
                found.push(format!("{}: {f}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{why}:\n{}", found.join("\n"));
}

#[test]
fn reports_do_not_import_the_audit() {
    assert_none(
        "report",
        &["crate::audit", "georob::audit"],
        "report/ renders a Report; the audit builds it",
    );
}

#[test]
fn measures_do_not_import_the_cli_or_eval() {
    for dir in ["measure", "attack"] {
        assert_none(
            dir,
            &["crate::cli", "crate::eval", "crate::audit"],
            "measures sit below the CLI, evaluation and the audit",
        );
    }
}

#[test]
fn no_measure_opens_a_data_set_or_a_model() {
    for dir in ["measure", "attack"] {
        assert_none(
            dir,
            &["Dataset::open", "Model::open", "File::open", "fs::read"],
            "a measure asks Context::resources for other files",
        );
    }
}
