//! Certified bounds (`georob::bound`, the `certify` measure) checked against the networks:
//! the lowered graphs compute PyTorch's logits, sampled points of a set stay inside every
//! tensor's bounds, and no image certified on the digits CNN is fooled by a strong attack
//! inside its ball.

use georob::attack::apgd::{apgd, ApgdOptions, Loss};
use georob::attack::deepfool::Norm;
use georob::bound::{BoundError, BoundNet, Bounds, InputSet, Interval, Method, Options};
use georob::measure::space::{Space, SpacedModel};
use georob::model::Model;
use rand::{Rng, SeedableRng};

use crate::common::*;

pub(crate) fn point(net: &BoundNet, x: &[f32]) -> Bounds {
    let set = InputSet::Box(Interval {
        lo: x.to_vec(),
        hi: x.to_vec(),
    });
    net.bounds(
        &set,
        &Options {
            method: Method::Ibp,
            budget: 0.0,
        },
    )
}

/// Samples `count` points of the box `[lo, hi]` (half of them vertices) and checks that each
/// stays inside every tensor's bounds `b` and that its margins are at least `margins`.
pub(crate) fn assert_contains(
    net: &BoundNet,
    b: &Bounds,
    margins: &[f64],
    k0: usize,
    (lo, hi): (&[f32], &[f32]),
    count: usize,
    what: &str,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for s in 0..count {
        let p: Vec<f32> = lo
            .iter()
            .zip(hi)
            .map(|(&l, &h)| {
                if s % 2 == 0 {
                    if rng.random::<bool>() {
                        l
                    } else {
                        h
                    }
                } else {
                    rng.random_range(l..=h)
                }
            })
            .collect();
        let at = point(net, &p);
        for (t, (bt, pt)) in b.tensors.iter().zip(&at.tensors).enumerate() {
            for e in 0..bt.lo.len() {
                assert!(
                    bt.lo[e] <= pt.hi[e] && pt.lo[e] <= bt.hi[e],
                    "{what}: tensor {t} element {e}: {} outside [{}, {}]",
                    pt.lo[e],
                    bt.lo[e],
                    bt.hi[e]
                );
            }
        }
        let z = &at.tensors[net.logits];
        for (r, j) in (0..z.lo.len()).filter(|&j| j != k0).enumerate() {
            let m = f64::from(z.hi[k0]) - f64::from(z.lo[j]);
            assert!(
                margins[r] <= m,
                "{what}: margin to {j}: bound {} above {m}",
                margins[r]
            );
        }
    }
}

/// Every reference network of `onnx_models/grad/` that lowers (all families but norms over
/// several axes, attention and the like) computes PyTorch's logits through the lowered graph,
/// and its interval and CROWN bounds over a box hold at 100 sampled points, at every tensor
/// (the architectures: interval bounds, 10 points).
/// The others fail with an error naming the operators.
#[test]
fn bounds_hold_on_the_reference_networks() {
    let dir = onnx_models("grad");
    let (mut checked, mut refused) = (vec![], vec![]);
    for name in grad_references() {
        let Ok((shape, x)) = read_npy_f32(&dir.join(format!("{name}.input.npy"))) else {
            continue;
        };
        let (_, logits) = npy_f32(&dir.join(format!("{name}.logits.npy")));
        let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
        let proto: tract_onnx::pb::ModelProto = prost::Message::decode(bytes.as_slice()).unwrap();
        let net = match BoundNet::from_onnx(&proto, &shape[1..]) {
            Ok(net) => net,
            Err(e @ (BoundError::MissingRules(_) | BoundError::Unsupported { .. })) => {
                refused.push(format!("{name}: {e}"));
                continue;
            }
            // A model tract itself cannot run (the gradient tests' negative pads).
            Err(e @ BoundError::Model(_)) => {
                eprintln!("not lowered: {name}: {e}");
                continue;
            }
        };
        let d: usize = shape[1..].iter().product();
        let k = net.classes();
        let u = &x[..d];
        let z = &point(&net, u).tensors[net.logits];
        for (j, &want) in logits.iter().enumerate().take(k) {
            let tol = 1e-4 * (1.0 + want.abs());
            assert!(
                z.lo[j] - tol <= want && want <= z.hi[j] + tol,
                "{name}: logit {j} is {want}, the lowered graph gives [{}, {}]",
                z.lo[j],
                z.hi[j]
            );
        }
        let k0 = (0..k).max_by(|&a, &b| z.lo[a].total_cmp(&z.lo[b])).unwrap();
        let spread = u.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        let eps = 0.02 * spread;
        let lo: Vec<f32> = u.iter().map(|v| v - eps).collect();
        let hi: Vec<f32> = u.iter().map(|v| v + eps).collect();
        let set = InputSet::Box(Interval {
            lo: lo.clone(),
            hi: hi.clone(),
        });
        // The architectures (this test runs unoptimised) get interval bounds and fewer points.
        let (methods, points): (&[Method], usize) = if name.starts_with("arch_") {
            (&[Method::Ibp], 10)
        } else {
            (&[Method::Ibp, Method::Crown], 100)
        };
        for &method in methods {
            let opts = Options {
                method,
                budget: 1e9,
            };
            let (margins, b) = net.margins(&set, k0, &opts);
            let what = format!("{name} {method:?}");
            assert_contains(&net, &b, &margins, k0, (&lo, &hi), points, &what);
        }
        checked.push(name);
    }
    eprintln!("checked {}: {}", checked.len(), checked.join(", "));
    for r in &refused {
        eprintln!("refused: {r}");
    }
    assert!(
        checked.len() >= 20,
        "only {} reference networks lowered",
        checked.len()
    );
    for r in &refused {
        assert!(
            r.contains("node `") || r.contains("node(s)"),
            "the refusal names no node: {r}"
        );
    }
}

