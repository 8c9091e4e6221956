//! Data cases: `.npy` tensors and labels, PNG and JPEG images, ImageFolders and CSV
//! manifests.

use std::path::Path;

use super::{args, s, Case, Expect, Fixtures};
use crate::common::{bit_flipped, repo, truncated, Rng};
use crate::hostile::{fifo, npy_claiming, npy_with_header, CNN};

/// A georob call on the digits CNN with `data` (and `extra` arguments).
fn on_cnn(rng: &mut Rng, fx: &Fixtures, data: &str, extra: &[&str]) -> Vec<String> {
    let cnn = s(&repo(CNN));
    let mut a = match rng.below(4) {
        0 => args(&["measure", "deepfool", &cnn, data, "-p", "max_iter=3", "-q"]),
        _ => args(&["eval", &cnn, data, "-q"]),
    };
    a.extend(args(extra));
    a.extend(fx.backend(rng));
    a.extend(args(&["--threads", "1"]));
    a
}

/// A file that never ends or never opens: `/dev/zero` through a link, or a FIFO.
fn special(rng: &mut Rng, path: &Path) -> &'static str {
    if rng.chance(0.5) {
        std::os::unix::fs::symlink("/dev/zero", path).unwrap();
        "a link to /dev/zero"
    } else {
        fifo(path);
        "a FIFO"
    }
}

/// A hostile dimension for a `.npy` header.
fn npy_dim(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => 1 << rng.below(64),
        2 => u64::MAX,
        3 => 28,
        _ => 1 + rng.below(4) as u64,
    }
}

pub fn npy(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    use Expect::{Either, Refuse};
    let x = dir.join("x.npy");
    std::fs::write(&x, &fx.x_npy).unwrap();
    std::fs::write(dir.join("y.npy"), &fx.y_npy).unwrap();
    let mut labels = rng.chance(0.5);
    let (expect, what, name) = match rng.below(9) {
        0 => {
            let shape: Vec<u64> = (0..rng.below(6)).map(|_| npy_dim(rng)).collect();
            let bytes = *rng.pick(&[0usize, 64, 6272, 100_000]);
            let n = shape
                .iter()
                .try_fold(4u128, |n, &d| n.checked_mul(d.into()));
            let fits = shape.len() == 4
                && shape[1..] == [1, 28, 28]
                && shape[0] > 0
                && n.is_some_and(|n| n <= bytes as u128);
            npy_claiming(&x, &shape, bytes);
            labels = false;
            let expect = if fits { Either } else { Refuse };
            (
                expect,
                format!("shape {shape:?} over {bytes} bytes"),
                "x.npy",
            )
        }
        1 => {
            let descr = *rng.pick(&[
                "<f8", "<i4", "|u1", ">f4", "<f2", "|O", "<c8", "<U3", "zz", "|b1",
            ]);
            let fortran = *rng.pick(&["False", "True", "None", "1"]);
            let dict = format!(
                "{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': (2, 1, 28, 28), }}"
            );
            npy_with_header(&x, &dict, 2 * 784 * 16);
            (
                Either,
                format!("descr {descr}, fortran_order {fortran}"),
                "x.npy",
            )
        }
        2 => {
            let dict = rng.pick(&[
                "{'descr': '<f4', 'shape': (2, 1, 28, 28), }",
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 28, 28, }",
                "not a dict at all",
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 1, 28, 28), }",
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5, 1, 28, 28), }",
                "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 1, 28, 28], 'shape': (1,), }",
                "",
            ]);
            npy_with_header(&x, dict, 2 * 784 * 4);
            (Either, format!("header {dict:?}"), "x.npy")
        }
        3 => {
            let cut = truncated(&fx.x_npy, rng);
            std::fs::write(&x, &cut).unwrap();
            (Refuse, format!("cut to {} bytes", cut.len()), "x.npy")
        }
        4 => {
            std::fs::write(&x, bit_flipped(&fx.x_npy, 128, rng)).unwrap();
            (Either, "header bits flipped".into(), "x.npy")
        }
        5 => {
            let mut v = vec![0.5f32; 2 * 784];
            let bad = *rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
            let k = rng.below(v.len());
            v[k] = bad;
            crate::common::write_npy_f32(&x, &[2, 1, 28, 28], &v);
            (Refuse, format!("a {bad} value"), "x.npy")
        }
        6 => {
            std::fs::remove_file(&x).unwrap();
            let w = special(rng, &x);
            (Refuse, w.into(), "x.npy")
        }
        7 => {
            // Labels that do not fit the data.
            labels = true;
            let y = dir.join("y.npy");
            let what = match rng.below(5) {
                0 => {
                    crate::common::write_npy_i64(&y, &[1]);
                    "one label for two images".to_string()
                }
                1 => {
                    crate::common::write_npy_i64(&y, &[1, 2, 3]);
                    "three labels for two images".into()
                }
                2 => {
                    npy_claiming(&y, &[2], 8);
                    "float labels".into()
                }
                3 => {
                    npy_claiming(&y, &[1 << 62], 16);
                    "labels claiming 2^62 values".into()
                }
                _ => {
                    std::fs::remove_file(&y).unwrap();
                    special(rng, &y).into()
                }
            };
            (Refuse, what, "y.npy")
        }
        _ => {
            // Labels out of the classes' range: a result or a refusal.
            labels = true;
            let l = *rng.pick(&[-1i64, 10, 1 << 40, i64::MIN]);
            crate::common::write_npy_i64(&dir.join("y.npy"), &[l, 0]);
            (Either, format!("label {l}"), "y.npy")
        }
    };
    let extra: &[&str] = if labels { &["--labels", "y.npy"] } else { &[] };
    let call = on_cnn(rng, fx, "x.npy", extra);
    let names: &[&str] = if name == "y.npy" {
        &["y.npy", "--labels"]
    } else {
        &["x.npy"]
    };
    Case::new(call, expect, names, what)
}

