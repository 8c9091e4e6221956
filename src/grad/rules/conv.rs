//! Conv and the window geometry shared with pooling: explicit pads from `auto_pad`, and the
//! pads/output_padding of the ConvTranspose that spreads output cotangents back over the input.

use tract_onnx::pb::NodeProto;

use super::{active_input_unsupported, batch_first, Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_i, attr_ints, attr_s, input, Attr};

/// Batch propagation for ops whose data input is `(N, C, …)` and outputs keep axis 0.
pub fn batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let b = batch_first(f, node)?;
    Ok(vec![b; node.output.len()])
}

/// Window geometry of a Conv/pool node along its `r` spatial axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Kernel extent per axis.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Padding at the start of each axis (after resolving `auto_pad`).
    pub pads_begin: Vec<usize>,
}

impl Window {
    /// Reads the geometry of `node` with kernel `kernel`, input spatial shape `input` and output
    /// spatial shape `output` (the latter two resolve `auto_pad = SAME_*`).
    pub fn of(
        node: &NodeProto,
        kernel: Vec<usize>,
        input: &[usize],
        output: &[usize],
    ) -> Result<Window, GradError> {
        let r = kernel.len();
        let get = |name: &str| -> Result<Vec<usize>, GradError> {
            match attr_ints(node, name) {
                None => Ok(vec![1; r]),
                Some(v) if v.len() == r => Ok(v.iter().map(|&x| x.max(1) as usize).collect()),
                Some(v) => Err(GradError::shape(
                    node,
                    format!("{name} {v:?} for {r} spatial axes"),
                )),
            }
        };
        let strides = get("strides")?;
        let dilations = get("dilations")?;
        let pads_begin = match attr_s(node, "auto_pad", "NOTSET").as_str() {
            "NOTSET" | "" => match attr_ints(node, "pads") {
                None => vec![0; r],
                Some(p) if p.len() == 2 * r => p[..r].iter().map(|&x| x.max(0) as usize).collect(),
                Some(p) => return Err(GradError::shape(node, format!("pads {p:?}"))),
            },
            "VALID" => vec![0; r],
            mode @ ("SAME_UPPER" | "SAME_LOWER") => (0..r)
                .map(|t| {
                    let kext = (kernel[t] - 1) * dilations[t] + 1;
                    let total = ((output[t] - 1) * strides[t] + kext).saturating_sub(input[t]);
                    if mode == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    }
                })
                .collect(),
            other => return Err(GradError::unsupported(node, format!("auto_pad {other}"))),
        };
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads_begin,
        })
    }

    /// Pads (`[begins…, ends…]`) and `output_padding` of the ConvTranspose mapping an output of
    /// spatial shape `output` back onto `input`: windows reaching past the input end are
    /// cropped, uncovered trailing input positions get zeros.
    pub fn transpose_pads(&self, input: &[usize], output: &[usize]) -> (Vec<i64>, Vec<i64>) {
        let r = self.kernel.len();
        let mut pads = vec![0i64; 2 * r];
        let mut out_pad = vec![0i64; r];
        for t in 0..r {
            let kext = (self.kernel[t] - 1) * self.dilations[t] + 1;
            let total =
                (self.strides[t] * (output[t] - 1) + kext) as i64 - self.pads_begin[t] as i64;
            pads[t] = self.pads_begin[t] as i64;
            pads[r + t] = (total - input[t] as i64).max(0);
            out_pad[t] = (input[t] as i64 - total).max(0);
        }
        (pads, out_pad)
    }

    /// For stride 1: the pads of the Conv with flipped kernel that maps an output cotangent of
    /// spatial shape `output` onto `input`, `(kext − 1 − p_begin, input − output + p_begin)`; `None` when a stride is not 1 or a pad would be negative.
    pub fn flipped_conv_pads(&self, input: &[usize], output: &[usize]) -> Option<Vec<i64>> {
        let r = self.kernel.len();
        if self.strides.iter().any(|&s| s != 1) {
            return None;
        }
        let mut pads = vec![0i64; 2 * r];
        for t in 0..r {
            let kext = ((self.kernel[t] - 1) * self.dilations[t] + 1) as i64;
            let begin = kext - 1 - self.pads_begin[t] as i64;
            // The Conv's output length `output + begin + end − kext + 1` must be `input`.
            let end = input[t] as i64 - output[t] as i64 + self.pads_begin[t] as i64;
            if begin < 0 || end < 0 {
                return None;
            }
            pads[t] = begin;
            pads[r + t] = end;
        }
        Some(pads)
    }

    /// The pads of the stride-1 Conv with flipped kernel that maps the output cotangent, with
    /// `stride − 1` zeros put between its values along each axis (length `s·(output − 1) + 1`),
    /// onto `input`; `None` when no stride exceeds 1 or a pad would be negative.
    pub fn interleaved_conv_pads(&self, input: &[usize], output: &[usize]) -> Option<Vec<i64>> {
        if self.strides.iter().all(|&s| s == 1) || output.contains(&0) {
            return None;
        }
        let unit = Window {
            strides: vec![1; self.strides.len()],
            ..self.clone()
        };
        let spread: Vec<usize> = (0..output.len())
            .map(|t| self.strides[t] * (output[t] - 1) + 1)
            .collect();
        unit.flipped_conv_pads(input, &spread)
    }

    /// ConvTranspose attributes (group, strides, dilations, pads, output_padding, kernel_shape).
    pub fn conv_transpose_attrs(
        &self,
        group: usize,
        input: &[usize],
        output: &[usize],
    ) -> Vec<(&'static str, Attr)> {
        let (pads, out_pad) = self.transpose_pads(input, output);
        let mut a = vec![
            ("group", Attr::Int(group as i64)),
            ("kernel_shape", ints(&self.kernel)),
            ("strides", ints(&self.strides)),
            ("dilations", ints(&self.dilations)),
            ("pads", Attr::Ints(pads)),
        ];
        if out_pad.iter().any(|&p| p != 0) {
            a.push(("output_padding", Attr::Ints(out_pad)));
        }
        a
    }
}

