//! Linear bounds propagated backwards (CROWN): rows of coefficients `A` on a tensor with a
//! constant each, such that for every input in the set `Σ A·t + bias ≤ objective` holds,
//! carried from the objective back to the input one node at a time.
//!
//! A row is a *window*: dense coefficients over `(C, h, w)` at a per-row origin of the
//! tensor's `(C, H, W)` map (entries outside the map are zero). The rows of one neuron of a
//! convolutional layer stay small as they go back through convolutions and pooling (its
//! receptive field); rows from a dense layer cover the whole map.

use super::conv::backward_window;
use super::graph::{chw, Op, Src, Window};
use super::relax::Relaxation;

/// A batch of rows over one tensor.
#[derive(Debug, Clone)]
pub struct Rows {
    /// Window channels, height, width.
    pub win: (usize, usize, usize),
    /// Per row, the tensor position of the window's top left.
    pub origin: Vec<(isize, isize)>,
    /// `n × C·h·w` coefficients.
    pub vals: Vec<f32>,
    /// Per row, the constant.
    pub bias: Vec<f64>,
}

/// What a nonlinear node's rows need: the relaxation per element (activations) or per output
/// element of a max pooling.
#[derive(Debug, Clone)]
pub enum Relax {
    /// Elementwise relaxations.
    Act(Vec<Relaxation>),
    /// Per pooled element: the input (flat index) bounding it below, and above either an
    /// input (`Some`) or the constant.
    Pool(Vec<(u32, Option<u32>, f32)>),
}

impl Rows {
    /// Number of rows.
    pub fn n(&self) -> usize {
        self.bias.len()
    }

    fn size(&self) -> usize {
        self.win.0 * self.win.1 * self.win.2
    }

    /// Full-map rows `vals` (`n × numel`) over a tensor of `dims`.
    pub fn full(dims: (usize, usize, usize), vals: Vec<f32>, bias: Vec<f64>) -> Rows {
        Rows {
            win: dims,
            origin: vec![(0, 0); bias.len()],
            vals,
            bias,
        }
    }

    /// One row per element `e` of `elems` (sign `+1`, or `−1` when `neg`), each a window
    /// of one position.
    pub fn unit(dims: (usize, usize, usize), elems: &[usize], neg: bool) -> Rows {
        let (c, h, w) = dims;
        if h == 1 && w == 1 {
            let mut vals = vec![0.0; elems.len() * c];
            for (r, &e) in elems.iter().enumerate() {
                vals[r * c + e] = if neg { -1.0 } else { 1.0 };
            }
            return Rows::full(dims, vals, vec![0.0; elems.len()]);
        }
        let mut vals = vec![0.0; elems.len() * c];
        let mut origin = Vec::with_capacity(elems.len());
        for (r, &e) in elems.iter().enumerate() {
            let (ch, p) = (e / (h * w), e % (h * w));
            vals[r * c + ch] = if neg { -1.0 } else { 1.0 };
            origin.push(((p / w) as isize, (p % w) as isize));
        }
        Rows {
            win: (c, 1, 1),
            origin,
            vals,
            bias: vec![0.0; elems.len()],
        }
    }

    fn is_full(&self, dims: (usize, usize, usize)) -> bool {
        self.win == dims && self.origin.iter().all(|&o| o == (0, 0))
    }

    /// The same rows as full-map rows over a tensor of `dims`.
    pub fn into_full(self, dims: (usize, usize, usize)) -> Rows {
        if self.is_full(dims) {
            return self;
        }
        let len = dims.0 * dims.1 * dims.2;
        let mut vals = vec![0.0; self.n() * len];
        visit(self.win, &self.origin, dims, |r, flat, at| {
            vals[r * len + flat] += self.vals[at]
        });
        Rows::full(dims, vals, self.bias)
    }

    /// The sum of two batches of the same rows over a tensor of `dims`.
    pub fn add(self, other: Rows, dims: (usize, usize, usize)) -> Rows {
        let (mut a, b) = if self.win == other.win && self.origin == other.origin {
            (self, other)
        } else {
            (self.into_full(dims), other.into_full(dims))
        };
        a.vals.iter_mut().zip(&b.vals).for_each(|(x, y)| *x += y);
        a.bias.iter_mut().zip(&b.bias).for_each(|(x, y)| *x += y);
        a
    }

    /// Calls `f(row, flat tensor index, &mut coefficient)` for every in-map entry.
    fn for_each_mut(
        &mut self,
        dims: (usize, usize, usize),
        mut f: impl FnMut(usize, usize, &mut f32),
    ) {
        let vals = &mut self.vals;
        visit(self.win, &self.origin, dims, |r, flat, at| {
            f(r, flat, &mut vals[at])
        });
    }

