//! Report and journal cases: `gate` on hostile reports, baselines and thresholds; `merge`
//! and `audit --resume` on hostile shard folders.

use std::path::Path;

use serde_json::Value;

use super::{args, s, Case, Expect, Fixtures};
use crate::common::{bit_flipped, repo, truncated, Rng};
use crate::hostile::{fifo, TEST};

/// The suite of the reference shard: the linear digits model, accuracy and DeepFool (which
/// saves pictures) on 2 images, with a threshold of its own.
pub fn shard_suite() -> String {
    format!(
        "data = {:?}\nlimit = 2\nthresholds = [\"accuracy.accuracy >= 0.1\"]\n[[models]]\npath = {:?}\n\
         [[measures]]\nname = \"accuracy\"\n[[measures]]\nname = \"deepfool\"\n",
        s(&repo(TEST)),
        s(&repo("onnx_models/digits/digits_linear.onnx")),
    )
}

/// A JSON value to put where another was.
fn hostile_value(rng: &mut Rng) -> Value {
    let deep = |n: usize| -> Value {
        serde_json::from_str(&format!("{}{}", "[".repeat(n), "]".repeat(n))).unwrap_or(Value::Null)
    };
    match rng.below(10) {
        0 => Value::Null,
        1 => (-1).into(),
        2 => 1e308.into(),
        3 => "x".into(),
        4 => Value::Array(vec![]),
        5 => Value::Object(Default::default()),
        6 => "y".repeat(1 << 16).into(),
        7 => deep(100),
        8 => u64::MAX.into(),
        _ => true.into(),
    }
}

/// Replaces one value anywhere in `v` (a random walk down from the top); says where.
fn replace_somewhere(v: &mut Value, rng: &mut Rng) -> String {
    let descend = rng.chance(0.8);
    match v {
        Value::Object(m) if !m.is_empty() && descend => {
            let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
            let below = replace_somewhere(m.get_mut(&k).unwrap(), rng);
            format!(".{k}{below}")
        }
        Value::Array(a) if !a.is_empty() && descend => {
            let k = rng.below(a.len());
            let below = replace_somewhere(&mut a[k], rng);
            format!("[{k}]{below}")
        }
        _ => {
            let new = hostile_value(rng);
            let short: String = new.to_string().chars().take(20).collect();
            *v = new;
            format!(" = {short}")
        }
    }
}

/// Hostile bytes of a JSON file: cut, flipped, edited, random or deeply nested.
fn hostile_json(rng: &mut Rng, original: &[u8]) -> (Vec<u8>, String) {
    match rng.below(5) {
        0 => {
            let b = truncated(original, rng);
            let what = format!("cut to {} bytes", b.len());
            (b, what)
        }
        1 => (
            bit_flipped(original, original.len(), rng),
            "bits flipped".into(),
        ),
        2 | 3 => {
            let mut v: Value = serde_json::from_slice(original).unwrap();
            let what = replace_somewhere(&mut v, rng);
            (serde_json::to_vec(&v).unwrap(), what)
        }
        _ => match rng.below(2) {
            0 => (rng.some_bytes(1000), "random bytes".into()),
            _ => {
                let n = 1 << (8 + rng.below(10));
                (
                    format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes(),
                    format!("{n} nested arrays"),
                )
            }
        },
    }
}

/// A JSON file georob cannot take as a report must be refused; one that parses may pass.
fn json_expect(bytes: &[u8]) -> Expect {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_)) => Expect::Either,
        _ => Expect::Refuse,
    }
}

pub fn report(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    let original = std::fs::read(fx.shard.join("report.json")).unwrap();
    std::fs::write(dir.join("report.json"), &original).unwrap();
    std::fs::write(dir.join("base.json"), &original).unwrap();
    fifo(&dir.join("special"));
    let mut a = args(&["gate", "report.json"]);
    let (expect, what, names): (Expect, String, Vec<&str>) = match rng.below(6) {
        0 | 1 => {
            let (b, what) = hostile_json(rng, &original);
            std::fs::write(dir.join("report.json"), &b).unwrap();
            (json_expect(&b), what, vec!["report.json"])
        }
        2 => {
            let (b, what) = hostile_json(rng, &original);
            std::fs::write(dir.join("base.json"), &b).unwrap();
            a.extend(args(&["--baseline", "base.json"]));
            (
                json_expect(&b),
                format!("baseline {what}"),
                vec!["base.json", "--baseline"],
            )
        }
        3 => {
            let t = *rng.pick(&[
                "thresholds = [\"garbage\"]",
                "thresholds = [\"accuracy.accuracy >= nan\"]",
                "thresholds = 5",
                "[[[",
                "thresholds = [\"accuracy.accuracy >= 1e400\"]",
                "thresholds = [\"nosuch.key >= 1\"]",
                "thresholds = []",
            ]);
            std::fs::write(dir.join("t.toml"), t).unwrap();
            a.extend(args(&["--thresholds", "t.toml"]));
            let e = if t.contains("nosuch") || t.ends_with("[]") {
                Expect::Either
            } else {
                Expect::Refuse
            };
            (e, t.to_string(), vec!["t.toml", "--thresholds"])
        }
        4 => {
            let (flag, v) = *rng.pick(&[
                ("--min", "accuracy.accuracy=nan"),
                ("--min", "accuracy=1"),
                ("--min", "=1"),
                ("--max", "deepfool.median_rho=abc"),
                ("--max", "x.y=1e400"),
                ("--max-regression", "-5%"),
                ("--max-regression", "nan"),
                ("--max-regression", "abc"),
                ("--thresholds", "special"),
                ("--baseline", "special"),
                ("--baseline", "missing.json"),
                ("--out", "/dev/full"),
                ("--out", "report.json"),
            ]);
            a.extend(args(&[flag, v]));
            if flag == "--max-regression" {
                a.extend(args(&["--baseline", "base.json"]));
            }
            (Expect::Refuse, format!("{flag} {v}"), vec![flag, v])
        }
        _ => {
            std::fs::remove_file(dir.join("report.json")).unwrap();
            if rng.chance(0.5) {
                fifo(&dir.join("report.json"));
            } else {
                std::os::unix::fs::symlink("/dev/zero", dir.join("report.json")).unwrap();
            }
            (
                Expect::Refuse,
                "a special report.json".into(),
                vec!["report.json"],
            )
        }
    };
    Case::new(a, expect, &names, what)
}