/// An `ints` attribute from sizes.
fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

/// The kernel of the Conv that is the transpose of a stride-1 Conv with weights `w` `(C_out,
/// C_in/g, k…)`: `(C_in, C_out/g, k…)`, in/out channels swapped within each group, every
/// spatial axis reversed. Depends on initializers only, so runtimes fold it once.
fn flipped_kernel(ctx: &mut Ctx, w: &str, shape: &[usize], group: usize) -> String {
    let (cout, cin_g, spatial) = (shape[0], shape[1], &shape[2..]);
    let cout_g = cout / group;
    let mut t = w.to_string();
    if cin_g != 1 || cout_g != 1 {
        let mut grouped = vec![group, cout_g, cin_g];
        grouped.extend_from_slice(spatial);
        t = ctx.em.reshape(&t, &grouped);
        let mut perm = vec![0, 2, 1];
        perm.extend(3..3 + spatial.len());
        t = ctx.em.transpose(&t, &perm);
    }
    let mut flat = vec![group * cin_g, cout_g];
    flat.extend_from_slice(spatial);
    t = ctx.em.reshape(&t, &flat);
    for (a, &k) in spatial.iter().enumerate() {
        if k > 1 {
            t = ctx.em.reverse(&t, 2 + a, k);
        }
    }
    t
}

