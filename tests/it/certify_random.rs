//! Random small networks built from every operator that has a bound rule: the lowered graph
//! computes the model's logits, interval and CROWN bounds hold at sampled points of a box at
//! every tensor, and no ball CROWN certifies is broken by APGD with restarts.

use georob::bound::{BoundNet, InputSet, Interval, Method, Options};
use georob::measure::grid::RigidTransform;
use georob::model::Model;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};
use transforms::nalgebra::Matrix3;
use transforms::{
    warp_bounds, Batch, ImageLayout, ImageShape, MatrixWarp, ParamBox, Sampling, Warp,
};

use crate::certify::{apgd_with_restarts_fools, assert_contains, largest_certified, point};
use crate::common::*;

/// The operators the random networks draw from: every one with a bound rule.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Conv,
    Relu,
    LeakyRelu,
    Sigmoid,
    HardSigmoid,
    HardSwish,
    Clip,
    Identity,
    AddConst,
    SubConst,
    MulConst,
    DivConst,
    BatchNorm,
    MaxPool,
    AveragePool,
    GlobalAveragePool,
    Pad,
    Slice,
    Transpose,
    Concat,
    Reshape,
}

const OPS: [Op; 21] = [
    Op::Conv,
    Op::Relu,
    Op::LeakyRelu,
    Op::Sigmoid,
    Op::HardSigmoid,
    Op::HardSwish,
    Op::Clip,
    Op::Identity,
    Op::AddConst,
    Op::SubConst,
    Op::MulConst,
    Op::DivConst,
    Op::BatchNorm,
    Op::MaxPool,
    Op::AveragePool,
    Op::GlobalAveragePool,
    Op::Pad,
    Op::Slice,
    Op::Transpose,
    Op::Concat,
    Op::Reshape,
];

/// The input of every random network: `(N, 3, 5, 5)`.
const INPUT: [usize; 3] = [3, 5, 5];
const CLASSES: usize = 10;

/// Builds one random network: nodes, initializers, the current tensor and its `(C, H, W)`.
struct Net {
    rng: StdRng,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    cur: String,
    shape: [usize; 3],
    count: usize,
}

