//! Data-movement ops: Identity/Dropout/Cast, Reshape/Flatten/Squeeze/Unsqueeze, Transpose,
//! Concat, Split, Slice (any steps), Gather (constant indices), Pad (constant, reflect, edge,
//! wrap) and Expand.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::DatumType;

use super::{norm_axis, Cotangents, Ctx, Facts, InputCotangents};
use crate::grad::error::GradError;
use crate::grad::onnx::{attr_i, attr_ints, attr_s, input};

/// Identity, Dropout (inference) and float Cast: the cotangent passes through (cast back to
/// the input's float type when it differs).
pub fn identity(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let g = match (node.op_type.as_str(), ctx.f.probe.dtypes.get(&x)) {
        ("Cast", Some(DatumType::F16)) => ctx.em.cast(gy, DataType::Float16),
        ("Cast", Some(DatumType::F64)) => ctx.em.cast(gy, DataType::Double),
        ("Cast", _) => ctx.em.cast(gy, DataType::Float),
        _ => gy.clone(),
    };
    out[0] = Some(g);
    Ok(out)
}

fn product(s: &[usize]) -> usize {
    s.iter().product()
}

/// Batch layout through a reshape. The backward pass inserts the `M` copies at flat offset
/// `P = Π si[..b] · outer` of the forward layout; the output keeps that offset, so its batch
/// axis is the axis `j` (and outer factor `o'`) with `Π so[..j] · o' = P`. Among exact axis
/// starts (`o' = 1`), one of the same extent as the input's inner part is preferred.
pub fn reshape_layout(
    si: &[usize],
    b: usize,
    outer: usize,
    so: &[usize],
) -> Option<(usize, usize)> {
    let p = product(&si[..b]) * outer;
    let rest = si[b] / outer.max(1);
    let cands: Vec<usize> = (0..so.len()).filter(|&j| product(&so[..j]) == p).collect();
    let pick = cands
        .iter()
        .find(|&&j| so[j] == rest)
        .or_else(|| cands.iter().find(|&&j| so[j] > 1))
        .or(cands.first());
    if let Some(&j) = pick {
        return Some((j, 1));
    }
    (0..so.len()).find_map(|j| {
        let pre = product(&so[..j]);
        let o = p / pre.max(1);
        (pre < p && p.is_multiple_of(pre) && o < so[j] && so[j].is_multiple_of(o)).then_some((j, o))
    })
}

/// Batch axis through a reshape (see [`reshape_layout`]).
pub fn reshape_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    let si = f.in_shape(node, 0)?;
    let so = f.out_shape(node, 0)?;
    let outer = f.outer(&node.input[0]);
    match reshape_layout(si, b, outer, so) {
        Some((j, _)) => Ok(vec![Some(j)]),
        None => Err(GradError::unsupported(
            node,
            format!("reshape {si:?} -> {so:?} splits the batch axis {b} across output axes"),
        )),
    }
}

/// Reshape family: reshape the cotangent back.
pub fn reshape(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let bw = ctx.f.bw_shape(node, &x)?;
    out[0] = Some(ctx.em.reshape(gy, &bw));
    Ok(out)
}

fn perm(f: &Facts, node: &NodeProto) -> Result<Vec<usize>, GradError> {
    let rank = f.in_shape(node, 0)?.len();
    Ok(match attr_ints(node, "perm") {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(node, a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    })
}

/// Transpose batch axis: where the permutation moves it.
pub fn transpose_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    let p = perm(f, node)?;
    Ok(vec![p.iter().position(|&a| a == b)])
}

/// Transpose: inverse permutation.
pub fn transpose(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let Some(gy) = &gys[0] else {
        return Ok(vec![None]);
    };
    let p = perm(ctx.f, node)?;
    let mut inv = vec![0; p.len()];
    for (j, &a) in p.iter().enumerate() {
        inv[a] = j;
    }
    Ok(vec![Some(ctx.em.transpose(gy, &inv))])
}

/// Batch axis shared by the active inputs of Concat/Split-like ops, which must not be `axis`.
fn shared_batch(f: &Facts, node: &NodeProto, axis: usize) -> Result<Option<usize>, GradError> {
    let mut b = None;
    for i in 0..node.input.len() {
        if let Some(x) = f.in_batch(node, i) {
            if x == axis {
                return Err(GradError::unsupported(
                    node,
                    "operates along the batch axis",
                ));
            }
            if b.is_some_and(|y| y != x) {
                return Err(GradError::unsupported(
                    node,
                    "inputs have different batch axes",
                ));
            }
            b = Some(x);
        }
    }
    Ok(b)
}