/// CRC-32 (IEEE) of `bytes`, as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
        }
    }
    !c
}

/// A PNG chunk of type `kind` holding `data`.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&[&kind[..], data].concat());
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A PNG whose header claims `w × h` pixels of `depth` bits and `color` type, with a few
/// bytes of image data.
fn png_claiming(w: u32, h: u32, depth: u8, color: u8, rng: &mut Rng) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    // A zlib stream of a few zero bytes, or noise.
    let idat = if rng.chance(0.5) {
        vec![0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]
    } else {
        rng.bytes(64)
    };
    out.extend(chunk(b"IDAT", &idat));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A JPEG start claiming `w × h` pixels, then noise.
fn jpeg_claiming(w: u16, h: u16, rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x08];
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x01, 0x11, 0x00]);
    out.extend(rng.some_bytes(200));
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The digit re-encoded: 16-bit, RGBA, RGB, or scaled up.
fn reencoded(rng: &mut Rng, png: &[u8]) -> (Vec<u8>, String) {
    let img = image::load_from_memory(png).unwrap();
    let (img, what) = match rng.below(4) {
        0 => (
            image::DynamicImage::ImageLuma16(img.to_luma16()),
            "16-bit gray",
        ),
        1 => (image::DynamicImage::ImageRgba8(img.to_rgba8()), "RGBA"),
        2 => (image::DynamicImage::ImageRgb8(img.to_rgb8()), "RGB"),
        _ => (
            img.resize_exact(
                1 + rng.below(300) as u32,
                1 + rng.below(300) as u32,
                image::imageops::FilterType::Nearest,
            ),
            "resized",
        ),
    };
    let mut out = vec![];
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    (out, what.into())
}