impl Net {
    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{what}{}", self.count)
    }

    /// A random float initializer of `dims`, uniform in `[lo, hi]`.
    fn weights(&mut self, dims: &[usize], lo: f32, hi: f32) -> String {
        let name = self.name("w");
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.rng.random_range(lo..=hi)).collect();
        self.inits.push(tensor(&name, dims, &data));
        name
    }

    fn ints(&mut self, values: &[i64]) -> String {
        let name = self.name("i");
        self.inits.push(int64s(&name, values));
        name
    }

    /// Appends `op` on `inputs` with `attrs`; its output becomes the current tensor.
    fn push(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) {
        let out = self.name("t");
        let mut n = node(op, &format!("node_{out}"), inputs, &out);
        n.attribute = attrs;
        self.nodes.push(n);
        self.cur = out;
    }

    /// Whether `op` applies to the current shape.
    fn fits(&self, op: Op) -> bool {
        let [_, h, w] = self.shape;
        match op {
            Op::MaxPool | Op::AveragePool => h >= 2 && w >= 2,
            Op::Slice => w >= 2,
            Op::Pad | Op::Concat => self.shape.iter().product::<usize>() <= 100,
            _ => true,
        }
    }

    fn apply(&mut self, op: Op) {
        let [c, h, w] = self.shape;
        let y = self.cur.clone();
        let per_channel = [c, 1, 1];
        match op {
            Op::Conv => {
                let out = self.rng.random_range(2..=4);
                let s = 1.5 / ((9 * c) as f32).sqrt();
                let k = self.weights(&[out, c, 3, 3], -s, s);
                let b = self.weights(&[out], -0.2, 0.2);
                self.push("Conv", &[&y, &k, &b], vec![ints_attr("pads", &[1; 4])]);
                self.shape = [out, h, w];
            }
            Op::Relu | Op::Sigmoid | Op::HardSigmoid | Op::HardSwish | Op::Identity => {
                self.push(&format!("{op:?}"), &[&y], vec![]);
            }
            Op::LeakyRelu => self.push("LeakyRelu", &[&y], vec![float_attr("alpha", 0.1)]),
            Op::Clip => {
                let lo = self.name("lo");
                let hi = self.name("hi");
                self.inits.push(tensor(&lo, &[], &[-0.5]));
                self.inits.push(tensor(&hi, &[], &[0.8]));
                self.push("Clip", &[&y, &lo, &hi], vec![]);
            }
            Op::AddConst | Op::SubConst | Op::MulConst => {
                let k = self.weights(&per_channel, -1.0, 1.0);
                let name = &format!("{op:?}")[..3];
                self.push(name, &[&y, &k], vec![]);
            }
            Op::DivConst => {
                let k = self.weights(&per_channel, 0.5, 2.0);
                self.push("Div", &[&y, &k], vec![]);
            }
            Op::BatchNorm => {
                let scale = self.weights(&[c], 0.5, 1.5);
                let bias = self.weights(&[c], -0.3, 0.3);
                let mean = self.weights(&[c], -0.3, 0.3);
                let var = self.weights(&[c], 0.5, 2.0);
                let inputs = [y.as_str(), &scale, &bias, &mean, &var];
                self.push("BatchNormalization", &inputs, vec![]);
            }
            Op::MaxPool | Op::AveragePool => {
                let attrs = vec![ints_attr("kernel_shape", &[2, 2])];
                self.push(&format!("{op:?}"), &[&y], attrs);
                self.shape = [c, h - 1, w - 1];
            }
            Op::GlobalAveragePool => {
                self.push("GlobalAveragePool", &[&y], vec![]);
                self.shape = [c, 1, 1];
            }
            Op::Pad => {
                let pads = self.ints(&[0, 0, 1, 0, 0, 0, 0, 1]);
                let value = self.name("v");
                self.inits.push(tensor(&value, &[], &[0.3]));
                self.push("Pad", &[&y, &pads, &value], vec![]);
                self.shape = [c, h + 1, w + 1];
            }
            Op::Slice => {
                let starts = self.ints(&[1]);
                let ends = self.ints(&[w as i64]);
                let axes = self.ints(&[3]);
                self.push("Slice", &[&y, &starts, &ends, &axes], vec![]);
                self.shape = [c, h, w - 1];
            }
            Op::Transpose => {
                self.push("Transpose", &[&y], vec![ints_attr("perm", &[0, 1, 3, 2])]);
                self.shape = [c, w, h];
            }
            Op::Concat => {
                self.push("Relu", &[&y], vec![]);
                let r = self.cur.clone();
                self.push("Concat", &[&y, &r], vec![int_attr("axis", 1)]);
                self.shape = [2 * c, h, w];
            }
            Op::Reshape => {
                // (C, H, W) read as (C, W, H) row by row: a reshape, not a transpose.
                let shape = self.ints(&[0, c as i64, w as i64, h as i64]);
                self.push("Reshape", &[&y, &shape], vec![]);
                self.shape = [c, w, h];
            }
        }
    }

    /// Flatten, then a Gemm head (even seeds) or MatMul and Add (odd seeds) to the classes.
    fn head(&mut self, gemm: bool) -> ModelProto {
        let y = self.cur.clone();
        self.push("Flatten", &[&y], vec![int_attr("axis", 1)]);
        let f: usize = self.shape.iter().product();
        let flat = self.cur.clone();
        let s = 2.0 / (f as f32).sqrt();
        let b = self.weights(&[CLASSES], -0.1, 0.1);
        if gemm {
            let w = self.weights(&[CLASSES, f], -s, s);
            self.push("Gemm", &[&flat, &w, &b], vec![int_attr("transB", 1)]);
        } else {
            let w = self.weights(&[f, CLASSES], -s, s);
            self.push("MatMul", &[&flat, &w], vec![]);
            let m = self.cur.clone();
            self.push("Add", &[&m, &b], vec![]);
        }
        self.nodes.last_mut().unwrap().output = vec!["logits".into()];
        let dims = INPUT.map(|d| Some(d as i64));
        classifier(
            "random",
            std::mem::take(&mut self.nodes),
            std::mem::take(&mut self.inits),
            &[None, dims[0], dims[1], dims[2]],
            &[None, Some(CLASSES as i64)],
        )
    }
}

