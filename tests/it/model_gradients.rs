//! `Model::vjp` on the bundled models against PyTorch autograd references,
//! exact and finite-difference, and against the backends' own forward pass.

use georob::model::{GradientChoice, GradientMode, Model, ModelOptions};

use crate::common::{compare, npy_f32, repo, tract};

fn npy(path: &str) -> (Vec<usize>, Vec<f32>) {
    npy_f32(&repo(path))
}

fn open(path: &str, gradient: GradientChoice) -> Model {
    let options = ModelOptions {
        gradient,
        ..tract()
    };
    Model::open(&repo(path), &options).unwrap()
}

#[test]
fn exact_vjp_matches_autograd_on_an_architecture_for_m1_and_m10() {
    let model = open("onnx_models/grad/arch_resnet.onnx", GradientChoice::Auto);
    assert_eq!(model.gradient_mode().unwrap().0, GradientMode::Exact);
    let (_, x) = npy("onnx_models/grad/arch_resnet.input.npy");
    let (_, logits_ref) = npy("onnx_models/grad/arch_resnet.logits.npy");
    for m in [1, 10] {
        let (_, cot) = npy(&format!("onnx_models/grad/arch_resnet.cot{m}.npy"));
        let (_, g_ref) = npy(&format!("onnx_models/grad/arch_resnet.grad{m}.npy"));
        let (logits, g) = model.vjp(&x, 2, &cot, m).unwrap();
        let (cos, rel) = compare(&g, &g_ref);
        assert!(cos >= 0.9999 && rel <= 1e-3, "M={m}: cos {cos} rel {rel}");
        let (_, rel) = compare(&logits, &logits_ref);
        assert!(rel < 1e-4, "logits rel {rel}");
    }
}

#[test]
fn finite_differences_agree_with_exact_on_the_linear_digits_model() {
    // The linear model has a constant Jacobian W, so both must give cᵀW.
    let exact = open(
        "onnx_models/digits/digits_linear.onnx",
        GradientChoice::Exact,
    );
    let fd = open("onnx_models/digits/digits_linear.onnx", GradientChoice::Fd);
    assert_eq!(
        fd.gradient_mode().unwrap().0,
        GradientMode::FiniteDifference
    );
    let (_, x) = npy("onnx_models/digits/test_x.npy");
    let (_, w) = npy("onnx_models/digits/digits_linear_W.npy");
    let x = &x[..3 * 784];
    let cot: Vec<f32> = (0..3 * 2 * 10)
        .map(|i| ((i * 7) % 11) as f32 - 5.0)
        .collect();
    let (_, ge) = exact.vjp(x, 3, &cot, 2).unwrap();
    let (_, gf) = fd.vjp(x, 3, &cot, 2).unwrap();
    let mut closed = vec![0.0f32; 3 * 2 * 784];
    for r in 0..6 {
        for k in 0..10 {
            for j in 0..784 {
                closed[r * 784 + j] += cot[r * 10 + k] * w[k * 784 + j];
            }
        }
    }
    let (cos, rel) = compare(&ge, &closed);
    assert!(cos > 0.99999 && rel < 1e-5, "exact: cos {cos} rel {rel}");
    let (cos, rel) = compare(&gf, &closed);
    assert!(cos > 0.999 && rel < 1e-2, "fd: cos {cos} rel {rel}");
}

#[test]
fn gradients_of_a_softmax_model_are_those_of_its_logits() {
    let model = open("onnx_models/tiny/softmax_head.onnx", GradientChoice::Exact);
    let (_, x) = npy("onnx_models/tiny/softmax_head_x.npy");
    let (_, pre) = npy("onnx_models/tiny/softmax_head_logits.npy");
    let k = model.classes;
    let cot = vec![1.0f32; 4 * k];
    let (logits, g) = model.vjp(&x, 4, &cot, 1).unwrap();
    let (_, rel) = compare(&logits, &pre);
    assert!(rel < 1e-5, "{rel}");
    // Σ_k logits_k along a random direction, checked by differences of the forward pass.
    let d = model.spec.sample_len();
    let dir: Vec<f32> = (0..d).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
    let h = 1e-3f32;
    let mut plus = x[..d].to_vec();
    let mut minus = x[..d].to_vec();
    for j in 0..d {
        plus[j] += h * dir[j];
        minus[j] -= h * dir[j];
    }
    let lp = model.logits(&plus, 1).unwrap();
    let lm = model.logits(&minus, 1).unwrap();
    let fd: f64 = (lp.iter().sum::<f32>() - lm.iter().sum::<f32>()) as f64 / (2.0 * h as f64);
    let an: f64 = g[..d]
        .iter()
        .zip(&dir)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    assert!(
        (fd - an).abs() <= 2e-2 * an.abs().max(1.0),
        "fd {fd} vs exact {an}"
    );
}
