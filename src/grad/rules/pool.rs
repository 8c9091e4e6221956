//! Pooling: MaxPool (through its `Indices` output), AveragePool (both `count_include_pad`
//! forms), GlobalAveragePool and GlobalMaxPool.

use super::{Cotangents, InputCotangents};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;

use super::conv::Window;
use super::Ctx;
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_i, attr_ints, input, Attr};

fn kernel(node: &NodeProto) -> Result<Vec<usize>, GradError> {
    attr_ints(node, "kernel_shape")
        .map(|k| k.iter().map(|&v| v as usize).collect())
        .ok_or_else(|| GradError::shape(node, "missing kernel_shape"))
}

/// MaxPool: each output cotangent goes to the arg-max of its window, read from `Indices`
/// (ties resolved as the runtime resolved them in the forward pass). The window offset of the
/// arg-max is one-hot encoded over the `K = Πk` kernel positions and spread back by a
/// depthwise ConvTranspose whose kernel is the matching unit vector, which sums overlapping
/// windows exactly and needs no scatter op.
pub fn max_pool(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None]);
    };
    if attr_i(node, "storage_order", 0) != 0 {
        return Err(GradError::unsupported(node, "storage_order = 1"));
    }
    let idx = node
        .output
        .get(1)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GradError::unsupported(node, "no Indices output"))?
        .clone();
    let x = ctx.f.in_shape(node, 0)?.to_vec();
    let y = ctx.f.out_shape(node, 0)?.to_vec();
    let r = x.len() - 2;
    let win = Window::of(node, kernel(node)?, &x[2..], &y[2..])?;
    let kk: usize = win.kernel.iter().product();
    let c = x[1];
    let em = &mut *ctx.em;

    // Position of the arg-max inside one (n, c) plane, then its offset inside the window.
    let plane: usize = x[2..].iter().product();
    let p = em.const_i64_shaped(&[], &[plane as i64]);
    let pos = em.bin("Mod", &idx, &p);
    let mut code: Option<String> = None;
    for t in 0..r {
        let inner: usize = x[3 + t..].iter().product();
        let inner_c = em.const_i64_shaped(&[], &[inner as i64]);
        let mut coord = em.bin("Div", &pos, &inner_c);
        if t > 0 {
            let dim = em.const_i64_shaped(&[], &[x[2 + t] as i64]);
            coord = em.bin("Mod", &coord, &dim);
        }
        // base[o] = o * stride - pad_begin, laid out along spatial axis t.
        let mut dims = vec![y[2 + t]];
        dims.extend(std::iter::repeat_n(1, r - 1 - t));
        let base: Vec<i64> = (0..y[2 + t])
            .map(|o| (o * win.strides[t]) as i64 - win.pads_begin[t] as i64)
            .collect();
        let base = em.const_i64_shaped(&dims, &base);
        let mut off = em.sub(&coord, &base);
        if win.dilations[t] != 1 {
            let d = em.const_i64_shaped(&[], &[win.dilations[t] as i64]);
            off = em.bin("Div", &off, &d);
        }
        code = Some(match code {
            None => off,
            Some(prev) => {
                let k = em.const_i64_shaped(&[], &[win.kernel[t] as i64]);
                let scaled = em.mul(&prev, &k);
                em.add(&scaled, &off)
            }
        });
    }
    let code = em.unsqueeze(&code.expect("at least one spatial axis"), &[2]);
    let mut range_dims = vec![kk];
    range_dims.extend(std::iter::repeat_n(1, r));
    let range = em.const_i64_shaped(&range_dims, &(0..kk as i64).collect::<Vec<_>>());
    let onehot = em.bin("Equal", &code, &range);
    let onehot = em.cast(&onehot, DataType::Float);
    let mut oh_shape = vec![x[0], c, kk];
    oh_shape.extend_from_slice(&y[2..]);
    let g = ctx.em.unsqueeze(gy, &[2]);
    let mut g_shape = vec![y[0], c, 1];
    g_shape.extend_from_slice(&y[2..]);
    let g = ctx.mul_tiled_shaped(&g, &g_shape, &onehot, &oh_shape, Some(0), 1);
    let em = &mut *ctx.em;
    let mut dims = vec![y[0] * ctx.f.m, c * kk];
    dims.extend_from_slice(&y[2..]);
    let g = em.reshape(&g, &dims);

    let mut wdims = vec![c * kk, 1];
    wdims.extend_from_slice(&win.kernel);
    let mut w = vec![0f32; c * kk * kk];
    for ch in 0..c {
        for q in 0..kk {
            w[(ch * kk + q) * kk + q] = 1.0;
        }
    }
    let w = em.const_f32(&wdims, &w);
    let attrs = win.conv_transpose_attrs(c, &x[2..], &y[2..]);
    let gx = em.op("ConvTranspose", &[&g, &w], attrs);
    Ok(vec![Some(gx)])
}

