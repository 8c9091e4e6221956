//! Bounds on the bundled digits CNN checked against the network itself: the lowered graph
//! computes tract's logits, and sampled points of a box stay inside every tensor's bounds.

use rand::{Rng, SeedableRng};

use super::*;

fn digits() -> (BoundNet, Vec<f32>, Vec<f32>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("onnx_models/digits/digits_cnn.onnx")).unwrap();
    let proto: tract_onnx::pb::ModelProto = prost::Message::decode(bytes.as_slice()).unwrap();
    let net = BoundNet::from_onnx(&proto, &[1, 28, 28]).unwrap();
    let x: Vec<f32> = npyz::NpyFile::new(
        std::fs::File::open(root.join("onnx_models/digits/test_x.npy")).unwrap(),
    )
    .unwrap()
    .into_vec()
    .unwrap();
    let model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .unwrap()
        .with_input_fact(0, f32::fact([4, 1, 28, 28]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input =
        tract_ndarray::ArrayD::from_shape_vec(vec![4, 1, 28, 28], x[..4 * 784].to_vec()).unwrap();
    let out = model.run(tvec!(Tensor::from(input).into())).unwrap();
    let logits = out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    (net, x, logits)
}

use tract_onnx::prelude::*;

fn point(net: &BoundNet, x: &[f32]) -> Bounds {
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

#[test]
fn lowered_digits_cnn_computes_the_models_logits() {
    let (net, x, logits) = digits();
    for i in 0..4 {
        let b = point(&net, &x[i * 784..(i + 1) * 784]);
        let z = &b.tensors[net.logits];
        for j in 0..10 {
            let want = logits[i * 10 + j];
            assert!(
                z.lo[j] <= want + 1e-4 && want - 1e-4 <= z.hi[j],
                "image {i} logit {j}: {want} not in [{}, {}]",
                z.lo[j],
                z.hi[j]
            );
            assert!(
                z.hi[j] - z.lo[j] < 1e-2,
                "image {i} logit {j}: width {}",
                z.hi[j] - z.lo[j]
            );
        }
    }
}

#[test]
fn sampled_points_stay_inside_interval_and_crown_bounds() {
    let (net, x, _) = digits();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (i, eps) in [(0usize, 0.01f32), (1, 0.03), (2, 0.005)] {
        let u = &x[i * 784..(i + 1) * 784];
        let lo: Vec<f32> = u.iter().map(|v| (v - eps).max(0.0)).collect();
        let hi: Vec<f32> = u.iter().map(|v| (v + eps).min(1.0)).collect();
        let set = InputSet::Box(Interval {
            lo: lo.clone(),
            hi: hi.clone(),
        });
        let z0 = point(&net, u).tensors[net.logits].lo.clone();
        let k0 = z0
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        for method in [Method::Ibp, Method::Crown] {
            let opts = Options {
                method,
                budget: 1e12,
            };
            let (margins, b) = net.margins(&set, k0, &opts);
            for s in 0..300 {
                let p: Vec<f32> = (0..784)
                    .map(|j| {
                        if s % 2 == 0 {
                            if rng.random::<bool>() {
                                lo[j]
                            } else {
                                hi[j]
                            }
                        } else {
                            rng.random_range(lo[j]..=hi[j])
                        }
                    })
                    .collect();
                let at = point(&net, &p);
                for (t, (bt, pt)) in b.tensors.iter().zip(&at.tensors).enumerate() {
                    for e in 0..bt.lo.len() {
                        assert!(
                            bt.lo[e] <= pt.hi[e] && pt.lo[e] <= bt.hi[e],
                            "{method:?} image {i} tensor {t} element {e}: {} not in [{}, {}]",
                            pt.lo[e],
                            bt.lo[e],
                            bt.hi[e]
                        );
                    }
                }
                let z = &at.tensors[net.logits];
                for (r, j) in (0..10).filter(|&j| j != k0).enumerate() {
                    let m = f64::from(z.hi[k0]) - f64::from(z.lo[j]);
                    assert!(
                        margins[r] <= m,
                        "{method:?} image {i} margin to {j}: bound {} above {m}",
                        margins[r]
                    );
                }
            }
        }
    }
}
