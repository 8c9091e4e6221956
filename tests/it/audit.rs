//! `georob audit`, `gate` and `merge` end to end on the digits CNN: exit
//! codes, gate reporting in every format, shards merged into the whole
//! report, and resuming after SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{command, georob, repo, text};

/// A small suite over the digits CNN (5 units), with `thresholds`.
fn suite(dir: &Path, thresholds: &[&str]) -> PathBuf {
    let path = dir.join("suite.toml");
    let list: Vec<String> = thresholds.iter().map(|t| format!("{t:?}")).collect();
    std::fs::write(
        &path,
        format!(
            r#"
seed = 3
data = {data:?}
labels = {labels:?}
limit = 24
thresholds = [{list}]

[[models]]
name = "cnn"
path = {model:?}

[[measures]]
name = "accuracy"

[[measures]]
name = "deepfool"

[[measures]]
name = "noise"
params = {{ directions = 4 }}

[[measures]]
id = "rotation"
name = "manifool"
params = {{ group = "rotation" }}

[[measures]]
name = "grid"
params = {{ angles = 5, shifts = 3, k = 3 }}
"#,
            data = repo("onnx_models/digits/test_x.npy"),
            labels = repo("onnx_models/digits/test_y.npy"),
            model = repo("onnx_models/digits/digits_cnn.onnx"),
            list = list.join(", "),
        ),
    )
    .unwrap();
    path
}

/// `georob audit SUITE --out OUT` on tract, quiet.
fn audit_command(suite: &Path, out: &Path) -> Command {
    let mut c = command();
    c.arg("audit")
        .arg(suite)
        .arg("--out")
        .arg(out)
        .args(["--quiet", "--backend", "tract"]);
    c
}

/// Starts `georob audit SUITE --out OUT EXTRA…` in the background, its stderr captured.
fn spawn_audit(suite: &Path, out: &Path, extra: &[&str]) -> std::process::Child {
    audit_command(suite, out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn audit(suite: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    audit_command(suite, out)
        .args(extra)
        .output()
        .expect("run georob")
}

/// report.json without its `run` section (timings, threads, shard).
fn stable(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("run");
    v
}

#[test]
fn gates_set_the_exit_code_and_name_the_failure_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let pass = suite(
        tmp.path(),
        &["deepfool.median_rho >= 0.01", "accuracy.accuracy >= 0.5"],
    );
    let out = tmp.path().join("pass");
    let o = audit(&pass, &out, &[]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
    for f in [
        "report.json",
        "images.csv",
        "report.html",
        "junit.xml",
        "report.sarif",
        "summary.md",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report = stable(&out);
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["models"][0]["measures"].as_array().unwrap().len(), 5);

    // Tightened: the same values against a limit they cannot reach.
    let report_path = out.join("report.json");
    let gated = tmp.path().join("gated");
    let o = georob(&[
        "gate",
        report_path.to_str().unwrap(),
        "--min",
        "deepfool.median_rho=1000",
        "--out",
        gated.to_str().unwrap(),
    ]);
    let (stdout, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("deepfool.median_rho >= 1000") && stdout.contains("FAIL"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(gated.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<failure") && junit.contains("deepfool.median_rho &gt;= 1000"),
        "{junit}"
    );
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gated.join("report.sarif")).unwrap())
            .unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0]["properties"]["gate"],
        "deepfool.median_rho >= 1000"
    );
    assert!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("digits_cnn.onnx")
    );

    // The audit itself gates too: a threshold in the suite that fails exits 1.
    let strict = suite(tmp.path(), &["deepfool.median_rho >= 1000"]);
    let o = audit(&strict, &tmp.path().join("strict"), &["--resume"]);
    assert_eq!(o.status.code(), Some(1));

    // A baseline with better scores: a regression beyond 5% fails.
    let mut better =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report_path).unwrap())
            .unwrap();
    let rho = &mut better["models"][0]["measures"][1]["summary"]["median_rho"];
    *rho = serde_json::json!(rho.as_f64().unwrap() * 1.5);
    let baseline = tmp.path().join("baseline.json");
    std::fs::write(&baseline, better.to_string()).unwrap();
    let o = georob(&[
        "gate",
        report_path.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "--max-regression",
        "5%",
    ]);
    let (stdout, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("regression"), "{stdout}");
    // Against itself it passes.
    let o = georob(&[
        "gate",
        report_path.to_str().unwrap(),
        "--baseline",
        report_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);

    // Without any gate (none in the suite, none on the command line), a baseline compares
    // every headline value whose better direction the measure declares: here the worse
    // median ρ fails, and the accuracy, DeepFool and grid values are in the table.
    let ungated = |v: &serde_json::Value, name: &str| {
        let mut v = v.clone();
        v["suite"]["thresholds"] = serde_json::json!([]);
        let path = tmp.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let now: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let (now, before) = (ungated(&now, "now.json"), ungated(&better, "before.json"));
    let gate_against = |old: &Path| {
        georob(&[
            "gate",
            now.to_str().unwrap(),
            "--baseline",
            old.to_str().unwrap(),
            "--max-regression",
            "5%",
        ])
    };
    let o = gate_against(&before);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    for key in [
        "deepfool.median_rho",
        "accuracy.accuracy",
        "grid.worst_of_k_accuracy",
    ] {
        assert!(stdout.contains(key), "{key} missing: {stdout}");
    }
    let o = gate_against(&now);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);

    // A broken report is an error.
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"schema\": \"georob.report/1\", \"models\": [").unwrap();
    let o = georob(&["gate", broken.to_str().unwrap(), "--min", "a.b=1"]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr.contains("broken.json"), "{stderr}");
}