/// Concat batch axis.
pub fn concat_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let rank = f.out_shape(node, 0)?.len();
    let axis = norm_axis(node, attr_i(node, "axis", 0), rank)?;
    Ok(vec![shared_batch(f, node, axis)?])
}

/// Concat: slice each active input's part out of the cotangent.
pub fn concat(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let rank = ctx.f.out_shape(node, 0)?.len();
    let axis = norm_axis(node, attr_i(node, "axis", 0), rank)?;
    let mut off = 0i64;
    for (i, o) in out.iter_mut().enumerate() {
        let len = ctx.f.in_shape(node, i)?[axis] as i64;
        if ctx.f.in_active(node, i) {
            *o = Some(ctx.em.slice(gy, &[off], &[off + len], &[axis], &[1]));
        }
        off += len;
    }
    Ok(out)
}

/// Split batch axis (all outputs).
pub fn split_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let rank = f.in_shape(node, 0)?.len();
    let axis = norm_axis(node, attr_i(node, "axis", 0), rank)?;
    let b = shared_batch(f, node, axis)?;
    Ok(vec![b; node.output.len()])
}

/// Split: concatenate the output cotangents (zeros for outputs without one).
pub fn split(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let rank = ctx.f.in_shape(node, 0)?.len();
    let axis = norm_axis(node, attr_i(node, "axis", 0), rank)?;
    let mut parts = vec![];
    for (i, g) in gys.iter().enumerate() {
        parts.push(match g {
            Some(g) => g.clone(),
            None => {
                let bw = ctx.f.bw_shape(node, &node.output[i])?;
                ctx.em.zeros(&bw)
            }
        });
    }
    let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
    out[0] = Some(if refs.len() == 1 {
        parts[0].clone()
    } else {
        ctx.em.concat(&refs, axis)
    });
    Ok(out)
}

/// One sliced axis: selected indices are `first + k·step`, `k < count`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AxisSlice {
    axis: usize,
    first: i64,
    count: i64,
    step: i64,
}

/// ONNX Slice semantics for one axis of extent `dim`.
fn normalise_slice(start: i64, end: i64, step: i64, dim: i64) -> (i64, i64) {
    let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    if step > 0 {
        let s = wrap(start).clamp(0, dim);
        let e = wrap(end).clamp(0, dim);
        let count = if e > s { (e - s + step - 1) / step } else { 0 };
        (s, count)
    } else {
        let s = wrap(start).clamp(0, dim - 1);
        let e = wrap(end).clamp(-1, dim - 1);
        let count = if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        };
        (s, count)
    }
}

fn slice_spec(f: &Facts, node: &NodeProto) -> Result<Vec<AxisSlice>, GradError> {
    let shape = f.in_shape(node, 0)?;
    let rank = shape.len();
    let (starts, ends, axes, steps) = if f.opset < 10 {
        let s = attr_ints(node, "starts").unwrap_or_default();
        let e = attr_ints(node, "ends").unwrap_or_default();
        let a = attr_ints(node, "axes");
        (s, e, a, None)
    } else {
        let need = |i: usize, what: &str| {
            f.in_i64(node, i).ok_or_else(|| {
                GradError::unsupported(node, format!("{what} is not a known constant"))
            })
        };
        let s = need(1, "starts")?;
        let e = need(2, "ends")?;
        let a = if input(node, 3).is_some() {
            Some(need(3, "axes")?)
        } else {
            None
        };
        let st = if input(node, 4).is_some() {
            Some(need(4, "steps")?)
        } else {
            None
        };
        (s, e, a, st)
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    let mut out = vec![];
    for k in 0..starts.len() {
        let axis = norm_axis(node, axes[k], rank)?;
        if steps[k] == 0 {
            return Err(GradError::shape(node, "step 0"));
        }
        let (first, count) = normalise_slice(starts[k], ends[k], steps[k], shape[axis] as i64);
        out.push(AxisSlice {
            axis,
            first,
            count,
            step: steps[k],
        });
    }
    Ok(out)
}

fn is_identity(s: &AxisSlice, dim: usize) -> bool {
    s.step == 1 && s.first == 0 && s.count == dim as i64
}

/// Slice batch axis: unchanged; the batch axis itself may only be sliced whole.
pub fn slice_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    let shape = f.in_shape(node, 0)?.to_vec();
    for s in slice_spec(f, node)? {
        if s.axis == b && !is_identity(&s, shape[b]) {
            return Err(GradError::unsupported(node, "slices the batch axis"));
        }
    }
    Ok(vec![Some(b)])
}

