//! Settings cases: sidecars, suites and command-line flags.

use std::path::Path;

use prost::Message;

use super::{args, s, Case, Expect, Fixtures};
use crate::common::{repo, truncated, Rng};
use crate::hostile::{dynamic_size, fifo, CNN, QUICK_UAP, TEST};

/// A sidecar line with a hostile value, and whether it must be refused.
fn sidecar_line(rng: &mut Rng) -> (String, Expect, &'static str) {
    use Expect::{Either, Refuse};
    let ok = |v: &str, good: &[&str]| if good.contains(&v) { Either } else { Refuse };
    match rng.below(9) {
        0 => {
            let v = *rng.pick(&[
                "[0, 0]",
                "[28, 28, 1]",
                "[-1, 28]",
                "[3000000000, 3000000000]",
                "[100000, 100000]",
                "[28]",
                "[]",
                "[\"a\", \"b\"]",
                "[28.5, 28]",
                "[28, 28]",
                "\"28x28\"",
            ]);
            (format!("size = {v}"), ok(v, &["[28, 28]"]), "size")
        }
        1 => {
            let v = *rng.pick(&[
                "nan", "inf", "-inf", "1e39", "-1.0", "0.0", "\"x\"", "255.0", "[1.0]",
            ]);
            (
                format!("scale = {v}"),
                ok(v, &["-1.0", "0.0", "255.0"]),
                "scale",
            )
        }
        2 | 3 => {
            let key = if rng.chance(0.5) { "mean" } else { "std" };
            let v = *rng.pick(&[
                "[inf]",
                "[nan]",
                "[1e39]",
                "[0.5, 0.5, 0.5, 0.5]",
                "[]",
                "[0.0]",
                "\"x\"",
                "0.5",
                "[-1.0]",
                "[0.5]",
                "[0.5, 0.5, 0.5]",
            ]);
            // A zero or negative std divides by zero or flips the image: refused or not, not
            // asked here.
            (
                format!("{key} = {v}"),
                ok(v, &["[0.5]", "[0.0]", "[-1.0]", "0.5", "[0.5, 0.5, 0.5]"]),
                key,
            )
        }
        4 => {
            let v = *rng.pick(&["\"NHWC\"", "\"XYZ\"", "5", "\"nchw\""]);
            (
                format!("layout = {v}"),
                ok(v, &["\"NHWC\"", "\"nchw\""]),
                "layout",
            )
        }
        5 => {
            let v = *rng.pick(&["\"rgb\"", "\"cmyk\"", "\"\"", "[1]"]);
            (format!("channels = {v}"), ok(v, &["\"rgb\""]), "channels")
        }
        6 => {
            let v = *rng.pick(&[
                "nosuch = 1",
                "size = [28, 28]\nsize = [28, 28]",
                "[input",
                "\u{0}\u{1}",
                "size = [28, 28",
            ]);
            (v.to_string(), ok(v, &["nosuch = 1"]), "georob.toml")
        }
        _ => {
            let v = *rng.pick(&[
                "\"names.txt\"",
                "\"missing.txt\"",
                "\"special.txt\"",
                "\"../names.txt\"",
                "5",
            ]);
            (
                format!("classes = {v}"),
                ok(v, &["\"names.txt\"", "\"../names.txt\""]),
                "classes",
            )
        }
    }
}

pub fn sidecar(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    std::fs::copy(repo(CNN), dir.join("m.onnx")).unwrap();
    let (line, mut expect, key) = sidecar_line(rng);
    let names = match rng.below(3) {
        0 => "0\n1\n",
        1 => "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n",
        _ => "",
    };
    std::fs::write(dir.join("names.txt"), names).unwrap();
    if rng.chance(0.5) {
        std::os::unix::fs::symlink("/dev/zero", dir.join("special.txt")).unwrap();
    } else {
        fifo(&dir.join("special.txt"));
    }
    let (section, rest) = match key {
        "classes" => ("", ""),
        _ => ("[input]\n", ""),
    };
    let text = match rng.below(10) {
        0 => {
            expect = Expect::Either;
            String::from_utf8_lossy(&truncated(format!("{section}{line}\n").as_bytes(), rng))
                .into_owned()
        }
        _ => format!("{section}{line}\n{rest}"),
    };
    std::fs::write(dir.join("m.georob.toml"), text).unwrap();
    let digit = s(&repo("onnx_models/digits/test/3/0030.png"));
    let mut a = match rng.below(3) {
        0 => args(&["inspect", "m.onnx"]),
        _ => args(&["eval", "m.onnx", &digit, "-q"]),
    };
    a.extend(fx.backend(rng));
    a.extend(args(&["--threads", "1"]));
    let what = line.clone();
    Case::new(
        a,
        expect,
        &["m.georob.toml", "names.txt", "missing.txt", "special.txt"],
        what,
    )
}