/// Starts `georob audit SUITE --out OUT` (tract, quiet) and returns it once its journal has
/// `lines` lines, failing if it finishes first.
fn audit_until_journal_has(suite: &Path, out: &Path, lines: usize) -> std::process::Child {
    let mut child = audit_command(suite, out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("journal.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < lines {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the audit finished before it could be stopped"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// The default suite (no `[[measures]]`: the README's default measures) on the first 16
/// digits with the default chunk of 256 images: 7 units, one per measure.
fn default_suite(dir: &Path) -> PathBuf {
    default_suite_with(dir, "")
}

/// The default suite on the first 16 digits, with the suite-file lines `extra`.
fn default_suite_with(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("default.toml");
    std::fs::write(
        &path,
        format!(
            "data = {:?}\nlabels = {:?}\nlimit = 16\n{extra}\n\n[[models]]\nname = \"cnn\"\npath = {:?}\n",
            repo("onnx_models/digits/test_x.npy"),
            repo("onnx_models/digits/test_y.npy"),
            repo("onnx_models/digits/digits_cnn.onnx"),
        ),
    )
    .unwrap();
    path
}

/// report.json without its `run` section, as written (not parsed: a parser may read two
/// numbers that differ in their last digit as the same f64).
fn stable_text(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    // Pretty-printed: the section's key and its closing brace are the only lines at
    // this indentation between them.
    let start = text.find("\n  \"run\": {").expect("a run section");
    let end = start + text[start..].find("\n  }").unwrap() + "\n  }".len();
    format!("{}{}", &text[..start], &text[end..])
}

/// The key path of the first value where `a` and `b` differ, with both values.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v).map(|d| format!(".{k}{d}")),
                (u, v) => Some(format!(".{k}: {u:?} vs {v:?}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v).map(|d| format!("[{i}]{d}"))),
        _ => (a != b).then(|| format!(": {a} vs {b}")),
    }
}

/// Fails unless `dir`'s report.json, without its `run` section, is `reference`'s byte for
/// byte, naming the first line and the first key path (where the parsed values differ) that do.
fn assert_same_bytes(dir: &Path, reference: &Path) {
    let (got, want) = (stable_text(dir), stable_text(reference));
    if got != want {
        let (line, (g, w)) = (got.lines().zip(want.lines()).enumerate())
            .find(|(_, (g, w))| g != w)
            .unwrap_or((got.lines().count().min(want.lines().count()), ("", "")));
        panic!(
            "{} differs from {}: line {}: {} vs {}; key path {}",
            dir.display(),
            reference.display(),
            line + 1,
            g.trim(),
            w.trim(),
            first_difference(&stable(dir), &stable(reference)).unwrap_or("-".into())
        );
    }
}

/// Waits for `child` and fails unless it exited with 0.
fn succeeds(child: std::process::Child, what: &str) {
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o).1);
}

/// The numbers of the units in `dir`'s journal, in the order written.
fn journal_units(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["unit"]["unit"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// The promise of the README and docs/scale.md: one run, another thread count, shards
/// merged, and a run killed with SIGKILL in the middle of a unit then resumed all write
/// the same report.json bytes apart from its `run` section.
#[test]
fn whole_sharded_resumed_and_threaded_audits_give_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = default_suite(tmp.path());
    let out = |name: &str| tmp.path().join(name);
    let start = |dir: &Path, extra: &[&str]| spawn_audit(&s, dir, extra);
    // The independent runs at once (the machine's cores are used either way).
    let whole = start(&out("whole"), &["--threads", "1"]);
    let threaded = start(&out("threaded"), &["--threads", "3"]);
    let shards: Vec<_> = (1..=3)
        .map(|i| start(&out(&format!("shard{i}")), &["--shard", &format!("{i}/3")]))
        .collect();

    // Killed once two units are in the journal (header + 2 lines), while the third runs.
    let killed = out("killed");
    let mut child = audit_until_journal_has(&s, &killed, 3);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        journal_units(&killed).len() < 7,
        "every unit finished before the kill"
    );

    succeeds(whole, "whole");
    succeeds(threaded, "--threads 3");
    for (i, c) in shards.into_iter().enumerate() {
        succeeds(c, &format!("shard {}/3", i + 1));
    }
    let o = audit(&s, &killed, &["--resume", "--threads", "2"]);
    assert_eq!(o.status.code(), Some(0), "resume: {}", text(&o).1);
    let dirs: Vec<PathBuf> = (1..=3).map(|i| out(&format!("shard{i}"))).collect();
    for d in &dirs {
        assert_eq!(stable(d)["verdict"], "partial");
    }
    let merged = out("merged");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = georob(&args);
    assert_eq!(o.status.code(), Some(0), "merge: {}", text(&o).1);

    let whole = out("whole");
    assert_eq!(stable(&whole)["verdict"], "pass");
    for dir in [out("threaded"), merged, killed.clone()] {
        assert_same_bytes(&dir, &whole);
    }
    // The resumed journal holds every unit exactly once.
    let units = journal_units(&killed);
    assert_eq!(units.len(), 7, "{units:?}");
    assert_eq!(
        units
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        (0..7).collect(),
        "{units:?}"
    );
    // Merging two shards of three is partial, and says so.
    let o = georob(&[
        "merge",
        dirs[0].to_str().unwrap(),
        dirs[1].to_str().unwrap(),
        "--out",
        out("half").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("partial"));
}

/// With chunks of 4 images, each of the default suite's measures but `uap` is 4 units over
/// the 16 digits (25 in all), so 4 shards each run a part of every such measure: merged, or
/// killed and resumed, they give the whole run's bytes. Merge names the chunks a missing shard
/// held, and refuses a shard with another chunk size or data set.
#[test]
fn one_measure_split_over_shards_by_chunks_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = default_suite_with(tmp.path(), "chunk = 4");
    let out = |name: &str| tmp.path().join(name);
    let start = |dir: &Path, extra: &[&str]| spawn_audit(&s, dir, extra);
    let whole = start(&out("whole"), &[]);
    let shards: Vec<_> = (1..=4)
        .map(|i| start(&out(&format!("shard{i}")), &["--shard", &format!("{i}/4")]))
        .collect();
    // Killed once five chunks are in the journal (header + 5 lines).
    let killed = out("killed");
    let mut child = audit_until_journal_has(&s, &killed, 6);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        journal_units(&killed).len() < 25,
        "every unit finished before the kill"
    );

    succeeds(whole, "whole");
    for (i, c) in shards.into_iter().enumerate() {
        succeeds(c, &format!("shard {}/4", i + 1));
    }
    let o = audit(&s, &killed, &["--resume"]);
    assert_eq!(o.status.code(), Some(0), "resume: {}", text(&o).1);
    let dirs: Vec<PathBuf> = (1..=4).map(|i| out(&format!("shard{i}"))).collect();
    let merge = |dirs: &[PathBuf], to: &str| {
        let mut args = vec!["merge".to_string()];
        args.extend(dirs.iter().map(|d| d.to_str().unwrap().to_string()));
        args.extend(["--out".into(), out(to).to_str().unwrap().into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        georob(&args)
    };
    let o = merge(&dirs, "merged");
    assert_eq!(o.status.code(), Some(0), "merge: {}", text(&o).1);

    let whole = out("whole");
    let report = stable(&whole);
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["suite"]["chunk"], 4);
    assert_eq!(report["units_total"], 25);
    let deepfool = &report["models"][0]["measures"][1];
    assert_eq!(deepfool["id"], "deepfool");
    assert_eq!(deepfool["summary"]["n"], 16.0);
    let indices: Vec<u64> = (deepfool["images"].as_array().unwrap().iter())
        .map(|i| i["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..16).collect::<Vec<_>>());
    // Every shard ran a chunk of deepfool (units 4 to 7).
    for (i, d) in dirs.iter().enumerate() {
        assert!(
            journal_units(d).contains(&(4 + i as u64)),
            "shard {}",
            i + 1
        );
    }
    for dir in [out("merged"), killed.clone()] {
        assert_same_bytes(&dir, &whole);
    }
    let mut units = journal_units(&killed);
    units.sort_unstable();
    assert_eq!(units, (0..25).collect::<Vec<_>>());

    // Without shards 3 and 4: partial, naming what they held.
    let o = merge(&dirs[..2], "half");
    let stderr = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("partial") && stderr.contains("cnn/accuracy images 8..12 (unit 2)"),
        "{stderr}"
    );
    // A shard of another chunk size or data set is refused, naming the difference.
    for (from, to, says) in [
        ("\"chunk\":4", "\"chunk\":16", "chunks of 16 images, not 4"),
        ("\"images\":16", "\"images\":17", "a different data set"),
    ] {
        let other = out("other");
        std::fs::create_dir_all(&other).unwrap();
        let journal = std::fs::read_to_string(dirs[3].join("journal.jsonl")).unwrap();
        let (header, rest) = journal.split_once('\n').unwrap();
        assert!(header.contains(from), "{header}");
        std::fs::write(
            other.join("journal.jsonl"),
            format!("{}\n{rest}", header.replacen(from, to, 1)),
        )
        .unwrap();
        let mut three = dirs[..3].to_vec();
        three.push(other);
        let o = merge(&three, "refused");
        let stderr = text(&o).1;
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// SIGTERM (what a scheduler sends before it kills) finishes the unit in progress, writes a
/// partial report and exits with 2; `--resume` completes it.
#[test]
fn an_audit_stopped_with_sigterm_writes_a_partial_report() {
    let tmp = tempfile::tempdir().unwrap();
    let s = suite(tmp.path(), &[]);
    let out = tmp.path().join("stopped");
    // Stop once the first unit is in the journal (header + 1 line).
    let mut child = audit_until_journal_has(&s, &out, 2);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{status:?}");
    let report = stable(&out);
    assert_eq!(report["verdict"], "partial");
    let o = audit(&s, &out, &["--resume"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(stable(&out)["verdict"], "pass");
}

#[test]
fn the_example_suite_is_valid() {
    let s = georob::suite::Suite::load(&repo("examples/suite.toml")).unwrap();
    assert_eq!(s.model_names(), ["cnn", "linear"]);
    assert!(s.data.is_file() && s.models.iter().all(|m| m.path.is_file()));
    assert_eq!(s.thresholds().unwrap().len(), 6);
}

/// Every suite in `examples/` loads, validates (measure names and parameters) and names files
/// that exist.
#[test]
fn every_example_suite_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("examples")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = georob::suite::Suite::load(&path).unwrap();
            s.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                s.data.exists(),
                "{}: no {}",
                path.display(),
                s.data.display()
            );
            assert!(
                s.models.iter().all(|m| m.path.is_file()),
                "{}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "{checked} example suites");
}