    /// Calls `f(row, flat tensor index, coefficient)` for every non-zero in-map entry.
    pub fn for_each(&self, dims: (usize, usize, usize), mut f: impl FnMut(usize, usize, f32)) {
        visit(self.win, &self.origin, dims, |r, flat, at| {
            let v = self.vals[at];
            if v != 0.0 {
                f(r, flat, v);
            }
        });
    }

    /// Zeroes the entries outside a map of `dims` (the padding of the op that produced them).
    fn mask(&mut self, dims: (usize, usize, usize)) {
        let (_, h, w) = dims;
        let (c, wh, ww) = self.win;
        let size = self.size();
        for r in 0..self.n() {
            let (oy, ox) = self.origin[r];
            if oy >= 0
                && ox >= 0
                && oy + wh as isize <= h as isize
                && ox + ww as isize <= w as isize
            {
                continue;
            }
            let vals = &mut self.vals[r * size..(r + 1) * size];
            for ch in 0..c {
                for y in 0..wh {
                    let ty = oy + y as isize;
                    for x in 0..ww {
                        let tx = ox + x as isize;
                        if ty < 0 || ty >= h as isize || tx < 0 || tx >= w as isize {
                            vals[(ch * wh + y) * ww + x] = 0.0;
                        }
                    }
                }
            }
        }
    }

    /// Windows as large as the map become full-map rows.
    fn settle(self, dims: (usize, usize, usize)) -> Rows {
        let mut s = self;
        s.mask(dims);
        if s.win.1 >= dims.1 && s.win.2 >= dims.2 {
            s.into_full(dims)
        } else {
            s
        }
    }
}

/// Calls `f(row, flat tensor index, position in the rows' values)` for every in-map entry of
/// windows `win` at `origin` over a map of `dims`.
fn visit(
    win: (usize, usize, usize),
    origin: &[(isize, isize)],
    (_, h, w): (usize, usize, usize),
    mut f: impl FnMut(usize, usize, usize),
) {
    let (c, wh, ww) = win;
    let size = c * wh * ww;
    for (r, &(oy, ox)) in origin.iter().enumerate() {
        let ys = (0.max(-oy) as usize)..(wh as isize).min(h as isize - oy).max(0) as usize;
        let xs = (0.max(-ox) as usize)..(ww as isize).min(w as isize - ox).max(0) as usize;
        for ch in 0..c {
            for y in ys.clone() {
                let base = (ch * h + (oy + y as isize) as usize) * w;
                let at = r * size + (ch * wh + y) * ww;
                for x in xs.clone() {
                    f(r, base + (ox + x as isize) as usize, at + x);
                }
            }
        }
    }
}