/// Conv: `x̄ = ConvTranspose(ȳ, W)` with the same group, strides, dilations and pads; for
/// stride 1 where it does less work, the equivalent `Conv(ȳ, flipped W)` (see
/// [`Window::flipped_conv_pads`]).
pub fn conv(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    for i in 1..node.input.len() {
        if ctx.f.in_active(node, i) {
            return Err(active_input_unsupported(node, i));
        }
    }
    let Some(gy) = &gys[0] else {
        return Ok(vec![None; node.input.len()]);
    };
    let x = ctx.f.in_shape(node, 0)?.to_vec();
    let w = ctx.f.in_shape(node, 1)?.to_vec();
    let y = ctx.f.out_shape(node, 0)?.to_vec();
    if x.len() < 3 {
        return Err(GradError::shape(
            node,
            format!("input rank {} < 3", x.len()),
        ));
    }
    let kernel = attr_ints(node, "kernel_shape")
        .map(|k| k.iter().map(|&v| v as usize).collect())
        .unwrap_or_else(|| w[2..].to_vec());
    let win = Window::of(node, kernel, &x[2..], &y[2..])?;
    let group = attr_i(node, "group", 1).max(1) as usize;
    let wname = input(node, 1).expect("Conv has weights").to_string();
    // A Conv lays out `C_out·k` cotangent values per input pixel (im2col), a ConvTranspose
    // `C_in·k` products to sum back (col2im): pick the smaller. Where they tie (depthwise and
    // 1×1 convolutions), Conv, as ONNX Runtime's CPU ConvTranspose is the slower of the two.
    let conv_is_smaller = w.len() == x.len()
        && w[0] % group == 0
        && (w[1] >= w[0] / group || win.kernel.iter().all(|&k| k == 1));
    let flipped_conv = |ctx: &mut Ctx, gy: &str, pads: Vec<i64>| {
        let wt = flipped_kernel(ctx, &wname, &w, group);
        let attrs = vec![
            ("group", Attr::Int(group as i64)),
            ("kernel_shape", ints(&win.kernel)),
            ("strides", ints(&vec![1; win.kernel.len()])),
            ("dilations", ints(&win.dilations)),
            ("pads", Attr::Ints(pads)),
        ];
        ctx.em.op("Conv", &[gy, &wt], attrs)
    };
    let gx = match win.flipped_conv_pads(&x[2..], &y[2..]) {
        Some(pads) if conv_is_smaller => flipped_conv(ctx, gy, pads),
        _ => match win.interleaved_conv_pads(&x[2..], &y[2..]) {
            // Strided depthwise: zeros between the cotangent's values, then the flipped
            // Conv at stride 1. ONNX Runtime's CPU ConvTranspose runs a depthwise kernel one
            // group at a time on one thread; the interleave (a 1×1 ConvTranspose) is cheap
            // and the Conv runs in its threaded NCHWc kernels.
            Some(pads) if w.len() == x.len() && w[1] == 1 && w[0] == group => {
                let c = w[0];
                let r = win.kernel.len();
                let mut ones_shape = vec![c, 1];
                ones_shape.extend(std::iter::repeat_n(1, r));
                let ones = ctx.em.const_f32(&ones_shape, &vec![1.0; c]);
                let attrs = vec![
                    ("group", Attr::Int(c as i64)),
                    ("kernel_shape", ints(&vec![1; r])),
                    ("strides", ints(&win.strides)),
                ];
                let z = ctx.em.op("ConvTranspose", &[gy, &ones], attrs);
                flipped_conv(ctx, &z, pads)
            }
            _ => {
                let attrs = win.conv_transpose_attrs(group, &x[2..], &y[2..]);
                ctx.em.op("ConvTranspose", &[gy, &wname], attrs)
            }
        },
    };
    let mut out = vec![None; node.input.len()];
    out[0] = Some(gx);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::build_gradient_graph;
    use crate::grad::onnx::{make_node, tensor_i64};
    use crate::grad::testutil::{assert_grad, ints, model, node, one, w};

    #[test]
    fn same_upper_pads_and_transpose_geometry() {
        let n = make_node(
            "Conv",
            "c",
            &["x", "w"],
            &["y"],
            vec![
                ("auto_pad", Attr::Str("SAME_UPPER".into())),
                ("strides", Attr::Ints(vec![2])),
            ],
        );
        // in 6, k 3, s 2 -> out 3, total pad = (3-1)*2+3-6 = 1 -> begin 0, end 1
        let w = Window::of(&n, vec![3], &[6], &[3]).unwrap();
        assert_eq!(w.pads_begin, vec![0]);
        let (pads, op) = w.transpose_pads(&[6], &[3]);
        assert_eq!(pads, vec![0, 1]);
        assert_eq!(op, vec![0]);
        // in 7, k 3, s 2, no pad -> out 3, covers 0..7 exactly
        let n = make_node(
            "Conv",
            "c",
            &["x", "w"],
            &["y"],
            vec![("strides", Attr::Ints(vec![2]))],
        );
        let w = Window::of(&n, vec![3], &[8], &[3]).unwrap();
        let (pads, op) = w.transpose_pads(&[8], &[3]);
        assert_eq!((pads, op), (vec![0, 0], vec![1]));
    }

    /// Stride-1 convolutions go back through a flipped-kernel Conv when it lays out fewer values
    /// than a ConvTranspose (C_in ≥ C_out per group, or a 1×1 kernel), else through ConvTranspose;
    /// both forms must be exact.
    #[test]
    fn conv_stride1_vjp_takes_the_smaller_form() {
        for (dims, form) in [
            ([2usize, 4, 3, 3], "Conv"),
            ([4, 2, 3, 3], "ConvTranspose"),
            ([4, 2, 1, 1], "Conv"),
        ] {
            let pads = if dims[2] == 3 { [1, 0, 1, 2] } else { [0; 4] };
            let attrs = vec![("pads", ints(&pads))];
            let m = model(
                vec![node("Conv", &["x", "w"], "y", attrs)],
                vec![w("w", &dims, 9)],
                "x",
                &[2, dims[1], 5, 6],
                "y",
                13,
            );
            let built = build_gradient_graph(&m, &[2, dims[1], 5, 6], 3).unwrap();
            let backward: Vec<&str> = built.model.graph.as_ref().unwrap().node[1..]
                .iter()
                .map(|n| n.op_type.as_str())
                .filter(|op| op.starts_with("Conv"))
                .collect();
            assert_eq!(backward, [form], "weights {dims:?}");
            assert_grad(&m, &[2, dims[1], 5, 6], 1.0);
        }
    }

    /// TF-style "same" padding exported as Pad → Conv: the Pad's crop is folded into the pads of
    /// the Conv VJP (no Slice left), for the stride-1 flipped Conv, the flipped Conv over the
    /// interleaved cotangent of strided depthwise convolutions and the ConvTranspose of strided
    /// dense ones; all exact.
    #[test]
    fn pad_then_conv_folds_the_crop_into_the_conv_vjp() {
        for (dims, group, stride, form) in [
            ([3usize, 3, 3, 3], 1i64, 1i64, "Conv"),
            ([4, 1, 3, 3], 4, 2, "Conv"),
            ([4, 1, 5, 5], 4, 2, "Conv"),
            ([4, 4, 3, 3], 1, 2, "ConvTranspose"),
        ] {
            let cin = dims[1] * group as usize;
            let shape = [2, cin, 7, 8];
            let pads = tensor_i64("p", &[8], &[0, 0, 1, 0, 0, 0, 1, 2]);
            let nodes = vec![
                node("Pad", &["x", "p"], "xp", vec![]),
                node(
                    "Conv",
                    &["xp", "w"],
                    "y",
                    vec![
                        ("group", Attr::Int(group)),
                        ("strides", ints(&[stride, stride])),
                    ],
                ),
            ];
            let m = model(nodes, vec![pads, w("w", &dims, 10)], "x", &shape, "y", 13);
            let built = build_gradient_graph(&m, &shape, 3).unwrap();
            let ops: Vec<&str> = built.model.graph.as_ref().unwrap().node[2..]
                .iter()
                .map(|n| n.op_type.as_str())
                .collect();
            assert!(!ops.contains(&"Slice"), "{dims:?}: {ops:?}");
            assert!(ops.contains(&form), "{dims:?}: {ops:?}");
            assert_grad(&m, &shape, 1.0);
        }
    }

    #[test]
    fn conv_grouped_strided_dilated_asymmetric_pads() {
        let attrs = vec![
            ("group", Attr::Int(2)),
            ("strides", ints(&[2, 1])),
            ("dilations", ints(&[1, 2])),
            ("pads", ints(&[1, 0, 0, 2])),
        ];
        one(
            "Conv",
            &["x", "w"],
            attrs,
            vec![w("w", &[4, 2, 3, 2], 5)],
            &[2, 4, 6, 5],
            11,
        );
    }

    /// Strided depthwise convolutions go back through a 1×1 ConvTranspose that puts zeros
    /// between the cotangent's values and a stride-1 Conv with the flipped kernel (no k×k
    /// ConvTranspose), exact for unequal strides, dilations, asymmetric pads and 1-D inputs.
    #[test]
    fn conv_strided_depthwise_vjp_interleaves_then_convolves() {
        type Case<'a> = (&'a [usize], &'a [usize], Vec<(&'a str, Attr)>);
        let cases: [Case; 4] = [
            (
                &[3, 1, 3, 3],
                &[2, 3, 9, 8],
                vec![("strides", ints(&[2, 2]))],
            ),
            (
                &[3, 1, 3, 2],
                &[1, 3, 11, 9],
                vec![
                    ("strides", ints(&[3, 2])),
                    ("dilations", ints(&[2, 1])),
                    ("pads", ints(&[2, 0, 1, 1])),
                ],
            ),
            (
                &[2, 1, 5, 5],
                &[1, 2, 8, 7],
                vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 2, 2, 1]))],
            ),
            (&[4, 1, 4], &[2, 4, 13], vec![("strides", ints(&[3]))]),
        ];
        for (dims, shape, mut attrs) in cases {
            attrs.push(("group", Attr::Int(dims[0] as i64)));
            let m = model(
                vec![node("Conv", &["x", "w"], "y", attrs)],
                vec![w("w", dims, 11)],
                "x",
                shape,
                "y",
                13,
            );
            let built = build_gradient_graph(&m, shape, 3).unwrap();
            let kernels: Vec<(&str, Vec<i64>)> = built.model.graph.as_ref().unwrap().node[1..]
                .iter()
                .filter(|n| n.op_type.starts_with("Conv"))
                .map(|n| {
                    let k = n.attribute.iter().find(|a| a.name == "kernel_shape");
                    (
                        n.op_type.as_str(),
                        k.map(|a| a.ints.clone()).unwrap_or_default(),
                    )
                })
                .collect();
            let ones = vec![1; dims.len() - 2];
            let kernel: Vec<i64> = dims[2..].iter().map(|&k| k as i64).collect();
            assert_eq!(
                kernels,
                [("ConvTranspose", ones), ("Conv", kernel)],
                "weights {dims:?}"
            );
            assert_grad(&m, shape, 1.0);
        }
    }

    #[test]
    fn conv_depthwise_same_upper_and_lower() {
        for mode in ["SAME_UPPER", "SAME_LOWER"] {
            let attrs = vec![
                ("group", Attr::Int(3)),
                ("strides", ints(&[2, 2])),
                ("auto_pad", Attr::Str(mode.into())),
                ("kernel_shape", ints(&[3, 3])),
            ];
            one(
                "Conv",
                &["x", "w"],
                attrs,
                vec![w("w", &[3, 1, 3, 3], 6)],
                &[1, 3, 6, 7],
                13,
            );
        }
    }

    #[test]
    fn conv_1d_valid() {
        let attrs = vec![
            ("auto_pad", Attr::Str("VALID".into())),
            ("strides", ints(&[3])),
        ];
        one(
            "Conv",
            &["x", "w", "b"],
            attrs,
            vec![w("w", &[3, 2, 2], 7), w("b", &[3], 8)],
            &[2, 2, 9],
            17,
        );
    }
}
