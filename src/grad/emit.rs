//! Emission of backward-pass nodes: fresh names, constants as initializers, and opset-aware
//! helpers for the ops whose attribute/input form changed between opsets 11 and 21.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{NodeProto, TensorProto};

use super::onnx::{make_node, tensor_f32, tensor_i64, Attr};

/// Collects the nodes and initializers of the backward pass.
#[derive(Debug)]
pub struct Emitter {
    /// `ai.onnx` opset the emitted nodes must conform to.
    pub opset: i64,
    /// Emitted nodes, in emission (topological) order.
    pub nodes: Vec<NodeProto>,
    /// Emitted constants.
    pub initializers: Vec<TensorProto>,
    taken: HashSet<String>,
    counter: usize,
    i64_cache: HashMap<Vec<i64>, String>,
    f32_cache: HashMap<(Vec<usize>, Vec<u32>), String>,
}

impl Emitter {
    /// A new emitter whose fresh names avoid every name in `taken`.
    pub fn new(opset: i64, taken: HashSet<String>) -> Self {
        Emitter {
            opset,
            nodes: vec![],
            initializers: vec![],
            taken,
            counter: 0,
            i64_cache: HashMap::new(),
            f32_cache: HashMap::new(),
        }
    }

    /// A fresh tensor name starting with `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("grad/{hint}_{}", self.counter);
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    /// Emits `op` with one output and returns the output name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op, inputs, 1, attrs).pop().expect("one output")
    }

    /// Emits `op` with `n` outputs and returns their names.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        n: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|_| self.fresh(op)).collect();
        let refs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
        let name = outs[0].clone();
        self.nodes.push(make_node(op, &name, inputs, &refs, attrs));
        outs
    }

    /// Crops `(begin, end)` per axis off `g` inside the node that made it, when that node is
    /// an emitted Conv or ConvTranspose that nothing else reads and the crop is spatial:
    /// a Conv computes fewer border outputs (smaller pads), a ConvTranspose crops more
    /// (larger pads). Saves the Slice, and a copy of the whole tensor, that a Pad's VJP would
    /// add after the VJP of the Conv it feeds. Returns whether it did.
    pub fn fold_crop(&mut self, g: &str, crop: &[(i64, i64)]) -> bool {
        let spatial = crop.len().saturating_sub(2);
        if spatial == 0
            || crop[..2].iter().any(|&c| c != (0, 0))
            || crop.iter().any(|&(b, e)| b < 0 || e < 0)
            || self.nodes.iter().any(|n| n.input.iter().any(|i| i == g))
        {
            return false;
        }
        let Some(node) = self
            .nodes
            .iter_mut()
            .find(|n| n.output.first().is_some_and(|o| o == g))
        else {
            return false;
        };
        let sign = match node.op_type.as_str() {
            "Conv" => -1,
            "ConvTranspose" => 1,
            _ => return false,
        };
        let Some(pads) = node
            .attribute
            .iter_mut()
            .find(|a| a.name == "pads")
            .filter(|a| a.ints.len() == 2 * spatial)
        else {
            return false;
        };
        let mut new = pads.ints.clone();
        for (t, &(b, e)) in crop[2..].iter().enumerate() {
            new[t] += sign * b;
            new[spatial + t] += sign * e;
        }
        if new.iter().any(|&v| v < 0) {
            return false;
        }
        pads.ints = new;
        true
    }

    /// A 1-D int64 constant (cached: equal vectors share one initializer).
    pub fn const_i64(&mut self, v: &[i64]) -> String {
        if let Some(n) = self.i64_cache.get(v) {
            return n.clone();
        }
        let name = self.fresh("c");
        self.initializers.push(tensor_i64(&name, &[v.len()], v));
        self.i64_cache.insert(v.to_vec(), name.clone());
        name
    }

    /// An int64 constant of arbitrary shape.
    pub fn const_i64_shaped(&mut self, dims: &[usize], v: &[i64]) -> String {
        let name = self.fresh("c");
        self.initializers.push(tensor_i64(&name, dims, v));
        name
    }

    /// A float32 constant of shape `dims` (cached: equal constants, bit for bit, share one
    /// initializer).
    pub fn const_f32(&mut self, dims: &[usize], v: &[f32]) -> String {
        let key = (dims.to_vec(), v.iter().map(|x| x.to_bits()).collect());
        if let Some(n) = self.f32_cache.get(&key) {
            return n.clone();
        }
        let name = self.fresh("c");
        self.initializers.push(tensor_f32(&name, dims, v));
        self.f32_cache.insert(key, name.clone());
        name
    }

    /// A float32 scalar constant (rank 0).
    pub fn scalar(&mut self, v: f32) -> String {
        self.const_f32(&[], &[v])
    }

    /// `Reshape(x, dims)`.
    pub fn reshape(&mut self, x: &str, dims: &[usize]) -> String {
        let s = self.const_i64(&dims.iter().map(|&d| d as i64).collect::<Vec<_>>());
        self.op("Reshape", &[x, &s], vec![])
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[usize]) -> String {
        let perm = perm.iter().map(|&p| p as i64).collect();
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm))])
    }

    fn reduce(&mut self, op: &str, x: &str, axes: &[usize], keepdims: bool, since: i64) -> String {
        let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        let keep = ("keepdims", Attr::Int(keepdims as i64));
        if self.opset >= since {
            let a = self.const_i64(&axes);
            self.op(op, &[x, &a], vec![keep])
        } else {
            self.op(op, &[x], vec![("axes", Attr::Ints(axes)), keep])
        }
    }

    /// `ReduceSum` over `axes` (must be non-empty).
    pub fn reduce_sum(&mut self, x: &str, axes: &[usize], keepdims: bool) -> String {
        assert!(!axes.is_empty(), "reduce_sum needs axes");
        self.reduce("ReduceSum", x, axes, keepdims, 13)
    }

    /// `ReduceMean` over `axes` (must be non-empty).
    pub fn reduce_mean(&mut self, x: &str, axes: &[usize], keepdims: bool) -> String {
        assert!(!axes.is_empty(), "reduce_mean needs axes");
        self.reduce("ReduceMean", x, axes, keepdims, 18)
    }

    /// `Unsqueeze(x, axes)`.
    pub fn unsqueeze(&mut self, x: &str, axes: &[usize]) -> String {
        let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        if self.opset >= 13 {
            let a = self.const_i64(&axes);
            self.op("Unsqueeze", &[x, &a], vec![])
        } else {
            self.op("Unsqueeze", &[x], vec![("axes", Attr::Ints(axes))])
        }
    }

    /// `Slice` along `axes` with `starts`, `ends`, `steps` (steps must be 1 below opset 10).
    pub fn slice(
        &mut self,
        x: &str,
        starts: &[i64],
        ends: &[i64],
        axes: &[usize],
        steps: &[i64],
    ) -> String {
        let axes_i: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        if self.opset < 10 {
            assert!(steps.iter().all(|&s| s == 1), "Slice steps need opset 10");
            return self.op(
                "Slice",
                &[x],
                vec![
                    ("starts", Attr::Ints(starts.to_vec())),
                    ("ends", Attr::Ints(ends.to_vec())),
                    ("axes", Attr::Ints(axes_i)),
                ],
            );
        }
        let s = self.const_i64(starts);
        let e = self.const_i64(ends);
        let a = self.const_i64(&axes_i);
        let st = self.const_i64(steps);
        self.op("Slice", &[x, &s, &e, &a, &st], vec![])
    }

    /// `x` reversed along `axis` of extent `len` (a Gather: tract mis-optimises negative-step
    /// Slices next to reshapes).
    pub fn reverse(&mut self, x: &str, axis: usize, len: usize) -> String {
        let idx = self.const_i64(&(0..len as i64).rev().collect::<Vec<_>>());
        self.op("Gather", &[x, &idx], vec![("axis", Attr::Int(axis as i64))])
    }

    /// Constant-zero `Pad` with ONNX pads `[begins..., ends...]` (non-negative).
    pub fn pad(&mut self, x: &str, pads: &[i64]) -> String {
        if self.opset < 11 {
            return self.op("Pad", &[x], vec![("pads", Attr::Ints(pads.to_vec()))]);
        }
        let p = self.const_i64(pads);
        self.op("Pad", &[x, &p], vec![])
    }

    /// `Concat(xs, axis)`.
    pub fn concat(&mut self, xs: &[&str], axis: usize) -> String {
        self.op("Concat", xs, vec![("axis", Attr::Int(axis as i64))])
    }

    /// `Tile(x, repeats)`.
    pub fn tile(&mut self, x: &str, repeats: &[usize]) -> String {
        let r = self.const_i64(&repeats.iter().map(|&d| d as i64).collect::<Vec<_>>());
        self.op("Tile", &[x, &r], vec![])
    }

    /// Binary elementwise op.
    pub fn bin(&mut self, op: &str, a: &str, b: &str) -> String {
        self.op(op, &[a, b], vec![])
    }

    /// `a * b`.
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.bin("Mul", a, b)
    }

    /// `a + b`.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.bin("Add", a, b)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.bin("Sub", a, b)
    }

    /// `a / b`.
    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.bin("Div", a, b)
    }

    /// `x * c` for a float constant `c`.
    pub fn scale(&mut self, x: &str, c: f32) -> String {
        let s = self.scalar(c);
        self.mul(x, &s)
    }

    /// `Cast(x, to)` with an ONNX `DataType` code.
    pub fn cast(&mut self, x: &str, to: DataType) -> String {
        self.op("Cast", &[x], vec![("to", Attr::Int(to as i64))])
    }

    /// A float zero tensor of shape `dims`.
    pub fn zeros(&mut self, dims: &[usize]) -> String {
        let z = self.scalar(0.0);
        let s = self.const_i64(&dims.iter().map(|&d| d as i64).collect::<Vec<_>>());
        self.op("Expand", &[&z, &s], vec![])
    }

    /// Sum of several tensors of the same shape (`x` itself for one).
    pub fn sum(&mut self, xs: &[String]) -> String {
        match xs {
            [] => panic!("sum of nothing"),
            [x] => x.clone(),
            _ => {
                let refs: Vec<&str> = xs.iter().map(|s| s.as_str()).collect();
                self.op("Sum", &refs, vec![])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_avoid_taken_and_constants_are_shared() {
        let taken: HashSet<String> = ["grad/Relu_1".to_string()].into_iter().collect();
        let mut e = Emitter::new(13, taken);
        let y = e.op("Relu", &["x"], vec![]);
        assert_ne!(y, "grad/Relu_1");
        let a = e.const_i64(&[1, 2]);
        let b = e.const_i64(&[1, 2]);
        assert_eq!(a, b);
        assert_eq!(e.initializers.len(), 1);
    }

    #[test]
    fn reduce_form_follows_opset() {
        // (opset, ReduceMean rather than ReduceSum, inputs: axes as an attribute or an input)
        for (opset, mean, inputs) in [(11, false, 1), (13, false, 2), (17, true, 1), (18, true, 2)]
        {
            let mut e = Emitter::new(opset, HashSet::new());
            match mean {
                true => e.reduce_mean("x", &[0], true),
                false => e.reduce_sum("x", &[0], true),
            };
            assert_eq!(e.nodes[0].input.len(), inputs, "opset {opset}");
        }
    }
}