/// Random network `seed`: a convolution, then three operators drawn at random with
/// `OPS[seed % 21]` among them (where it fits the shape), then the head.
fn random_net(seed: u64) -> (ModelProto, Vec<Op>) {
    let mut net = Net {
        rng: StdRng::seed_from_u64(seed),
        nodes: vec![],
        inits: vec![],
        cur: "input".into(),
        shape: INPUT,
        count: 0,
    };
    let forced = OPS[seed as usize % OPS.len()];
    let slot = net.rng.random_range(0..3);
    let mut ops = vec![Op::Conv];
    net.apply(Op::Conv);
    for i in 0..3 {
        let op = if i == slot {
            forced
        } else {
            OPS[net.rng.random_range(0..OPS.len())]
        };
        if net.fits(op) {
            net.apply(op);
            ops.push(op);
        }
    }
    (net.head(seed.is_multiple_of(2)), ops)
}

/// The largest range of `ranges` (widest first) whose box of warp parameters, `pbox(r)`,
/// CROWN certifies for class `k0` around image `u` (bilinear, zero fill; one box, no
/// splitting); then every matrix of `matrices(r)` (the warp the attacks use) keeps the
/// prediction. Returns the range certified, if any.
fn transform_certificate_holds(
    (model, net): (&Model, &BoundNet),
    (u, k0): (&[f32], usize),
    ranges: &[f64],
    pbox: impl Fn(f64) -> ParamBox,
    matrices: impl FnOnce(f64) -> Vec<Matrix3<f64>>,
    what: &str,
) -> Option<f64> {
    let sampling = Sampling::new(Default::default(), "zero".parse().unwrap());
    let [c, h, w] = INPUT;
    let opts = Options {
        method: Method::Crown,
        budget: 1e9,
    };
    let r = ranges.iter().copied().find(|&r| {
        let (lo, hi) = warp_bounds(u, (c, h, w), &pbox(r), sampling).unwrap();
        let set = InputSet::Box(Interval { lo, hi });
        net.margins(&set, k0, &opts).0.iter().all(|&m| m > 0.0)
    })?;
    let warps = matrices(r);
    let m = warps.len();
    let input: Vec<f32> = u.iter().copied().cycle().take(m * u.len()).collect();
    let batch = Batch::new(&input, ImageShape::new(m, c, h, w), ImageLayout::Nchw).unwrap();
    let warped = MatrixWarp::new(warps.clone())
        .apply(&batch, sampling)
        .unwrap();
    let logits = model.logits(&warped, m).unwrap();
    for (z, warp) in logits.chunks_exact(CLASSES).zip(&warps) {
        assert_eq!(
            georob::attack::vector::argmax(z),
            k0,
            "{what}: certified for ±{r}, but the warp {warp} changes the prediction"
        );
    }
    Some(r)
}