/// AveragePool: `x̄ = ConvTranspose(ȳ ⊙ s, ones)`, depthwise, where `s = 1/divisor` per output
/// position. `s` is computed in the graph as `AveragePool(ones) / (#valid ones in the window)`,
/// so it follows the runtime's own divisor rule (`count_include_pad`, `ceil_mode`).
pub fn average_pool(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None]);
    };
    let x = ctx.f.in_shape(node, 0)?.to_vec();
    let y = ctx.f.out_shape(node, 0)?.to_vec();
    let r = x.len() - 2;
    let win = Window::of(node, kernel(node)?, &x[2..], &y[2..])?;
    let kk: usize = win.kernel.iter().product();
    let c = x[1];
    let em = &mut *ctx.em;

    let mut one_dims = vec![1, 1];
    one_dims.extend_from_slice(&x[2..]);
    let plane: usize = x[2..].iter().product();
    let ones = em.const_f32(&one_dims, &vec![1.0; plane]);
    let mut avg_node = node.clone();
    avg_node.input = vec![ones.clone()];
    let avg = em.fresh("avg_ones");
    avg_node.output = vec![avg.clone()];
    avg_node.name = avg.clone();
    em.nodes.push(avg_node);

    // Count of real (non-pad) positions per window: Conv of ones with a ones kernel, end pads
    // chosen so the output has the pooled shape.
    let mut kdims = vec![1, 1];
    kdims.extend_from_slice(&win.kernel);
    let kones = em.const_f32(&kdims, &vec![1.0; kk]);
    let mut pads = vec![0i64; 2 * r];
    for t in 0..r {
        let kext = (win.kernel[t] - 1) * win.dilations[t] + 1;
        pads[t] = win.pads_begin[t] as i64;
        pads[r + t] = ((y[2 + t] - 1) * win.strides[t] + kext) as i64
            - x[2 + t] as i64
            - win.pads_begin[t] as i64;
        pads[r + t] = pads[r + t].max(0);
    }
    let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
    let count = em.op(
        "Conv",
        &[&ones, &kones],
        vec![
            ("kernel_shape", ints(&win.kernel)),
            ("strides", ints(&win.strides)),
            ("dilations", ints(&win.dilations)),
            ("pads", Attr::Ints(pads)),
        ],
    );
    let one = em.scalar(1.0);
    let count = em.bin("Max", &count, &one);
    let scale = em.div(&avg, &count);
    let g = em.mul(gy, &scale);

    let mut wdims = vec![c, 1];
    wdims.extend_from_slice(&win.kernel);
    let w = em.const_f32(&wdims, &vec![1.0; c * kk]);
    let attrs = win.conv_transpose_attrs(c, &x[2..], &y[2..]);
    let gx = em.op("ConvTranspose", &[&g, &w], attrs);
    Ok(vec![Some(gx)])
}

/// GlobalAveragePool: broadcast `ȳ / |spatial|`. GlobalMaxPool: `ȳ` to the maximal elements,
/// split evenly between ties.
pub fn global_pool(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None]);
    };
    let xname = input(node, 0).expect("pool has an input").to_string();
    let x = ctx.f.in_shape(node, 0)?.to_vec();
    let bw = ctx.f.bw_shape(node, &xname)?;
    let spatial: Vec<usize> = (2..x.len()).collect();
    let plane: usize = x[2..].iter().product();
    let gx = if node.op_type == "GlobalAveragePool" {
        let g = ctx.em.scale(gy, 1.0 / plane as f32);
        let s = ctx
            .em
            .const_i64(&bw.iter().map(|&d| d as i64).collect::<Vec<_>>());
        ctx.em.op("Expand", &[&g, &s], vec![])
    } else {
        let yname = node.output[0].clone();
        let eq = ctx.em.bin("Equal", &xname, &yname);
        let mask = ctx.em.cast(&eq, DataType::Float);
        let cnt = ctx.em.reduce_sum(&mask, &spatial, true);
        let d = ctx.em.div(&mask, &cnt);
        let y = ctx.f.out_shape(node, 0)?.to_vec();
        ctx.mul_tiled_shaped(gy, &y, &d, &x, Some(0), 1)
    };
    Ok(vec![Some(gx)])
}

#[cfg(test)]
mod tests {
    use crate::grad::onnx::Attr;
    use crate::grad::testutil::{ints, one};

    #[test]
    fn max_pool_overlapping_ceil_dilated() {
        // ResNet stem: 3×3, stride 2, pad 1 (overlapping windows).
        let attrs = vec![
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("pads", ints(&[1, 1, 1, 1])),
        ];
        one("MaxPool", &["x"], attrs, vec![], &[2, 2, 7, 6], 13);
        // ceil_mode with asymmetric pads and dilation.
        let attrs = vec![
            ("kernel_shape", ints(&[2, 3])),
            ("strides", ints(&[2, 2])),
            ("pads", ints(&[0, 1, 1, 0])),
            ("dilations", ints(&[2, 1])),
            ("ceil_mode", Attr::Int(1)),
        ];
        one("MaxPool", &["x"], attrs, vec![], &[1, 2, 8, 7], 12);
        // auto_pad SAME_UPPER, 1-D.
        let attrs = vec![
            ("kernel_shape", ints(&[3])),
            ("strides", ints(&[2])),
            ("auto_pad", Attr::Str("SAME_UPPER".into())),
        ];
        one("MaxPool", &["x"], attrs, vec![], &[2, 3, 9], 11);
    }

    #[test]
    fn average_pool_count_include_pad_both_ways() {
        for cip in [0, 1] {
            for ceil in [0, 1] {
                let attrs = vec![
                    ("kernel_shape", ints(&[3, 3])),
                    ("strides", ints(&[2, 2])),
                    ("pads", ints(&[1, 1, 1, 1])),
                    ("count_include_pad", Attr::Int(cip)),
                    ("ceil_mode", Attr::Int(ceil)),
                ];
                one("AveragePool", &["x"], attrs, vec![], &[2, 2, 6, 7], 11);
            }
        }
    }

    #[test]
    fn global_pools() {
        one(
            "GlobalAveragePool",
            &["x"],
            vec![],
            vec![],
            &[2, 3, 4, 5],
            13,
        );
        one("GlobalMaxPool", &["x"], vec![], vec![], &[2, 3, 4, 5], 13);
    }
}