/// On the first 12 digits, digits CNN, at ε = 0.01 and 0.03 (ℓ∞, in [0, 1]): the lowered graph computes
/// the model's logits, CROWN's bounds are within IBP's and hold at every tensor for sampled
/// points (300 per ε for the first image, 60 for the second), and no image CROWN certifies
/// is fooled by APGD (cross-entropy and targeted DLR, 100 steps) inside its ball.
#[test]
fn certified_digits_withstand_apgd_and_crown_is_tighter_than_ibp() {
    let model = digits_cnn();
    let data = digits(12);
    let x = data.load(&model.spec, 0, 12).unwrap().x;
    let proto = &model.runnable.proto;
    let net = BoundNet::from_onnx(proto, &model.spec.sample_shape()).unwrap();
    let logits = model.logits(&x, 12).unwrap();
    let sm = SpacedModel {
        model: &model,
        space: Space::Model,
    };
    let mut certified = 0;
    for eps in [0.01f32, 0.03] {
        let (mut cx, mut labels, mut targets) = (vec![], vec![], vec![]);
        for i in 0..12 {
            let u = &x[i * 784..(i + 1) * 784];
            let z = &logits[i * 10..(i + 1) * 10];
            let k0 = georob::attack::vector::argmax(z);
            let lo: Vec<f32> = u.iter().map(|v| (v - eps).max(0.0)).collect();
            let hi: Vec<f32> = u.iter().map(|v| (v + eps).min(1.0)).collect();
            let set = InputSet::Box(Interval {
                lo: lo.clone(),
                hi: hi.clone(),
            });
            let ibp_opts = Options {
                method: Method::Ibp,
                budget: 0.0,
            };
            let crown_opts = Options {
                method: Method::Crown,
                budget: 1e9,
            };
            // The lowered graph computes the model's logits.
            let at = &point(&net, u).tensors[net.logits];
            for (j, &zj) in z.iter().enumerate() {
                let tol = 1e-4 * (1.0 + zj.abs());
                let inside = at.lo[j] - tol <= zj && zj <= at.hi[j] + tol;
                assert!(inside, "image {i} logit {j}");
            }
            let (ibp, _) = net.margins(&set, k0, &ibp_opts);
            let (crown, b) = net.margins(&set, k0, &crown_opts);
            for (a, c) in ibp.iter().zip(&crown) {
                assert!(c >= a, "image {i} ε {eps}: CROWN {c} below IBP {a}");
            }
            if i < 2 {
                let what = format!("digit {i} ε {eps}");
                // 600 points over the two ε for the first image, every tensor checked at each.
                let points = if i == 0 { 300 } else { 60 };
                assert_contains(&net, &b, &crown, k0, (&lo, &hi), points, &what);
            }
            if crown.iter().all(|&m| m > 0.0) {
                cx.extend_from_slice(u);
                labels.push(k0);
                // The class with the smallest margin bound: the likeliest target.
                let r = (0..9)
                    .min_by(|&a, &b| crown[a].total_cmp(&crown[b]))
                    .unwrap();
                targets.push(if r < k0 { r } else { r + 1 });
            }
        }
        certified += labels.len();
        let seeds: Vec<u64> = (0..labels.len() as u64).collect();
        for loss in [Loss::Ce, Loss::DlrTargeted] {
            let opts = ApgdOptions {
                norm: Norm::Linf,
                eps,
                steps: 100,
                bounds: Some((0.0, 1.0)),
                loss,
            };
            let found = apgd(&sm, &cx, &labels, Some(&targets), &seeds, &opts).unwrap();
            for (f, l) in found.iter().zip(&labels) {
                assert!(
                    f.is_none(),
                    "ε {eps}: an image of class {l} is certified, but APGD ({loss:?}) fooled it"
                );
            }
        }
    }
    assert!(certified >= 12, "only {certified} certified");
}