/// A suite line (top level, or a `[[measures]]` table) with a hostile value.
fn suite_part(rng: &mut Rng) -> (String, String, Expect, &'static str) {
    use Expect::{Either, Refuse};
    let accuracy = "[[measures]]\nname = \"accuracy\"\n".to_string();
    match rng.below(10) {
        0 => {
            let v = *rng.pick(&[
                "[1.0, 0.0]",
                "[nan, 1.0]",
                "[inf, -inf]",
                "[0.0, 1.0, 2.0]",
                "[]",
                "[\"a\", 1]",
                "[0.0, 1.0]",
                "[-1e39, 1e39]",
            ]);
            let e = if v == "[0.0, 1.0]" { Either } else { Refuse };
            (format!("bounds = {v}"), accuracy, e, "bounds")
        }
        1 => {
            let v = *rng.pick(&[
                "0",
                "-1",
                "100000000000000000000",
                "1",
                "9223372036854775807",
                "\"x\"",
                "1.5",
            ]);
            let e = if ["1", "9223372036854775807"].contains(&v) {
                Either
            } else {
                Refuse
            };
            (format!("limit = {v}"), accuracy, e, "limit")
        }
        2 => ("measures = []".into(), String::new(), Refuse, "measures"),
        3 => {
            let id = *rng.pick(&[
                "../../escape",
                "/tmp",
                "..",
                ".",
                "",
                "a/b",
                "a\\b",
                "accuracy",
                "ünï",
            ]);
            let twice = id == "accuracy";
            let m = format!("[[measures]]\nname = \"accuracy\"\nid = {id:?}\n");
            let e = if ["ünï"].contains(&id) {
                Either
            } else {
                Refuse
            };
            (
                String::new(),
                if twice { format!("{m}{m}") } else { m },
                e,
                "id",
            )
        }
        4 => {
            let (name, p) = *rng.pick(&[
                ("deepfool", "candidates = 0"),
                ("deepfool", "candidates = \"abc\""),
                ("deepfool", "max_iter = -1"),
                ("deepfool", "norm = \"l7\""),
                ("deepfool", "overshoot = nan"),
                ("noise", "directions = 0"),
                ("uap", "holdout_fraction = 1.5"),
                ("uap", "holdout_fraction = -0.5"),
                ("deepfool", "nosuch = 1"),
                ("nosuch", "x = 1"),
                ("deepfool", "max_iter = 1e300"),
            ]);
            let m = format!("[[measures]]\nname = {name:?}\n[measures.params]\n{p}\n");
            (String::new(), m, Refuse, "params")
        }
        5 => {
            let seed = *rng.pick(&["-1", "\"x\"", "18446744073709551615", "1e3"]);
            (format!("seed = {seed}"), accuracy, Refuse, "seed")
        }
        6 => {
            let t = *rng.pick(&[
                "[\"garbage\"]",
                "[\"accuracy.accuracy >= nan\"]",
                "[\"x.y >=\"]",
                "\"x\"",
                "[1]",
            ]);
            (format!("thresholds = {t}"), accuracy, Refuse, "thresholds")
        }
        7 => {
            let c = *rng.pick(&["0", "1", "18446744073709551615", "-5"]);
            let e = if c == "1" { Either } else { Refuse };
            (format!("chunk = {c}"), accuracy, e, "chunk")
        }
        8 => {
            let d = *rng.pick(&["\"missing\"", "\"special\"", "5", "\"\""]);
            (format!("data = {d}"), accuracy, Refuse, "data")
        }
        _ => {
            let l = *rng.pick(&["\"y.npy\"", "\"missing.npy\""]);
            (format!("labels = {l}"), accuracy, Refuse, "labels")
        }
    }
}

pub fn suite(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    std::fs::write(dir.join("y.npy"), &fx.y_npy).unwrap();
    fifo(&dir.join("special"));
    let (top, measures, mut expect, key) = suite_part(rng);
    let data = if top.starts_with("data =") {
        String::new()
    } else {
        format!("data = {:?}\n", s(&repo(TEST)))
    };
    let limit = if top.starts_with("limit") {
        ""
    } else {
        "limit = 2\n"
    };
    let model = match rng.below(8) {
        0 => {
            expect = Expect::Refuse;
            format!(
                "[[models]]\nname = \"../../escape\"\npath = {:?}\n",
                s(&repo(CNN))
            )
        }
        1 => {
            expect = Expect::Refuse;
            "[[models]]\npath = \"special\"\n".to_string()
        }
        _ => format!(
            "[[models]]\npath = {:?}\n",
            s(&repo("onnx_models/digits/digits_linear.onnx"))
        ),
    };
    let mut text = format!("{top}\n{data}{limit}{model}{measures}");
    if rng.chance(0.1) {
        text = String::from_utf8_lossy(&truncated(text.as_bytes(), rng)).into_owned();
        expect = Expect::Either;
    }
    std::fs::write(dir.join("suite.toml"), &text).unwrap();
    let mut a = args(&[
        "audit",
        "suite.toml",
        "--out",
        "out",
        "-q",
        "--threads",
        "1",
    ]);
    a.extend(fx.backend(rng));
    Case::new(
        a,
        expect,
        &["suite.toml", "special", "missing", key],
        format!("{top} {model} {measures}").replace('\n', " "),
    )
}