/// Copies the folder `from` to `to` (regular files and folders only).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The text that must not reach a merged report: the base64 of `secret.png`.
const SECRET: &[u8] = b"\x89PNG secret, not for any report";

pub fn journal(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    use Expect::{Either, Refuse};
    let shard = dir.join("s1");
    copy_dir(&fx.shard, &shard);
    std::fs::write(dir.join("secret.png"), SECRET).unwrap();
    std::fs::write(dir.join("suite.toml"), shard_suite()).unwrap();
    let journal = std::fs::read(shard.join("journal.jsonl")).unwrap();
    let text = String::from_utf8(journal.clone()).unwrap();
    let mut out = "m";
    let (expect, what, name): (Expect, String, &str) = match rng.below(9) {
        0 => {
            let b = truncated(&journal, rng);
            std::fs::write(shard.join("journal.jsonl"), &b).unwrap();
            (
                Either,
                format!("journal cut to {} bytes", b.len()),
                "journal.jsonl",
            )
        }
        1 => {
            std::fs::write(
                shard.join("journal.jsonl"),
                bit_flipped(&journal, journal.len(), rng),
            )
            .unwrap();
            (Either, "journal bits flipped".into(), "journal.jsonl")
        }
        2 => {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let k = rng.below(lines.len());
            let mut v: Value = serde_json::from_str(&lines[k]).unwrap();
            let what = replace_somewhere(&mut v, rng);
            lines[k] = v.to_string();
            std::fs::write(shard.join("journal.jsonl"), lines.join("\n") + "\n").unwrap();
            (Either, format!("line {k}: {what}"), "journal.jsonl")
        }
        3 => {
            let mut lines: Vec<&str> = text.lines().collect();
            let what = match rng.below(3) {
                0 => {
                    let k = rng.below(lines.len());
                    lines.push(lines[k]);
                    "a line twice"
                }
                1 => {
                    lines.remove(rng.below(lines.len()));
                    "a line removed"
                }
                _ => {
                    lines.reverse();
                    "lines reversed"
                }
            };
            std::fs::write(shard.join("journal.jsonl"), lines.join("\n") + "\n").unwrap();
            (Either, what.into(), "journal.jsonl")
        }
        4 => {
            // Artifact paths leaving the shard.
            let to = *rng.pick(&[
                "../secret.png",
                "../../secret.png",
                "/etc/passwd",
                "artifacts/../../secret.png",
                "artifacts/x/../../../secret.png",
            ]);
            let edited = text.replace("artifacts/digits_linear/deepfool/deepfool_0.png", to);
            std::fs::write(shard.join("journal.jsonl"), edited).unwrap();
            (Either, format!("an artifact path {to}"), "journal.jsonl")
        }
        5 => {
            // Names from the journal that would become paths.
            let edited = text.replace("\"model\":\"digits_linear\"", "\"model\":\"../../escape\"");
            std::fs::write(shard.join("journal.jsonl"), edited).unwrap();
            (Refuse, "a model name ../../escape".into(), "journal.jsonl")
        }
        6 => {
            let link = shard.join("artifacts/digits_linear/deepfool/link.png");
            let to = *rng.pick(&["../../../../secret.png", "/etc", "/dev/zero", "."]);
            std::os::unix::fs::symlink(to, &link).unwrap();
            (Refuse, format!("an artifact linking to {to}"), "link.png")
        }
        7 => {
            std::fs::remove_file(shard.join("journal.jsonl")).unwrap();
            if rng.chance(0.5) {
                fifo(&shard.join("journal.jsonl"));
                (Refuse, "a FIFO journal".into(), "journal.jsonl")
            } else {
                (Refuse, "no journal".into(), "journal.jsonl")
            }
        }
        _ => {
            out = *rng.pick(&["s1", "s1/", "./s1", "s1/artifacts"]);
            (
                if out == "s1/artifacts" {
                    Either
                } else {
                    Refuse
                },
                format!("--out {out}"),
                "--out",
            )
        }
    };
    let resume = rng.chance(0.3) && out == "m";
    // Resuming writes into the shard itself: a link inside it is left alone, not read; and
    // with no journal it starts afresh.
    let expect = match (resume, name, what.as_str()) {
        (true, "link.png", _) | (true, _, "no journal") => Either,
        _ => expect,
    };
    let a = if resume {
        let mut a = args(&[
            "audit",
            "suite.toml",
            "--out",
            "s1",
            "--resume",
            "-q",
            "--threads",
            "1",
        ]);
        a.extend(args(&["--backend", "tract"]));
        a
    } else {
        args(&["merge", "s1", "--out", out])
    };
    let mut case = Case::new(a, expect, &[name, "s1"], what);
    case.forbidden = Some(SECRET.to_vec());
    case
}