/// Rotations of the digits CNN by ±2°: every image `certify` certifies keeps its prediction
/// over a 0.01° scan of the range (the grid's warp), and some are certified; the measure's
/// own 0.25° scan flags an image as falsified only where it found a flip.
#[test]
fn certified_rotation_ranges_survive_a_fine_scan() {
    use georob::measure::grid::RigidTransform;
    let warps: Vec<_> = spaced(2.0, 401)
        .into_iter()
        .map(|deg| {
            RigidTransform {
                theta: deg.to_radians(),
                tx: 0.0,
                ty: 0.0,
            }
            .matrix()
        })
        .collect();
    let params = serde_json::json!({"set": "rotation", "range": [2.0], "method": "crown"});
    let certified = certified_warps_hold(params, 6, 2.0, &warps);
    assert!(certified >= 3, "only {certified} of 6 certified for ±2°");
}

/// `-p vnnlib=true` writes one VNN-LIB property per image and radius left unknown, with the
/// ball's box on the 784 inputs and the "another class reaches the prediction" disjunction,
/// and lists them in `instances.csv`.
#[test]
fn vnnlib_properties_describe_the_unknown_cases() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = georob(&[
        "measure",
        "certify",
        "onnx_models/digits/digits_cnn.onnx",
        "onnx_models/digits/test_x.npy",
        "--labels",
        "onnx_models/digits/test_y.npy",
        "--bounds",
        "0,1",
        "--limit",
        "6",
        "-p",
        "eps=[0.01,0.08]",
        "-p",
        "vnnlib=true",
        "--out",
        out.to_str().unwrap(),
        "--json",
        dir.path().join("r.json").to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    let open: usize = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            ["0.01", "0.08"]
                .iter()
                .filter(|e| {
                    i.get(format!("certified@{e}")).and_then(|v| v.as_f64()) == Some(0.0)
                        && i.get(format!("falsified@{e}")).and_then(|v| v.as_f64()) != Some(1.0)
                })
                .count()
        })
        .sum();
    let csv = std::fs::read_to_string(out.join("certify_vnnlib/instances.csv")).unwrap();
    assert_eq!(csv.lines().count(), open, "{csv}");
    assert!(open > 0, "every case decided: nothing to export");
    let first = csv
        .lines()
        .next()
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(first).unwrap();
    assert_eq!(text.matches("(declare-const X_").count(), 784);
    assert_eq!(text.matches("(declare-const Y_").count(), 10);
    assert_eq!(text.matches("(and (>= Y_").count(), 9);
    for line in text.lines().filter(|l| l.starts_with("(assert (<= X_")) {
        let v: f32 = line
            .trim_end_matches("))")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..=1.0).contains(&v), "{line}");
    }
}