/// Pads `g` (backward shape `cur`) along `axis` so that element `k` lands at `begin + k`, to
/// extent `dim` (cropping when it would overflow).
fn place(ctx: &mut Ctx, g: &str, cur: &mut [usize], axis: usize, begin: i64, dim: usize) -> String {
    let len = cur[axis] as i64;
    let mut g = g.to_string();
    let mut end = dim as i64 - begin - len;
    if end < 0 {
        g = ctx.em.slice(&g, &[0], &[len + end], &[axis], &[1]);
        cur[axis] = (len + end) as usize;
        end = 0;
    }
    if begin != 0 || end != 0 {
        let r = cur.len();
        let mut pads = vec![0i64; 2 * r];
        pads[axis] = begin;
        pads[r + axis] = end;
        g = ctx.em.pad(&g, &pads);
    }
    cur[axis] = dim;
    g
}

/// Slice: scatter the cotangent back into zeros, axis by axis (reversal for negative steps,
/// zero interleaving for |step| > 1, then padding to place).
pub fn slice(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let bw_x = ctx.f.bw_shape(node, &x)?;
    let mut cur = ctx.f.bw_shape(node, &node.output[0])?;
    let spec = slice_spec(ctx.f, node)?;
    if spec.iter().any(|s| s.count == 0) {
        out[0] = Some(ctx.em.zeros(&bw_x));
        return Ok(out);
    }
    let mut g = gy.clone();
    for s in spec {
        if is_identity(&s, bw_x[s.axis]) || ctx.f.batch_axis(&x) == Some(s.axis) {
            continue;
        }
        let (mut first, mut step) = (s.first, s.step);
        if step < 0 {
            g = ctx.em.reverse(&g, s.axis, cur[s.axis]);
            first += step * (s.count - 1);
            step = -step;
        }
        if step > 1 {
            let a = s.axis;
            g = ctx.em.unsqueeze(&g, &[a + 1]);
            let r = cur.len() + 1;
            let mut pads = vec![0i64; 2 * r];
            pads[r + a + 1] = step - 1;
            g = ctx.em.pad(&g, &pads);
            cur[a] *= step as usize;
            g = ctx.em.reshape(&g, &cur);
        }
        g = place(ctx, &g, &mut cur, s.axis, first, bw_x[s.axis]);
    }
    out[0] = Some(g);
    Ok(out)
}

/// Gather batch axis: data axes around `axis`; gathering along the batch is not supported.
pub fn gather_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    let rank = f.in_shape(node, 0)?.len();
    let axis = norm_axis(node, attr_i(node, "axis", 0), rank)?;
    let q = f.in_shape(node, 1)?.len();
    if b == axis {
        return Err(GradError::unsupported(node, "gathers along the batch axis"));
    }
    Ok(vec![Some(if b < axis { b } else { b - 1 + q })])
}

/// Gather with constant indices: scatter-add through a one-hot matrix (repeated indices
/// accumulate): `x̄ = ȳ · onehot(indices)` contracted over the index positions.
pub fn gather(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let bw_x = ctx.f.bw_shape(node, &x)?;
    let axis = norm_axis(node, attr_i(node, "axis", 0), bw_x.len())?;
    let idx = ctx
        .f
        .in_i64(node, 1)
        .ok_or_else(|| GradError::unsupported(node, "indices are not a known constant"))?;
    let d = bw_x[axis];
    let q = idx.len();
    let mut onehot = vec![0f32; q * d];
    for (j, &i) in idx.iter().enumerate() {
        let i = if i < 0 { i + d as i64 } else { i };
        if i < 0 || i >= d as i64 {
            return Err(GradError::shape(
                node,
                format!("index {i} out of range {d}"),
            ));
        }
        onehot[j * d + i as usize] = 1.0;
    }
    let oh = ctx.em.const_f32(&[q, d], &onehot);
    let pre = product(&bw_x[..axis]);
    let post = product(&bw_x[axis + 1..]);
    let gx = if post == 1 {
        let g = ctx.em.reshape(gy, &[pre, q]);
        ctx.em.bin("MatMul", &g, &oh)
    } else {
        let g = ctx.em.reshape(gy, &[pre, q, post]);
        let g = ctx.em.transpose(&g, &[0, 2, 1]);
        let g = ctx.em.bin("MatMul", &g, &oh);
        ctx.em.transpose(&g, &[0, 2, 1])
    };
    out[0] = Some(ctx.em.reshape(&gx, &bw_x));
    Ok(out)
}