/// The rows on each active input of `op` (by slot) from `rows` on its output, for lower
/// bounds. `dims_in` are the inputs' shapes, `dims_out` the output's.
pub fn backward(
    op: &Op,
    rows: Rows,
    shapes_in: &[&[usize]],
    shape_out: &[usize],
    relax: Option<&Relax>,
) -> Vec<(usize, Rows)> {
    let dims_out = chw(shape_out);
    let dims_in: Vec<(usize, usize, usize)> = shapes_in.iter().map(|s| chw(s)).collect();
    match op {
        Op::Identity => {
            if dims_in[0] == dims_out {
                vec![(0, rows)]
            } else {
                let f = rows.into_full(dims_out);
                vec![(0, Rows::full(dims_in[0], f.vals, f.bias))]
            }
        }
        Op::Linear { w, b } => {
            let f = rows.into_full(dims_out);
            let (fo, fi) = (b.len(), w.len() / b.len().max(1));
            let n = f.n();
            let mut vals = vec![0.0f32; n * fi];
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    fo,
                    fi,
                    1.0,
                    f.vals.as_ptr(),
                    fo as isize,
                    1,
                    w.as_ptr(),
                    fi as isize,
                    1,
                    0.0,
                    vals.as_mut_ptr(),
                    fi as isize,
                    1,
                );
            }
            let bias = (0..n)
                .map(|r| f.bias[r] + dot(&f.vals[r * fo..(r + 1) * fo], b))
                .collect();
            vec![(0, Rows::full(dims_in[0], vals, bias))]
        }
        Op::Conv { w, b, groups, win } => {
            vec![(0, conv_back(rows, dims_in[0], w, b, *groups, win))]
        }
        Op::Affine { a, c } => {
            let mut rows = rows;
            let mut extra = vec![0.0f64; rows.n()];
            rows.for_each_mut(dims_out, |r, i, v| {
                extra[r] += f64::from(*v) * f64::from(c[i]);
                *v *= a[i];
            });
            rows.bias.iter_mut().zip(extra).for_each(|(b, e)| *b += e);
            vec![(0, rows)]
        }
        Op::Sum(s) => {
            let mut second = rows.clone();
            second.vals.iter_mut().for_each(|v| *v *= s);
            second.bias.iter_mut().for_each(|b| *b = 0.0);
            vec![(0, rows), (1, second)]
        }
        Op::Act(_) => {
            let Some(Relax::Act(rel)) = relax else {
                unreachable!("activations are relaxed before their rows go back")
            };
            let mut rows = rows;
            let mut extra = vec![0.0f64; rows.n()];
            rows.for_each_mut(dims_out, |r, i, v| {
                let (slope, icpt) = if *v >= 0.0 { rel[i].lo } else { rel[i].hi };
                extra[r] += f64::from(*v) * f64::from(icpt);
                *v *= slope;
            });
            rows.bias.iter_mut().zip(extra).for_each(|(b, e)| *b += e);
            vec![(0, rows)]
        }
        Op::MaxPool(win) => {
            let Some(Relax::Pool(rel)) = relax else {
                unreachable!("max pools are relaxed before their rows go back")
            };
            vec![(
                0,
                pool_back(rows, dims_out, dims_in[0], win, |i, v, put, bias| {
                    let (lo, hi, c) = rel[i];
                    if v >= 0.0 {
                        put(lo as usize, v);
                    } else if let Some(h) = hi {
                        put(h as usize, v);
                    } else {
                        *bias += f64::from(v) * f64::from(c);
                    }
                }),
            )]
        }
        Op::AvgPool(win, include_pad) => {
            let (_, hi, wi) = dims_in[0];
            let (_, _, wo) = dims_out;
            vec![(
                0,
                pool_back(rows, dims_out, dims_in[0], win, |i, v, put, _| {
                    let p = i % (dims_out.1 * wo);
                    let (oy, ox) = (p / wo, p % wo);
                    let c = i / (dims_out.1 * wo);
                    let taps = window_taps(win, oy, ox, hi, wi);
                    let count = if *include_pad {
                        win.k.0 * win.k.1
                    } else {
                        taps.len()
                    };
                    for (iy, ix) in taps {
                        put((c * hi + iy) * wi + ix, v / count as f32);
                    }
                }),
            )]
        }
        Op::GlobalAvgPool => {
            let f = rows.into_full(dims_out);
            let (c, h, w) = dims_in[0];
            let n = f.n();
            let mut vals = vec![0.0; n * c * h * w];
            for r in 0..n {
                for ch in 0..c {
                    let v = f.vals[r * c + ch] / (h * w) as f32;
                    vals[(r * c + ch) * h * w..(r * c + ch + 1) * h * w]
                        .iter_mut()
                        .for_each(|x| *x = v);
                }
            }
            vec![(0, Rows::full(dims_in[0], vals, f.bias))]
        }
        Op::Gather(map) => {
            let f = rows.into_full(dims_out);
            let n = f.n();
            let no = map.len();
            let mut outs: Vec<Rows> = dims_in
                .iter()
                .map(|&d| Rows::full(d, vec![0.0; n * d.0 * d.1 * d.2], vec![0.0; n]))
                .collect();
            let mut bias = f.bias.clone();
            for (r, bias) in bias.iter_mut().enumerate() {
                for (j, src) in map.iter().enumerate() {
                    let v = f.vals[r * no + j];
                    if v == 0.0 {
                        continue;
                    }
                    match *src {
                        Src::Input(slot, i) => {
                            let len = dims_in[slot as usize].0
                                * dims_in[slot as usize].1
                                * dims_in[slot as usize].2;
                            outs[slot as usize].vals[r * len + i as usize] += v;
                        }
                        Src::Const(c) => *bias += f64::from(v) * f64::from(c),
                    }
                }
            }
            outs[0].bias = bias;
            outs.into_iter().enumerate().collect()
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// The in-map input positions of the pooling window at output `(oy, ox)`.
pub fn window_taps(
    win: &Window,
    oy: usize,
    ox: usize,
    hi: usize,
    wi: usize,
) -> Vec<(usize, usize)> {
    let mut taps = Vec::with_capacity(win.k.0 * win.k.1);
    for ky in 0..win.k.0 {
        let iy = (oy * win.s.0 + ky * win.d.0) as isize - win.pad.0 as isize;
        if iy < 0 || iy >= hi as isize {
            continue;
        }
        for kx in 0..win.k.1 {
            let ix = (ox * win.s.1 + kx * win.d.1) as isize - win.pad.1 as isize;
            if ix >= 0 && ix < wi as isize {
                taps.push((iy as usize, ix as usize));
            }
        }
    }
    taps
}

/// Rows through a convolution: the windows grow by the kernel and the bias joins the constant.
fn conv_back(
    rows: Rows,
    dims_in: (usize, usize, usize),
    w: &[f32],
    b: &[f32],
    groups: usize,
    win: &Window,
) -> Rows {
    let (co, h, wd) = rows.win;
    let h2 = (h - 1) * win.s.0 + (win.k.0 - 1) * win.d.0 + 1;
    let w2 = (wd - 1) * win.s.1 + (win.k.1 - 1) * win.d.1 + 1;
    let ci = dims_in.0;
    let (size, size2) = (co * h * wd, ci * h2 * w2);
    let n = rows.n();
    let mut vals = vec![0.0f32; n * size2];
    let mut bias = rows.bias.clone();
    let mut scratch = Vec::new();
    for (v, bias) in rows.vals.chunks_exact(size).zip(bias.iter_mut()) {
        for c in 0..co {
            let s: f64 = v[c * h * wd..(c + 1) * h * wd]
                .iter()
                .map(|&x| f64::from(x))
                .sum();
            *bias += s * f64::from(b[c]);
        }
    }
    if h * wd == 1 && groups == 1 && win.d == (1, 1) {
        // One position per row: all rows in one product, `(n × co) · (co × ci·kh·kw)`,
        // whose rows are the windows `(ci, kh, kw)` already.
        let kk = ci * win.k.0 * win.k.1;
        unsafe {
            matrixmultiply::sgemm(
                n,
                co,
                kk,
                1.0,
                rows.vals.as_ptr(),
                co as isize,
                1,
                w.as_ptr(),
                kk as isize,
                1,
                0.0,
                vals.as_mut_ptr(),
                kk as isize,
                1,
            );
        }
    } else {
        for r in 0..n {
            let v = &rows.vals[r * size..(r + 1) * size];
            backward_window(
                v,
                (co, h, wd),
                w,
                ci,
                groups,
                win,
                &mut vals[r * size2..(r + 1) * size2],
                (h2, w2),
                &mut scratch,
            );
        }
    }
    let origin = rows
        .origin
        .iter()
        .map(|&(oy, ox)| {
            (
                oy * win.s.0 as isize - win.pad.0 as isize,
                ox * win.s.1 as isize - win.pad.1 as isize,
            )
        })
        .collect();
    Rows {
        win: (ci, h2, w2),
        origin,
        vals,
        bias,
    }
    .settle(dims_in)
}

/// Rows through a pooling: `each(output flat index, coefficient, put, bias)` spreads one
/// coefficient onto input flat indices with `put(index, value)`.
fn pool_back(
    rows: Rows,
    dims_out: (usize, usize, usize),
    dims_in: (usize, usize, usize),
    win: &Window,
    each: impl Fn(usize, f32, &mut dyn FnMut(usize, f32), &mut f64),
) -> Rows {
    let (c, h, wd) = rows.win;
    let h2 = (h - 1) * win.s.0 + (win.k.0 - 1) * win.d.0 + 1;
    let w2 = (wd - 1) * win.s.1 + (win.k.1 - 1) * win.d.1 + 1;
    let (_, hi, wi) = dims_in;
    let (_, ho, wo) = dims_out;
    let (size, size2) = (c * h * wd, c * h2 * w2);
    let n = rows.n();
    let mut vals = vec![0.0f32; n * size2];
    let mut bias = rows.bias.clone();
    let mut origin = Vec::with_capacity(n);
    for r in 0..n {
        let (oy, ox) = rows.origin[r];
        let (ny, nx) = (
            oy * win.s.0 as isize - win.pad.0 as isize,
            ox * win.s.1 as isize - win.pad.1 as isize,
        );
        origin.push((ny, nx));
        let src = &rows.vals[r * size..(r + 1) * size];
        let dst = &mut vals[r * size2..(r + 1) * size2];
        for ch in 0..c {
            for y in 0..h {
                let ty = oy + y as isize;
                if ty < 0 || ty >= ho as isize {
                    continue;
                }
                for x in 0..wd {
                    let tx = ox + x as isize;
                    let v = src[(ch * h + y) * wd + x];
                    if tx < 0 || tx >= wo as isize || v == 0.0 {
                        continue;
                    }
                    let i = (ch * ho + ty as usize) * wo + tx as usize;
                    let mut put = |flat: usize, val: f32| {
                        let p = flat % (hi * wi);
                        let (iy, ix) = ((p / wi) as isize - ny, (p % wi) as isize - nx);
                        dst[(ch * h2 + iy as usize) * w2 + ix as usize] += val;
                    };
                    each(i, v, &mut put, &mut bias[r]);
                }
            }
        }
    }
    Rows {
        win: (c, h2, w2),
        origin,
        vals,
        bias,
    }
    .settle(dims_in)
}