/// 63 random networks, each of the 21 operators forced into three of them: every one lowers;
/// the lowered graph computes the logits tract computes; IBP and CROWN bounds over a box of
/// half-width 0.1 hold at 200 sampled points at every tensor; and at the largest ℓ∞ radius
/// CROWN certifies, APGD with five restarts (cross-entropy and targeted DLR, 100 steps) does
/// not change the prediction. At four times that radius it does on most networks, so the
/// attack is strong enough to notice a bound that is too tight.
#[test]
fn random_networks_of_every_bound_operator_hold_their_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d: usize = INPUT.iter().product();
    let (mut certified, mut fooled_beyond, mut rotations, mut shifts) = (0, 0, 0, 0);
    let mut seen = [0usize; OPS.len()];
    for seed in 0..63u64 {
        let (proto, ops) = random_net(seed);
        let what = format!("net {seed} {ops:?}");
        for op in &ops {
            seen[OPS.iter().position(|o| o == op).unwrap()] += 1;
        }
        let path = dir.path().join(format!("net{seed}.onnx"));
        std::fs::write(&path, proto.encode_to_vec()).unwrap();
        let model = Model::open(&path, &tract()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let net = BoundNet::from_onnx(&model.runnable.proto, &INPUT)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let u: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..=1.0)).collect();
        let z = model.logits(&u, 1).unwrap();
        let at = &point(&net, &u).tensors[net.logits];
        for (j, &zj) in z.iter().enumerate() {
            let tol = 1e-4 * (1.0 + zj.abs());
            let inside = at.lo[j] - tol <= zj && zj <= at.hi[j] + tol;
            assert!(
                inside,
                "{what}: logit {j} is {zj}, bounds {}..{}",
                at.lo[j], at.hi[j]
            );
        }
        let k0 = georob::attack::vector::argmax(&z);
        let lo: Vec<f32> = u.iter().map(|v| v - 0.1).collect();
        let hi: Vec<f32> = u.iter().map(|v| v + 0.1).collect();
        let set = InputSet::Box(Interval {
            lo: lo.clone(),
            hi: hi.clone(),
        });
        for method in [Method::Ibp, Method::Crown] {
            let opts = Options {
                method,
                budget: 1e9,
            };
            let (margins, b) = net.margins(&set, k0, &opts);
            let what = format!("{what} {method:?}");
            assert_contains(&net, &b, &margins, k0, (&lo, &hi), 200, &what);
        }
        let rigid = |theta: f64, tx: f64, ty: f64| RigidTransform { theta, tx, ty }.matrix();
        // Rotations by ±r°: a 0.01° scan and 100 random angles.
        let rotated = transform_certificate_holds(
            (&model, &net),
            (&u, k0),
            &[8.0, 4.0, 2.0, 1.0, 0.5],
            |r| ParamBox::rotation(-r.to_radians(), r.to_radians()),
            |r| {
                let scan = (0..=(200.0 * r).round() as usize).map(|i| -r + 0.01 * i as f64);
                let random: Vec<f64> = (0..100).map(|_| rng.random_range(-r..=r)).collect();
                scan.chain(random)
                    .map(|deg| rigid(deg.to_radians(), 0.0, 0.0))
                    .collect()
            },
            &what,
        );
        // Shifts by ±t px on both axes: a 0.05 px grid and 100 random shifts.
        let shifted = transform_certificate_holds(
            (&model, &net),
            (&u, k0),
            &[1.0, 0.5, 0.25, 0.1, 0.05],
            |t| {
                ParamBox::identity()
                    .with(ParamBox::TX, -t, t)
                    .with(ParamBox::TY, -t, t)
            },
            |t| {
                let steps = (40.0 * t).round() as usize;
                let at = |i: usize| -t + 0.05 * i as f64;
                let mut warps: Vec<_> = (0..=steps)
                    .flat_map(|i| (0..=steps).map(move |j| rigid(0.0, at(i), at(j))))
                    .collect();
                warps.extend(
                    (0..100)
                        .map(|_| rigid(0.0, rng.random_range(-t..=t), rng.random_range(-t..=t))),
                );
                warps
            },
            &what,
        );
        rotations += usize::from(rotated.is_some());
        shifts += usize::from(shifted.is_some());
        let Some(eps) = largest_certified(&net, &u, k0, 1.0) else {
            continue;
        };
        let fooled_at = |radius: f32| apgd_with_restarts_fools(&model, &u, &z, radius);
        assert!(
            !fooled_at(eps),
            "{what}: certified at ε = {eps}, but APGD changed the prediction inside the ball"
        );
        certified += 1;
        if fooled_at(4.0 * eps) {
            fooled_beyond += 1;
        }
    }
    eprintln!(
        "operators used: {seen:?}; certified {certified} of 63; fooled at 4 ε: {fooled_beyond}; \
         rotation ranges certified: {rotations}; shift ranges certified: {shifts}"
    );
    assert!(
        rotations >= 30 && shifts >= 15,
        "{rotations} rotation and {shifts} shift ranges certified"
    );
    assert!(
        seen.iter().all(|&s| s >= 3),
        "an operator was drawn fewer than 3 times: {seen:?}"
    );
    assert!(
        certified >= 50,
        "only {certified} of 63 networks certified at any radius"
    );
    assert!(
        fooled_beyond >= certified / 2,
        "APGD fooled only {fooled_beyond} of {certified} networks at 4× the certified radius"
    );
}