/// A flag with a hostile value: the flag, its value, and whether it must be refused.
fn hostile_flag(rng: &mut Rng) -> (&'static str, &'static str, Expect) {
    use Expect::{Either, Refuse};
    let (flag, values, good): (&str, &[&str], &[&str]) = *rng.pick(&[
        (
            "--size",
            &[
                "0x0",
                "3000000000x3000000000",
                "100000x100000",
                "28",
                "x",
                "-1x5",
                "28x28x3",
                "28x28",
                "1x1",
                "20000x20000",
            ][..],
            &["28x28", "1x1"][..],
        ),
        (
            "--batch",
            &["0", "18446744073709551615", "-1", "1000000000", "3"],
            &["3", "1000000000"],
        ),
        (
            "--threads",
            &["0", "100000", "18446744073709551615", "-1", "2"],
            &["0", "2"],
        ),
        (
            "--bounds",
            &[
                "nan,1", "1,0", "0,inf", "a", "0,1,2", "none", "0,1", "-1e39,0",
            ],
            &["none", "0,1"],
        ),
        (
            "--scale",
            &["nan", "inf", "1e39", "a", "0", "-1", "255"],
            &["0", "-1", "255"],
        ),
        (
            "--mean",
            &["nan", "0,inf", "1e39", "a", "0.5", "0.5,0.5,0.5,0.5", ""],
            &["0.5"],
        ),
        (
            "--std",
            &["nan", "0", "inf", "a", "0.5", "-1"],
            &["0.5", "0", "-1"],
        ),
        (
            "--max-memory",
            &["0", "lots", "1e30T", "-1G", "1", "100K", "1G"],
            &["1", "100K", "1G"],
        ),
        (
            "--limit",
            &["0", "-1", "18446744073709551615", "1"],
            &["1", "18446744073709551615"],
        ),
        ("--layout", &["NHWC", "XYZ", ""], &["NHWC"]),
        ("--channels", &["rgb", "cmyk"], &["rgb"]),
        ("--output", &["probs", "scores"], &["probs"]),
        ("--classes", &["missing.txt", "special", "."], &[]),
        (
            "--json",
            &["/dev/full", ".", "nodir/x.json", "special", "r.json"],
            &["r.json"],
        ),
        (
            "--seed",
            &["-1", "x", "18446744073709551615"],
            &["18446744073709551615"],
        ),
        (
            "--ort-lib",
            &["special", "missing.so", "/dev/zero", "m.onnx"],
            &[],
        ),
        ("--transfer", &["missing.onnx", "special", "m.onnx,,"], &[]),
        ("--gradient", &["fd", "exact", "sideways"], &["fd", "exact"]),
        ("--no-such-flag", &["1"], &[]),
    ]);
    let v = *rng.pick(values);
    let e = if good.contains(&v) { Either } else { Refuse };
    (flag, v, e)
}

pub fn flags(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    fifo(&dir.join("special"));
    std::fs::write(dir.join("m.onnx"), dynamic_size().encode_to_vec()).unwrap();
    let (flag, value, expect) = hostile_flag(rng);
    let digit = s(&repo("onnx_models/digits/test/3/0030.png"));
    let cnn = s(&repo(CNN));
    // Flags of `measure` only go to `measure`; the model is the dynamic-size one for --size.
    let model = if flag == "--size" || rng.chance(0.3) {
        "m.onnx".to_string()
    } else {
        cnn
    };
    let measure_only = ["--bounds", "--limit", "--seed", "--transfer"].contains(&flag);
    let mut a = match rng.below(if measure_only { 1 } else { 4 }) {
        0 => {
            let m = *rng.pick(&["deepfool", "accuracy", "noise", "uap"]);
            let mut a = args(&["measure", m, &model, &digit, "-q"]);
            if m != "accuracy" {
                a.extend(args(&["-p", "max_iter=2"]));
            }
            if m == "noise" {
                a.extend(args(&["-p", "directions=2"]));
            }
            if m == "uap" {
                a.extend(args(&QUICK_UAP));
            }
            a
        }
        1 => args(&["inspect", &model]),
        _ => args(&["eval", &model, &digit, "-q"]),
    };
    if a[0] == "inspect" && ["--json"].contains(&flag) {
        a[0] = "eval".into();
        a.insert(2, digit.clone());
    }
    a.extend(args(&[flag, value]));
    if model == "m.onnx" && flag != "--size" {
        a.extend(args(&["--size", "28x28"]));
    }
    if flag != "--threads" {
        a.extend(args(&["--threads", "1"]));
    }
    if flag != "--ort-lib" && flag != "--backend" {
        a.extend(fx.backend(rng));
    } else {
        a.extend(args(&["--backend", "ort"]));
    }
    let what = format!("{flag} {value}");
    Case::new(a, expect, &[flag, value], what)
}