/// Hostile image bytes: what they are, whether they must be refused.
fn hostile_image(rng: &mut Rng, fx: &Fixtures) -> (Vec<u8>, Expect, String) {
    use Expect::{Either, Refuse};
    let pick = rng.below(3);
    let (bytes, kind) = match pick {
        0 => (&fx.png, "PNG"),
        1 => (&fx.jpeg, "JPEG"),
        _ => (&fx.photo, "photo JPEG"),
    };
    match rng.below(7) {
        0 | 1 => {
            let cut = truncated(bytes, rng);
            let what = format!("{kind} cut to {} of {} bytes", cut.len(), bytes.len());
            (cut, Refuse, what)
        }
        2 => (
            bit_flipped(bytes, bytes.len(), rng),
            Either,
            format!("{kind} with bits flipped"),
        ),
        3 => {
            let mut b = rng.some_bytes(3000);
            if rng.chance(0.5) {
                b.splice(0..0, bytes[..16].iter().copied());
            }
            (b, Refuse, "random bytes".into())
        }
        4 => {
            let (w, h) = (
                *rng.pick(&[0u32, 1, 65_535, 100_000, 1 << 31, u32::MAX]),
                *rng.pick(&[0u32, 1, 50_000, 1 << 31]),
            );
            let depth = *rng.pick(&[1u8, 8, 16, 3, 0]);
            let color = *rng.pick(&[0u8, 2, 3, 4, 6, 7]);
            (
                png_claiming(w, h, depth, color, rng),
                Refuse,
                format!("PNG claiming {w}×{h}, depth {depth}, color {color}"),
            )
        }
        5 => {
            let (w, h) = (*rng.pick(&[0u16, 1, 65_535]), *rng.pick(&[0u16, 1, 65_535]));
            (
                jpeg_claiming(w, h, rng),
                Refuse,
                format!("JPEG claiming {w}×{h}"),
            )
        }
        _ => {
            let (b, what) = reencoded(rng, &fx.png);
            (b, Either, what)
        }
    }
}

pub fn image(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    let ext = *rng.pick(&["png", "jpg", "jpeg", "PNG"]);
    let name = format!("img.{ext}");
    let path = dir.join(&name);
    let (expect, what) = if rng.chance(0.08) {
        (Expect::Refuse, special(rng, &path).to_string())
    } else {
        let (bytes, expect, what) = hostile_image(rng, fx);
        std::fs::write(&path, bytes).unwrap();
        (expect, what)
    };
    let call = on_cnn(rng, fx, &name, &[]);
    Case::new(call, expect, &[&name], what)
}

/// An ImageFolder `imgs/` of a few good digits with one hostile entry.
pub fn folder(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    use Expect::{Either, Refuse};
    let root = dir.join("imgs");
    let classes = 1 + rng.below(3);
    for c in 0..classes {
        std::fs::create_dir_all(root.join(c.to_string())).unwrap();
        for k in 0..1 + rng.below(2) {
            std::fs::write(root.join(format!("{c}/{k}.png")), &fx.png).unwrap();
        }
    }
    let (expect, what, name): (Expect, String, String) = match rng.below(8) {
        0 => {
            let (bytes, expect, what) = hostile_image(rng, fx);
            std::fs::write(root.join("0/bad.png"), bytes).unwrap();
            (expect, what, "bad.png".into())
        }
        1 => {
            let w = special(rng, &root.join("0/bad.png"));
            (Refuse, w.into(), "bad.png".into())
        }
        2 => {
            // A link back up: a cycle for a walk that follows links.
            let to = rng.pick(&["..", ".", "/", "../.."]);
            std::os::unix::fs::symlink(to, root.join("0/loop")).unwrap();
            (Either, format!("a link to {to}"), "loop".into())
        }
        3 => {
            let name = rng.pick(&[
                "-1",
                "99999999999999999999",
                "abc",
                "ünï",
                " 3",
                "1e3",
                "10",
                ".hidden",
            ]);
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(format!("{name}/x.png")), &fx.png).unwrap();
            (Either, format!("a class folder {name:?}"), name.to_string())
        }
        4 => {
            let labels = root.join("labels.txt");
            let what = match rng.below(5) {
                0 => {
                    std::fs::write(&labels, rng.bytes(200)).unwrap();
                    "binary labels.txt"
                }
                1 => {
                    std::fs::write(&labels, "").unwrap();
                    "an empty labels.txt"
                }
                2 => {
                    std::fs::write(&labels, "a\n".repeat(100_000)).unwrap();
                    "100,000 labels"
                }
                3 => {
                    std::fs::write(&labels, "0\n0\n0\n").unwrap();
                    "the same name thrice"
                }
                _ => {
                    special(rng, &labels);
                    "a special labels.txt"
                }
            };
            (Either, what.into(), "labels.txt".into())
        }
        5 => {
            std::fs::remove_dir_all(&root).unwrap();
            std::fs::create_dir_all(root.join("0/1/2/3")).unwrap();
            (Refuse, "no images, nested folders".into(), "imgs".into())
        }
        6 => {
            let junk = rng.pick(&["notes.txt", "x.npy", "y.csv", "z.gif", "w.png.bak"]);
            std::fs::write(root.join(format!("0/{junk}")), rng.bytes(100)).unwrap();
            (Either, format!("a file {junk}"), junk.to_string())
        }
        _ => {
            std::fs::write(root.join("0/empty.png"), b"").unwrap();
            (Refuse, "an empty image".into(), "empty.png".into())
        }
    };
    let call = on_cnn(rng, fx, "imgs", &[]);
    Case::new(call, expect, &[&name, "imgs"], what)
}

