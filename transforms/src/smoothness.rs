//! The stAdv flow smoothness loss and its gradient.
//!
//! For one image (Xiao et al., ICLR 2018, eq. 4):
//!
//! ```text
//! L_flow = Σ_p Σ_{q ∈ N(p)} sqrt(‖u_p − u_q‖² + ‖v_p − v_q‖² + ε)
//! ```
//!
//! summed over every pixel `p` and each of its neighbours `q`, so every neighbouring pair
//! counts twice (once from each side). A neighbour outside the image is replaced by the
//! nearest pixel inside it (replicate padding, the same as the reference code's symmetric
//! padding of width one); for the axial neighbourhood that is `p` itself, which adds the
//! constant `sqrt(ε)`. A constant flow therefore has the floor value `|N|·h·w·sqrt(ε)` and a
//! zero gradient. The paper's neighbourhood is the four axial neighbours; the rakutentech/stAdv
//! reference code uses the four diagonal ones ([`Neighbourhood::Diagonal`]).

use rayon::prelude::*;

use crate::flow::Flow;
use crate::layout::ImageShape;
use crate::warp::flow_offset;

/// Which four neighbours enter the smoothness loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Neighbourhood {
    /// Left, right, up and down (the paper).
    #[default]
    Axial,
    /// The four diagonal neighbours (the rakutentech/stAdv reference code).
    Diagonal,
}

impl Neighbourhood {
    fn offsets(self) -> [(i64, i64); 4] {
        match self {
            Neighbourhood::Axial => [(1, 0), (-1, 0), (0, 1), (0, -1)],
            Neighbourhood::Diagonal => [(1, 1), (1, -1), (-1, 1), (-1, -1)],
        }
    }
}

/// The stAdv smoothness loss `L_flow` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowSmoothness {
    /// The `ε` inside the square root (keeps it differentiable at zero); stAdv uses `1e-8`.
    pub epsilon: f64,
    /// Which neighbours are compared.
    pub neighbourhood: Neighbourhood,
}

impl Default for FlowSmoothness {
    /// `ε = 1e-8`, axial neighbours.
    fn default() -> Self {
        Self {
            epsilon: 1e-8,
            neighbourhood: Neighbourhood::Axial,
        }
    }
}

impl FlowSmoothness {
    /// `L_flow` of every image of `flow`.
    pub fn loss(&self, flow: &Flow<'_>) -> Vec<f64> {
        (0..flow.n())
            .into_par_iter()
            .map(|i| self.image(flow, i, None))
            .collect()
    }

    /// `L_flow` of every image, and its gradient with respect to the flow (flow layout
    /// `(n, 2, h, w)`).
    pub fn loss_and_gradient(&self, flow: &Flow<'_>) -> (Vec<f64>, Vec<f64>) {
        let per_image = 2 * flow.h() * flow.w();
        let mut grad = vec![0.0f64; flow.n() * per_image];
        if per_image == 0 {
            return (vec![0.0; flow.n()], grad);
        }
        let losses = grad
            .par_chunks_mut(per_image)
            .enumerate()
            .map(|(i, g)| self.image(flow, i, Some(g)))
            .collect();
        (losses, grad)
    }

    /// Loss of image `i`, accumulating its gradient into `grad` when given.
    fn image(&self, flow: &Flow<'_>, i: usize, mut grad: Option<&mut [f64]>) -> f64 {
        let (h, w) = (flow.h(), flow.w());
        let shape = ImageShape::new(1, 2, h, w);
        let mut loss = 0.0;
        for y in 0..h {
            for x in 0..w {
                let fp = flow.displacement(i, x, y);
                for (dx, dy) in self.neighbourhood.offsets() {
                    let qx = (x as i64 + dx).clamp(0, w as i64 - 1) as usize;
                    let qy = (y as i64 + dy).clamp(0, h as i64 - 1) as usize;
                    let fq = flow.displacement(i, qx, qy);
                    let d = [fp[0] - fq[0], fp[1] - fq[1]];
                    let s = (d[0] * d[0] + d[1] * d[1] + self.epsilon).sqrt();
                    loss += s;
                    if let Some(g) = grad.as_deref_mut() {
                        for (plane, dk) in d.iter().enumerate() {
                            g[flow_offset(&shape, plane, y, x)] += dk / s;
                            g[flow_offset(&shape, plane, qy, qx)] -= dk / s;
                        }
                    }
                }
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{central_gradient, random_values, rel_err};

    #[test]
    fn constant_flow_sits_at_the_epsilon_floor() {
        let (n, h, w) = (2, 5, 6);
        let data = vec![1.5; Flow::len_for(n, h, w)];
        let flow = Flow::new(&data, n, h, w).unwrap();
        for neighbourhood in [Neighbourhood::Axial, Neighbourhood::Diagonal] {
            let s = FlowSmoothness {
                neighbourhood,
                ..FlowSmoothness::default()
            };
            let (loss, grad) = s.loss_and_gradient(&flow);
            let floor = 4.0 * (h * w) as f64 * 1e-8f64.sqrt();
            for l in loss {
                assert!((l - floor).abs() < 1e-15, "{l} vs {floor}");
            }
            assert!(grad.iter().all(|&g| g == 0.0));
        }
    }

    #[test]
    fn two_pixel_example_by_hand() {
        // h = 1, w = 2, u = [0, 1], v = 0. Each pixel has one real neighbour at distance 1;
        // its other three neighbours clamp to itself.
        let data = [0.0, 1.0, 0.0, 0.0];
        let flow = Flow::new(&data, 1, 1, 2).unwrap();
        let eps = 1e-8f64;
        let expected = 2.0 * (1.0 + eps).sqrt() + 6.0 * eps.sqrt();
        let (loss, grad) = FlowSmoothness::default().loss_and_gradient(&flow);
        assert!((loss[0] - expected).abs() < 1e-15);
        // ∂/∂u₀ = 2·(u₀ − u₁)/sqrt(1 + ε), ∂/∂u₁ the opposite, v untouched.
        let g = 2.0 / (1.0 + eps).sqrt();
        assert!((grad[0] + g).abs() < 1e-12 && (grad[1] - g).abs() < 1e-12);
        assert_eq!(&grad[2..], &[0.0, 0.0]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (n, h, w) = (2, 5, 6);
        let data = random_values(Flow::len_for(n, h, w), 3);
        for neighbourhood in [Neighbourhood::Axial, Neighbourhood::Diagonal] {
            let s = FlowSmoothness {
                neighbourhood,
                ..FlowSmoothness::default()
            };
            let (loss, grad) = s.loss_and_gradient(&Flow::new(&data, n, h, w).unwrap());
            assert_eq!(loss, s.loss(&Flow::new(&data, n, h, w).unwrap()));
            let fd = central_gradient(&data, 1e-6, |d| {
                s.loss(&Flow::new(d, n, h, w).unwrap()).iter().sum::<f64>()
            });
            let err = rel_err(&grad, &fd);
            assert!(err < 1e-3, "{neighbourhood:?}: relative error {err:.3e}");
        }
    }

    #[test]
    fn empty_flow_has_zero_loss() {
        let flow = Flow::new(&[], 2, 0, 3).unwrap();
        let (loss, grad) = FlowSmoothness::default().loss_and_gradient(&flow);
        assert_eq!(loss, vec![0.0, 0.0]);
        assert!(grad.is_empty());
    }
}