/// Runs `certify` with `params` on the first `n` digits and checks every image certified for
/// the range `r` against the oracle: the image warped by each matrix of `warps` (the
/// `transforms` warp the attacks use, zero fill) keeps its prediction. An image the measure
/// marks falsified must have a flip among them too (`warps` covers the measure's scan).
/// Returns how many images were certified.
fn certified_warps_hold(
    params: serde_json::Value,
    n: usize,
    r: f64,
    warps: &[transforms::nalgebra::Matrix3<f64>],
) -> usize {
    use transforms::{Batch, ImageLayout, ImageShape, MatrixWarp, Sampling, Warp};
    let model = digits_cnn();
    let data = digits(n);
    let res = try_run_measure("certify", &params, &model, &data, 0).unwrap();
    let x = data.load(&model.spec, 0, n).unwrap().x;
    let sampling = Sampling::new(Default::default(), "zero".parse().unwrap());
    let m = warps.len();
    let mut certified = 0;
    for img in &res.images {
        let flag = |k: &str| img.values.get(&format!("{k}@{r}")) == Some(&1.0);
        let u = &x[img.index * 784..(img.index + 1) * 784];
        let input: Vec<f32> = u.iter().copied().cycle().take(m * 784).collect();
        let batch = Batch::new(&input, ImageShape::new(m, 1, 28, 28), ImageLayout::Nchw).unwrap();
        let warped = MatrixWarp::new(warps.to_vec())
            .apply(&batch, sampling)
            .unwrap();
        let logits = model.logits(&warped, m).unwrap();
        let flips: Vec<usize> = logits
            .chunks_exact(10)
            .enumerate()
            .filter(|(_, z)| georob::attack::vector::argmax(z) != img.pred)
            .map(|(i, _)| i)
            .collect();
        if flag("certified") {
            certified += 1;
            assert!(
                flips.is_empty(),
                "image {}: certified for ±{r}, but {} of {m} warps flip it, e.g. {}",
                img.index,
                flips.len(),
                warps[flips[0]]
            );
        }
        if flag("falsified") {
            assert!(
                !flips.is_empty(),
                "image {}: falsified for ±{r}, but no warp of the fine scan flips it",
                img.index
            );
        }
    }
    certified
}

/// `count` evenly spaced values of `[−r, r]`, both ends included.
fn spaced(r: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| -r + 2.0 * r * i as f64 / (count - 1) as f64)
        .collect()
}

/// Translations of the digits CNN by ±0.3 px per axis: every image `certify` certifies keeps
/// its prediction over a 0.05 px grid of shifts and 300 random shifts of the square (the
/// grid attack's matrices), and some are certified.
#[test]
fn certified_translation_ranges_survive_a_fine_scan_and_random_shifts() {
    use georob::measure::grid::RigidTransform;
    let r = 0.3;
    let shift = |tx: f64, ty: f64| RigidTransform { theta: 0.0, tx, ty }.matrix();
    let mut warps: Vec<_> = spaced(r, 13)
        .iter()
        .flat_map(|&tx| spaced(r, 13).into_iter().map(move |ty| shift(tx, ty)))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    warps.extend((0..300).map(|_| shift(rng.random_range(-r..=r), rng.random_range(-r..=r))));
    let params = serde_json::json!({"set": "translation", "range": [r], "pieces": 24});
    let certified = certified_warps_hold(params, 3, r, &warps);
    assert!(
        certified >= 2,
        "only {certified} of 3 certified for ±{r} px"
    );
}

/// Scalings of the digits CNN by ±2 %: every image `certify` certifies keeps its prediction
/// at every factor of a 0.01 % scan and 100 random factors of the range (scaling matrices
/// built here, about the centre), and some are certified.
#[test]
fn certified_scaling_ranges_survive_a_fine_scan_and_random_factors() {
    let r = 2.0;
    let scale = |s: f64| {
        let k = 1.0 + s / 100.0;
        transforms::nalgebra::Matrix3::new(k, 0.0, 0.0, 0.0, k, 0.0, 0.0, 0.0, 1.0)
    };
    let mut warps: Vec<_> = spaced(r, 401).into_iter().map(scale).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    warps.extend((0..100).map(|_| scale(rng.random_range(-r..=r))));
    let params = serde_json::json!({"set": "scaling", "range": [r], "pieces": 24});
    let certified = certified_warps_hold(params, 3, r, &warps);
    assert!(certified >= 2, "only {certified} of 3 certified for ±{r} %");
}