/// Per-axis `(begin, end)` pads of a Pad node.
fn pads(f: &Facts, node: &NodeProto) -> Result<Vec<(i64, i64)>, GradError> {
    let rank = f.in_shape(node, 0)?.len();
    let raw = if f.opset < 11 {
        attr_ints(node, "pads").ok_or_else(|| GradError::shape(node, "missing pads"))?
    } else {
        f.in_i64(node, 1)
            .ok_or_else(|| GradError::unsupported(node, "pads are not a known constant"))?
    };
    let axes: Vec<usize> = match f.in_i64(node, 3).filter(|_| input(node, 3).is_some()) {
        Some(a) => a
            .iter()
            .map(|&x| norm_axis(node, x, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if raw.len() != 2 * axes.len() {
        return Err(GradError::shape(
            node,
            format!("pads {raw:?} for {} axes", axes.len()),
        ));
    }
    let mut out = vec![(0, 0); rank];
    for (k, &a) in axes.iter().enumerate() {
        out[a] = (raw[k], raw[axes.len() + k]);
    }
    Ok(out)
}

/// Pad batch axis: unchanged; the batch axis must not be padded.
pub fn pad_batch(f: &Facts, node: &NodeProto) -> Result<Vec<Option<usize>>, GradError> {
    let Some(b) = f.in_batch(node, 0) else {
        return Ok(vec![None]);
    };
    if pads(f, node)?[b] != (0, 0) {
        return Err(GradError::unsupported(node, "pads the batch axis"));
    }
    Ok(vec![Some(b)])
}

/// Pad: crop for `constant`; for `reflect`, `edge` and `wrap` the padded borders are folded
/// back onto the input positions they copy, axis by axis.
pub fn pad(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let bw_x = ctx.f.bw_shape(node, &x)?;
    let mut cur = ctx.f.bw_shape(node, &node.output[0])?;
    let p = pads(ctx.f, node)?;
    let mode = attr_s(node, "mode", "constant");
    let rank = bw_x.len();
    let mut g = gy.clone();
    if mode == "constant" {
        if ctx.em.fold_crop(&g, &p) {
            out[0] = Some(g);
            return Ok(out);
        }
        let mut starts = vec![];
        let mut ends = vec![];
        let mut axes = vec![];
        let mut zero_pads = vec![0i64; 2 * rank];
        for (a, &(b, e)) in p.iter().enumerate() {
            if b > 0 || e > 0 {
                starts.push(b.max(0));
                ends.push(cur[a] as i64 - e.max(0));
                axes.push(a);
            }
            zero_pads[a] = (-b).max(0);
            zero_pads[rank + a] = (-e).max(0);
        }
        if !axes.is_empty() {
            let steps = vec![1; axes.len()];
            g = ctx.em.slice(&g, &starts, &ends, &axes, &steps);
        }
        if zero_pads.iter().any(|&z| z != 0) {
            g = ctx.em.pad(&g, &zero_pads);
        }
        out[0] = Some(g);
        return Ok(out);
    }
    for (a, &(b, e)) in p.iter().enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        if b < 0 || e < 0 {
            return Err(GradError::unsupported(
                node,
                format!("negative pads in {mode} mode"),
            ));
        }
        let d = bw_x[a] as i64;
        let total = cur[a] as i64;
        let center = ctx.em.slice(&g, &[b], &[b + d], &[a], &[1]);
        let mut acc = vec![center];
        let mut cur_part = cur.clone();
        cur_part[a] = d as usize;
        let mut fold = |ctx: &mut Ctx, start: i64, stop: i64, at: i64, reverse: bool| {
            if stop <= start {
                return;
            }
            let mut part = ctx.em.slice(&g, &[start], &[stop], &[a], &[1]);
            if reverse {
                part = ctx.em.reverse(&part, a, (stop - start) as usize);
            }
            let mut shape = cur.clone();
            shape[a] = (stop - start) as usize;
            acc.push(place(ctx, &part, &mut shape, a, at, d as usize));
        };
        match mode.as_str() {
            "reflect" => {
                // out[i] = x[b - i] for i < b; out[b + d + j] = x[d - 2 - j].
                fold(ctx, 0, b, 1, true);
                fold(ctx, b + d, total, d - 1 - e, true);
            }
            "edge" => {
                if b > 0 {
                    let l = ctx.em.slice(&g, &[0], &[b], &[a], &[1]);
                    let s = ctx.em.reduce_sum(&l, &[a], true);
                    let mut shape = cur.clone();
                    shape[a] = 1;
                    acc.push(place(ctx, &s, &mut shape, a, 0, d as usize));
                }
                if e > 0 {
                    let r = ctx.em.slice(&g, &[b + d], &[total], &[a], &[1]);
                    let s = ctx.em.reduce_sum(&r, &[a], true);
                    let mut shape = cur.clone();
                    shape[a] = 1;
                    acc.push(place(ctx, &s, &mut shape, a, d - 1, d as usize));
                }
            }
            "wrap" => {
                // out[i] = x[d - b + i] for i < b; out[b + d + j] = x[j].
                fold(ctx, 0, b, d - b, false);
                fold(ctx, b + d, total, 0, false);
            }
            other => return Err(GradError::unsupported(node, format!("pad mode {other}"))),
        }
        g = ctx.em.sum(&acc);
        cur = cur_part;
    }
    out[0] = Some(g);
    Ok(out)
}

/// Expand: sum the cotangent over the broadcast axes.
pub fn expand(ctx: &mut Ctx, node: &NodeProto, gys: &Cotangents) -> InputCotangents {
    let mut out = vec![None; node.input.len()];
    let Some(gy) = &gys[0] else { return Ok(out) };
    let x = input(node, 0).expect("input").to_string();
    let from = ctx.f.bw_shape(node, &node.output[0])?;
    let to = ctx.f.bw_shape(node, &x)?;
    out[0] = Some(ctx.reduce_to(gy, &from, &to));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::TensorProto;

    use super::*;
    use crate::grad::onnx::{make_node, tensor_i64, Attr};
    use crate::grad::testutil::{assert_grad, chain, ints, node, one, w};

    #[test]
    fn reshape_layout_tracks_the_batch_offset() {
        // (N, C, H, W) -> (N, C·H·W)
        assert_eq!(reshape_layout(&[2, 3, 4, 4], 0, 1, &[2, 48]), Some((0, 1)));
        // (L, N, h, d) -> (L·N, h·d): the batch is merged under L.
        assert_eq!(
            reshape_layout(&[17, 2, 2, 16], 1, 1, &[34, 32]),
            Some((0, 17))
        );
        // ... and back: (L·N, E) -> (L, N, E).
        assert_eq!(reshape_layout(&[34, 32], 0, 17, &[17, 2, 32]), Some((1, 1)));
        // N = 1: (1, C) -> (C,) keeps the offset at axis 0.
        assert_eq!(reshape_layout(&[1, 5], 0, 1, &[5]), Some((0, 1)));
    }

    #[test]
    fn slice_normalisation_follows_onnx() {
        assert_eq!(normalise_slice(1, 5, 2, 6), (1, 2));
        assert_eq!(normalise_slice(-1, i64::MIN, -1, 4), (3, 4));
        assert_eq!(normalise_slice(0, i64::MAX, 1, 4), (0, 4));
        assert_eq!(normalise_slice(5, 0, -2, 4), (3, 2));
        assert_eq!(normalise_slice(2, 2, 1, 4), (2, 0));
    }

    #[test]
    fn reshape_family_across_opsets() {
        let shape = tensor_i64("shape", &[3], &[0, 4, -1]);
        one(
            "Reshape",
            &["x", "shape"],
            vec![],
            vec![shape],
            &[2, 2, 6],
            13,
        );
        let nodes = vec![
            node("Flatten", &["x"], "f", vec![("axis", Attr::Int(2))]),
            node("Reshape", &["f", "back"], "y", vec![]),
        ];
        let back = tensor_i64("back", &[2], &[2, -1]);
        assert_grad(
            &chain(nodes, vec![back], &[2, 3, 2, 2], 13),
            &[2, 3, 2, 2],
            1.0,
        );
        one(
            "Transpose",
            &["x"],
            vec![("perm", ints(&[0, 2, 3, 1]))],
            vec![],
            &[2, 3, 2, 2],
            13,
        );
        one(
            "Unsqueeze",
            &["x"],
            vec![("axes", ints(&[1, -1]))],
            vec![],
            &[2, 3],
            11,
        );
        one(
            "Unsqueeze",
            &["x", "a"],
            vec![],
            vec![tensor_i64("a", &[1], &[2])],
            &[2, 3],
            13,
        );
        one(
            "Squeeze",
            &["x"],
            vec![("axes", ints(&[2]))],
            vec![],
            &[2, 3, 1],
            11,
        );
        one(
            "Squeeze",
            &["x", "a"],
            vec![],
            vec![tensor_i64("a", &[1], &[-1])],
            &[2, 3, 1],
            13,
        );
        one("Identity", &["x"], vec![], vec![], &[2, 3], 13);
        one("Dropout", &["x"], vec![], vec![], &[2, 3], 13);
        one(
            "Cast",
            &["x"],
            vec![("to", Attr::Int(1))],
            vec![],
            &[2, 3],
            13,
        );
    }

    #[test]
    fn reshape_computed_by_shape_subgraph() {
        // y = Reshape(x, concat(shape(x)[0:1], [-1])) — the PyTorch flatten export.
        let nodes = vec![
            node("Shape", &["x"], "s", vec![]),
            node("Gather", &["s", "zero"], "n", vec![("axis", Attr::Int(0))]),
            node("Unsqueeze", &["n", "ax0"], "n1", vec![]),
            node(
                "Concat",
                &["n1", "m1"],
                "shape",
                vec![("axis", Attr::Int(0))],
            ),
            node("Relu", &["x"], "r", vec![]),
            node("Reshape", &["r", "shape"], "y", vec![]),
        ];
        let inits = vec![
            tensor_i64("zero", &[], &[0]),
            tensor_i64("ax0", &[1], &[0]),
            tensor_i64("m1", &[1], &[-1]),
        ];
        assert_grad(&chain(nodes, inits, &[2, 3, 2, 2], 13), &[2, 3, 2, 2], 1.0);
    }

    #[test]
    fn concat_and_split_forms() {
        let c = w("c", &[2, 2, 3], 40);
        let nodes = vec![
            node("Tanh", &["x"], "t", vec![]),
            node(
                "Concat",
                &["x", "c", "t"],
                "y",
                vec![("axis", Attr::Int(1))],
            ),
        ];
        assert_grad(&chain(nodes, vec![c], &[2, 2, 3], 13), &[2, 2, 3], 1.0);
        // Split with sizes as attribute (11), as input (13), num_outputs (18); one output unused.
        for opset in [11, 13, 18] {
            let (inputs, attrs, inits): (Vec<&str>, Vec<(&str, Attr)>, Vec<TensorProto>) =
                match opset {
                    11 => (
                        vec!["x"],
                        vec![("axis", Attr::Int(1)), ("split", ints(&[2, 1, 3]))],
                        vec![],
                    ),
                    13 => (
                        vec!["x", "sp"],
                        vec![("axis", Attr::Int(1))],
                        vec![tensor_i64("sp", &[3], &[2, 1, 3])],
                    ),
                    _ => (
                        vec!["x"],
                        vec![("axis", Attr::Int(1)), ("num_outputs", Attr::Int(3))],
                        vec![],
                    ),
                };
            let nodes = vec![
                make_node("Split", "split", &inputs, &["a", "b", "c"], attrs),
                node("Sigmoid", &["c"], "sc", vec![]),
                node("Concat", &["sc", "a"], "y", vec![("axis", Attr::Int(1))]),
            ];
            assert_grad(&chain(nodes, inits, &[2, 6, 2], opset), &[2, 6, 2], 1.0);
        }
    }

    #[test]
    fn slice_steps_negative_and_axes() {
        let t = |n: &str, v: &[i64]| tensor_i64(n, &[v.len()], v);
        // steps 2 on axis 2, negative step on axis 1, default axes omitted elsewhere.
        let inits = vec![
            t("st", &[3, 0]),
            t("en", &[i64::MIN, 7]),
            t("ax", &[1, 2]),
            t("sp", &[-2, 2]),
        ];
        one(
            "Slice",
            &["x", "st", "en", "ax", "sp"],
            vec![],
            inits,
            &[2, 5, 7],
            13,
        );
        let inits = vec![t("st", &[0, 1]), t("en", &[i64::MAX, -1])];
        one("Slice", &["x", "st", "en"], vec![], inits, &[2, 5], 11);
        // step 3 that overshoots the end; negative start.
        let inits = vec![
            t("st", &[-6]),
            t("en", &[100]),
            t("ax", &[-1]),
            t("sp", &[3]),
        ];
        one(
            "Slice",
            &["x", "st", "en", "ax", "sp"],
            vec![],
            inits,
            &[2, 3, 7],
            13,
        );
    }

    #[test]
    fn gather_constant_indices_with_repeats() {
        let idx = tensor_i64("i", &[2, 2], &[0, 2, -1, 0]);
        one(
            "Gather",
            &["x", "i"],
            vec![("axis", Attr::Int(1))],
            vec![idx],
            &[2, 4, 3],
            13,
        );
        let idx = tensor_i64("i", &[], &[1]);
        one(
            "Gather",
            &["x", "i"],
            vec![("axis", Attr::Int(2))],
            vec![idx],
            &[2, 4, 3],
            13,
        );
    }

    #[test]
    fn pad_modes_and_forms() {
        for mode in ["constant", "reflect", "edge"] {
            let attrs = vec![("mode", Attr::Str(mode.into()))];
            let p = tensor_i64("p", &[6], &[0, 2, 1, 0, 1, 2]);
            one("Pad", &["x", "p"], attrs.clone(), vec![p], &[2, 4, 5], 13);
            let mut a = attrs.clone();
            a.push(("pads", ints(&[0, 1, 2, 0, 2, 1])));
            one("Pad", &["x"], a, vec![], &[2, 4, 5], 10);
            // opset 18 axes input.
            let p = tensor_i64("p", &[2], &[2, 1]);
            let ax = tensor_i64("ax", &[1], &[-1]);
            one(
                "Pad",
                &["x", "p", "", "ax"],
                attrs,
                vec![p, ax],
                &[2, 4, 5],
                18,
            );
        }
        // `wrap` (opset 19) and negative pads (crop) have rules, but tract cannot run them, so
        // they are not tested here.
    }

    #[test]
    fn expand_broadcast() {
        let s = tensor_i64("s", &[4], &[2, 3, 2, 4]);
        one("Expand", &["x", "s"], vec![], vec![s], &[2, 1, 2, 1], 13);
    }

    #[test]
    fn attention_with_moving_batch_axis() {
        // PyTorch MHA export pattern: (N, L, E) -> (L, N, E) -> (L, N·h, d) -> (N·h, L, d).
        let (n, l, e, h) = (2usize, 3usize, 4usize, 2usize);
        let d = e / h;
        let s = |name: &str, v: &[i64]| tensor_i64(name, &[v.len()], v);
        let nodes = vec![
            node("MatMul", &["x", "wq"], "q0", vec![]),
            node("Transpose", &["q0"], "q1", vec![("perm", ints(&[1, 0, 2]))]),
            node("Reshape", &["q1", "s1"], "q2", vec![]),
            node("Transpose", &["q2"], "q", vec![("perm", ints(&[1, 0, 2]))]),
            node("Transpose", &["q"], "kt", vec![("perm", ints(&[0, 2, 1]))]),
            node("MatMul", &["q", "kt"], "sc", vec![]),
            node("Softmax", &["sc"], "p", vec![("axis", Attr::Int(-1))]),
            node("MatMul", &["p", "q"], "o", vec![]),
            node("Transpose", &["o"], "o1", vec![("perm", ints(&[1, 0, 2]))]),
            node("Reshape", &["o1", "s2"], "o2", vec![]),
            node("Transpose", &["o2"], "o3", vec![("perm", ints(&[1, 0, 2]))]),
            node(
                "ReduceMean",
                &["o3"],
                "y",
                vec![("axes", ints(&[1])), ("keepdims", Attr::Int(0))],
            ),
        ];
        let inits = vec![
            w("wq", &[e, e], 50),
            s("s1", &[l as i64, (n * h) as i64, d as i64]),
            s("s2", &[l as i64, n as i64, e as i64]),
        ];
        assert_grad(&chain(nodes, inits, &[n, l, e], 13), &[n, l, e], 1.0);
    }
}