/// A CSV manifest `list.csv` of good digits with hostile rows.
pub fn manifest(_: usize, rng: &mut Rng, dir: &Path, fx: &Fixtures) -> Case {
    use Expect::{Either, Refuse};
    std::fs::write(dir.join("a.png"), &fx.png).unwrap();
    let mut rows = vec!["path,label".to_string(), "a.png,3".into()];
    let (expect, what, name): (Expect, String, String) = match rng.below(10) {
        0 => {
            rows.push("missing.png,1".into());
            (Refuse, "a missing image".into(), "missing.png".into())
        }
        1 => {
            let l = *rng.pick(&["x", "1.5", "", "99999999999999999999999", "NaN", "-"]);
            rows.push(format!("a.png,{l}"));
            (Refuse, format!("label {l:?}"), "list.csv".into())
        }
        2 => {
            let l = *rng.pick(&["-1", "10", "1000000"]);
            rows.push(format!("a.png,{l}"));
            (Either, format!("label {l}"), "list.csv".into())
        }
        3 => {
            let row = *rng.pick(&["a.png", "a.png,1,2", ",", "\"a.png,1", "a.png;1"]);
            rows.push(row.into());
            (Either, format!("row {row:?}"), "list.csv".into())
        }
        4 => {
            rows.truncate(rng.below(2));
            (Refuse, format!("{} rows", rows.len()), "list.csv".into())
        }
        5 => {
            special(rng, &dir.join("dev.png"));
            rows.push("dev.png,1".into());
            (Refuse, "a special image".into(), "dev.png".into())
        }
        6 => {
            let p = rng.pick(&["../a.png", "/", ".", "sub/../a.png", "a.png/"]);
            rows.push(format!("{p},1"));
            (Either, format!("path {p:?}"), "list.csv".into())
        }
        7 => {
            std::fs::write(dir.join("list.csv"), rng.some_bytes(500)).unwrap();
            let call = on_cnn(rng, fx, "list.csv", &[]);
            return Case::new(call, Refuse, &["list.csv"], "binary manifest");
        }
        8 => {
            rows[1] = format!("\u{feff}{}", rows[1]);
            rows.push(format!("{},1", "x".repeat(1 << (8 + rng.below(12)))));
            (Refuse, "a BOM and a long path".into(), "list.csv".into())
        }
        _ => {
            let w = special(rng, &dir.join("list.csv"));
            let call = on_cnn(rng, fx, "list.csv", &[]);
            return Case::new(call, Refuse, &["list.csv"], w);
        }
    };
    std::fs::write(dir.join("list.csv"), rows.join("\n")).unwrap();
    let call = on_cnn(rng, fx, "list.csv", &[]);
    Case::new(call, expect, &[&name, "list.csv"], what)
}