/// Bad parameters of the warps are refused with a message naming the parameter.
#[test]
fn certify_refuses_bad_warp_parameters() {
    for (params, word) in [
        (
            serde_json::json!({"set": "translation", "range": [-1.0]}),
            "range",
        ),
        (
            serde_json::json!({"set": "translation", "range": []}),
            "range",
        ),
        (
            serde_json::json!({"set": "scaling", "range": [100.0]}),
            "scaling",
        ),
        (
            serde_json::json!({"set": "translation", "eps": [0.1]}),
            "range",
        ),
        (serde_json::json!({"set": "linf", "range": [1.0]}), "range"),
        (
            serde_json::json!({"set": "translation", "shift": 1.0}),
            "shift",
        ),
        (
            serde_json::json!({"set": "similarity", "shift": -1.0}),
            "shift",
        ),
        (
            serde_json::json!({"set": "similarity", "scale": 150.0}),
            "scale",
        ),
        (serde_json::json!({"set": "scaling", "scan": 0.0}), "scan"),
        (serde_json::json!({"set": "l2", "linear": true}), "linear"),
    ] {
        match georob::measure::build("certify", &params) {
            Err(georob::Error::Config(m)) => assert!(m.contains(word), "{params}: {m}"),
            Err(e) => panic!("{params}: not a configuration error: {e}"),
            Ok(_) => panic!("{params}: accepted"),
        }
    }
}

/// The joint box of `similarity` (±0.3° with ±0.1 px and ±0.5 %): every image certified keeps
/// its prediction at the box's 81 points of a 3⁴ grid and 400 random points (matrices
/// built here: shift · scale · rotation), and some are certified.
#[test]
fn certified_similarity_boxes_survive_random_points() {
    let (r, t, s) = (0.3f64, 0.1, 0.5);
    let matrix = |p: [f64; 4]| {
        let (sin, cos) = p[0].to_radians().sin_cos();
        let k = 1.0 + p[3] / 100.0;
        let rot = transforms::nalgebra::Matrix3::new(cos, -sin, 0.0, sin, cos, 0.0, 0.0, 0.0, 1.0);
        let scale = transforms::nalgebra::Matrix3::new(k, 0.0, 0.0, 0.0, k, 0.0, 0.0, 0.0, 1.0);
        let shift =
            transforms::nalgebra::Matrix3::new(1.0, 0.0, p[1], 0.0, 1.0, p[2], 0.0, 0.0, 1.0);
        shift * scale * rot
    };
    let half = [r, t, t, s];
    let mut warps: Vec<_> = (0..81)
        .map(|g| {
            matrix(std::array::from_fn(|i| {
                half[i] * ((g / 3usize.pow(i as u32)) % 3) as f64 - half[i]
            }))
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    warps.extend((0..400).map(|_| {
        matrix(std::array::from_fn(|i| {
            rng.random_range(-half[i]..=half[i])
        }))
    }));
    let params = serde_json::json!({"set": "similarity", "range": [r], "shift": t, "scale": s, "pieces": 16});
    let certified = certified_warps_hold(params, 2, r, &warps);
    assert!(
        certified >= 1,
        "none of 2 certified for ±{r}° with ±{t} px and ±{s} %"
    );
}

/// CROWN over a linear input set (the pixels of warped images, linear in the warp
/// parameters): on a digit and a box of shifts and scales, no margin lower bound lies above a
/// margin the model computes at 200 random warps of the box, and the bounds are at least
/// those over the pixel box alone (and above them somewhere).
#[test]
fn linear_warp_sets_bound_the_margins_of_warped_digits() {
    use transforms::{Batch, ImageLayout, ImageShape, MatrixWarp, ParamBox, Sampling, Warp};
    let model = digits_cnn();
    let data = digits(1);
    let x = data.load(&model.spec, 0, 1).unwrap().x;
    let net = BoundNet::from_onnx(&model.runnable.proto, &model.spec.sample_shape()).unwrap();
    let sampling = Sampling::new(Default::default(), "zero".parse().unwrap());
    let pbox = ParamBox::identity()
        .with(ParamBox::TX, -0.4, 0.3)
        .with(ParamBox::TY, -0.2, 0.3)
        .with(ParamBox::SCALE, -0.02, 0.01);
    let lb = transforms::warp_linear_bounds(&x, (1, 28, 28), &pbox, sampling).unwrap();
    let round = |v: &[f64]| -> Vec<f32> { v.iter().map(|&a| a as f32).collect() };
    let center = round(&lb.center);
    // The rounding of the centre and coefficients to f32, moved into the residual.
    let slop = |i: usize| {
        1e-6 * (1.0 + lb.center[i].abs() + lb.gens.iter().map(|g| g[i].abs()).sum::<f64>())
    };
    let linear = InputSet::Linear {
        center: center.clone(),
        gens: lb.gens.iter().map(|g| round(g)).collect(),
        err: Interval {
            lo: (0..784)
                .map(|i| (lb.err_lo[i] + lb.center[i] - f64::from(center[i]) - slop(i)) as f32)
                .collect(),
            hi: (0..784)
                .map(|i| (lb.err_hi[i] + lb.center[i] - f64::from(center[i]) + slop(i)) as f32)
                .collect(),
        },
        clip: Interval {
            lo: lb.lo.clone(),
            hi: lb.hi.clone(),
        },
    };
    let pixels = InputSet::Box(Interval {
        lo: lb.lo.clone(),
        hi: lb.hi.clone(),
    });
    let k0 = georob::attack::vector::argmax(&model.logits(&x, 1).unwrap());
    let opts = Options {
        method: Method::Crown,
        budget: 1e9,
    };
    let (lower, _) = net.margins(&linear, k0, &opts);
    let (over_box, _) = net.margins(&pixels, k0, &opts);
    for (l, b) in lower.iter().zip(&over_box) {
        assert!(
            l >= b,
            "linear set's margin bound {l} below the pixel box's {b}"
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let n = 200;
    let warps: Vec<_> = (0..n)
        .map(|_| {
            let p: [f64; 4] = std::array::from_fn(|i| rng.random_range(pbox.lo[i]..=pbox.hi[i]));
            transforms::similarity_matrix(p[0], p[1], p[2], p[3])
        })
        .collect();
    let input: Vec<f32> = x.iter().copied().cycle().take(n * 784).collect();
    let batch = Batch::new(&input, ImageShape::new(n, 1, 28, 28), ImageLayout::Nchw).unwrap();
    let warped = MatrixWarp::new(warps).apply(&batch, sampling).unwrap();
    let logits = model.logits(&warped, n).unwrap();
    for z in logits.chunks_exact(10) {
        let tol = 1e-4 * (1.0 + z.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64);
        for (r, j) in (0..10).filter(|&j| j != k0).enumerate() {
            let m = f64::from(z[k0]) - f64::from(z[j]);
            assert!(
                lower[r] <= m + tol,
                "margin to {j}: bound {} above {m}",
                lower[r]
            );
        }
    }
}

/// A model with an operator that has no bound rule (`Erf` after a linear layer) is audited,
/// not refused: nothing is certified, `bounded` is 0 with the operator named in
/// `extra.not_bounded`, and the attack (balls) or the scan (warps) still falsifies: a flip the
/// scan reports is a real one, checked by warping and classifying again.
#[test]
fn a_model_without_bound_rules_certifies_nothing_and_still_falsifies() {
    use prost::Message;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let w: Vec<f32> = (0..7840).map(|_| rng.random_range(-0.1..0.1)).collect();
    let proto = classifier(
        "erf_head",
        vec![
            node("Flatten", "flat", &["input"], "f"),
            node("MatMul", "mm", &["f", "W"], "z"),
            node("Erf", "erf", &["z"], "logits"),
        ],
        vec![tensor("W", &[784, 10], &w)],
        &[None, Some(1), Some(28), Some(28)],
        &[None, Some(10)],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("erf_head.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let model = georob::model::Model::open(&path, &tract()).unwrap();
    let data = digits(60);
    for params in [
        serde_json::json!({ "set": "linf", "eps": [0.5] }),
        serde_json::json!({ "set": "rotation", "range": [30.0] }),
    ] {
        let res = try_run_measure("certify", &params, &model, &data, 0).unwrap();
        let ball = params["set"] == "linf";
        assert_eq!(res.summary["bounded"], 0.0, "{params}");
        let why = res.extra["not_bounded"].as_str().unwrap_or_default();
        assert!(why.contains("Erf (node `erf`)"), "{params}: {why}");
        let key = res
            .summary
            .keys()
            .find(|k| k.starts_with("certified_accuracy@"))
            .unwrap();
        assert_eq!(res.summary[key], 0.0, "{params}");
        // At ε = 0.5 (half the pixel range) the random head is fooled on nearly every image it
        // classifies correctly; within ±30° it flips some of them (5 of 8 here).
        let correct: Vec<_> = res
            .images
            .iter()
            .filter(|i| i.outcome != georob::measure::Outcome::Misclassified)
            .collect();
        let falsified = correct
            .iter()
            .filter(|i| {
                i.values
                    .iter()
                    .any(|(k, v)| k.starts_with("falsified@") && v == 1.0)
            })
            .count();
        assert!(
            correct.len() >= 3 && falsified * 5 >= correct.len() * if ball { 4 } else { 1 },
            "{params}: {falsified} of {} correct images falsified",
            correct.len()
        );
    }
}

/// The largest ε of `[0, top]` (to 1/256 of `top`) at which CROWN bounds every margin of
/// class `k0` above zero over the ℓ∞ ball around `u`, if any.
pub(crate) fn largest_certified(net: &BoundNet, u: &[f32], k0: usize, top: f32) -> Option<f32> {
    let opts = Options {
        method: Method::Crown,
        budget: 1e9,
    };
    let certified = |eps: f32| {
        let set = InputSet::Box(Interval {
            lo: u.iter().map(|v| v - eps).collect(),
            hi: u.iter().map(|v| v + eps).collect(),
        });
        net.margins(&set, k0, &opts).0.iter().all(|&m| m > 0.0)
    };
    let (mut lo, mut hi) = (0.0f32, top);
    if certified(hi) {
        return Some(hi);
    }
    for _ in 0..8 {
        let mid = 0.5 * (lo + hi);
        if certified(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo > 0.0).then_some(lo)
}

/// Whether ℓ∞ APGD with five random restarts (cross-entropy, and targeted DLR towards the class
/// of the smallest logit gap; 100 steps each) finds a point within `radius` of `u`, whose
/// logits are `z`, that changes the model's prediction.
pub(crate) fn apgd_with_restarts_fools(model: &Model, u: &[f32], z: &[f32], radius: f32) -> bool {
    let k0 = georob::attack::vector::argmax(z);
    let target = (0..z.len())
        .filter(|&j| j != k0)
        .min_by(|&a, &b| (z[k0] - z[a]).total_cmp(&(z[k0] - z[b])))
        .unwrap();
    let sm = SpacedModel {
        model,
        space: Space::Model,
    };
    (0..5u64).any(|seed| {
        [Loss::Ce, Loss::DlrTargeted].into_iter().any(|loss| {
            let opts = ApgdOptions {
                norm: Norm::Linf,
                eps: radius,
                steps: 100,
                bounds: None,
                loss,
            };
            let found = apgd(&sm, u, &[k0], Some(&[target]), &[seed], &opts).unwrap();
            found[0].is_some()
        })
    })
}

/// On every reference network of `onnx_models/grad/` that lowers (one per supported operator
/// and variant; the architectures excepted), at the largest ℓ∞ radius CROWN certifies for its
/// first input, APGD with five random restarts (cross-entropy and targeted DLR, 100 steps)
/// finds no point of the ball that changes the prediction. At four times that radius the
/// same attack does fool some of the networks, so it is strong enough to notice a bound that
/// is too tight.
#[test]
fn certified_balls_of_the_reference_networks_withstand_apgd_with_restarts() {
    let dir = onnx_models("grad");
    let (mut attacked, mut fooled_beyond) = (vec![], 0);
    for name in grad_references() {
        if name.starts_with("arch_") {
            continue;
        }
        let Ok((shape, x)) = read_npy_f32(&dir.join(format!("{name}.input.npy"))) else {
            continue;
        };
        let path = dir.join(format!("{name}.onnx"));
        let Ok(model) = Model::open(&path, &tract()) else {
            continue;
        };
        let Ok(net) = BoundNet::from_onnx(&model.runnable.proto, &shape[1..]) else {
            continue;
        };
        let d: usize = shape[1..].iter().product();
        let u = &x[..d];
        let z = model.logits(u, 1).unwrap();
        let k0 = georob::attack::vector::argmax(&z);
        let spread = u.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        let Some(eps) = largest_certified(&net, u, k0, 0.2 * spread) else {
            continue;
        };
        let fooled_at = |radius: f32| apgd_with_restarts_fools(&model, u, &z, radius);
        assert!(
            !fooled_at(eps),
            "{name}: certified at ε = {eps}, but APGD changed the prediction inside the ball"
        );
        if fooled_at(4.0 * eps) {
            fooled_beyond += 1;
        }
        attacked.push(format!("{name} (ε {eps:.3e})"));
    }
    eprintln!(
        "attacked {}, fooled at 4 ε: {fooled_beyond}: {}",
        attacked.len(),
        attacked.join(", ")
    );
    assert!(
        attacked.len() >= 20,
        "only {} reference networks certified",
        attacked.len()
    );
    assert!(
        fooled_beyond >= attacked.len() / 4,
        "APGD fooled only {fooled_beyond} of {} networks at 4× the certified radius",
        attacked.len()
    );
}
