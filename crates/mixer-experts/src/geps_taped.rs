//! A GEPS expert on the host with its backward pass: the parameters as one flat vector, bound
//! to per-row contexts and scales as a [`TapedField`] whose evaluations record their layer
//! activations, and whose pull-backs accumulate the gradients of the weights, of the per-row
//! biases and slopes, of the encoded contexts and of the scales. [`TapedGeps::finish`] then
//! takes the per-row terms back through the binding (context shift, MIP, `b0 + ctx A_b^T`,
//! `beta0 + ctx A_beta^T`) once per rollout.

use burn::tensor::{Tensor, backend::Backend};

use mixer_core::{HostField, TapedField};

use crate::GepsExpert;
use crate::host_kernel::{HostKernel, MatRef, gemm};

/// Offsets of one low-rank layer's parameters in the flat vector.
#[derive(Clone, Copy, Debug)]
struct LayerAt {
    input: usize,
    output: usize,
    /// `W0: [out, in]`.
    weight: usize,
    /// `b0: [out]`.
    bias: usize,
    /// `A: [out, r]`.
    a: usize,
    /// `B: [r, in]`.
    b: usize,
    /// `A_b: [out, r]`.
    a_bias: usize,
}

/// Offsets of one learnable swish's parameters.
#[derive(Clone, Copy, Debug)]
struct SwishAt {
    units: usize,
    /// `beta0: [units]`.
    beta: usize,
    /// `A_beta: [units, r]`, when the slopes read the context.
    a_beta: Option<usize>,
}

/// Where each parameter of a GEPS expert sits in its flat vector ([`GepsLayout::flat`]): per
/// layer `W0, b0, A, B, A_b`, then per swish `beta0` and `A_beta`, then the context shift; each
/// row-major.
#[derive(Clone, Debug)]
pub(crate) struct GepsLayout {
    context: usize,
    rank: usize,
    mip: bool,
    layers: Vec<LayerAt>,
    swishes: Vec<SwishAt>,
    shift: Option<usize>,
    len: usize,
}

impl GepsLayout {
    /// The layout of `expert`'s parameters.
    pub(crate) fn of<B: Backend>(expert: &GepsExpert<B>) -> Self {
        let rank = mixer_hyper::encoded_width(expert.context, expert.mip);
        let mut len = 0;
        let mut take = |n: usize| {
            len += n;
            len - n
        };
        let layers = expert
            .layers
            .iter()
            .map(|l| {
                let [output, input] = l.weight.dims();
                LayerAt {
                    input,
                    output,
                    weight: take(output * input),
                    bias: take(output),
                    a: take(output * rank),
                    b: take(rank * input),
                    a_bias: take(output * rank),
                }
            })
            .collect();
        let swishes = expert
            .activations
            .iter()
            .map(|s| {
                let units = s.beta.dims()[0];
                SwishAt { units, beta: take(units), a_beta: s.a_beta.as_ref().map(|_| take(units * rank)) }
            })
            .collect();
        let shift = expert.context_shift.as_ref().map(|_| take(1));
        Self { context: expert.context, rank, mip: expert.mip, layers, swishes, shift, len }
    }

    /// Number of values of the flat vector.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Context values one row reads.
    pub(crate) fn context_len(&self) -> usize {
        self.context
    }

    /// `expert`'s parameters flattened in this layout's order, as `[len]` (gradients reach
    /// the expert through it).
    pub(crate) fn flat<B: Backend>(expert: &GepsExpert<B>) -> Tensor<B, 1> {
        let mut parts: Vec<Tensor<B, 1>> = Vec::new();
        for l in &expert.layers {
            parts.push(l.weight.val().flatten(0, 1));
            parts.push(l.bias.val());
            parts.push(l.a.val().flatten(0, 1));
            parts.push(l.b.val().flatten(0, 1));
            parts.push(l.a_bias.val().flatten(0, 1));
        }
        for s in &expert.activations {
            parts.push(s.beta.val());
            if let Some(a) = &s.a_beta {
                parts.push(a.val().flatten(0, 1));
            }
        }
        if let Some(shift) = &expert.context_shift {
            parts.push(shift.val());
        }
        Tensor::cat(parts, 0)
    }
}

/// What one evaluation records: the input of every layer (`h[0] = x`), `u = h B^T` of every
/// layer, the pre-activation `z` and `sigmoid(beta z)` of every hidden layer, and the last
/// layer's output before the row scale.
#[derive(Clone, Debug, Default)]
pub(crate) struct GepsTape<T> {
    h: Vec<Vec<T>>,
    u: Vec<Vec<T>>,
    z: Vec<Vec<T>>,
    sig: Vec<Vec<T>>,
    last: Vec<T>,
}

/// One GEPS expert bound to `rows` rows (their context slices and scales), forward and
/// backward, with its gradient accumulators.
pub(crate) struct TapedGeps<'a, T> {
    layout: &'a GepsLayout,
    theta: &'a [T],
    rows: usize,
    /// The shifted context, `[rows, c]` (before MIP).
    shifted: Vec<T>,
    /// The encoded context, `[rows, r]`.
    enc: Vec<T>,
    /// Per layer, `b0 + enc A_b^T`, `[rows, out]`.
    bias_rows: Vec<Vec<T>>,
    /// Per swish, `beta0 + enc A_beta^T`, `[rows, units]`.
    beta_rows: Vec<Vec<T>>,
    /// Per layer, `W0^T: [in, out]`, `B^T: [in, r]` and `A^T: [r, out]` row-major, so that
    /// every forward product reads its right operand row by row.
    transposed: Vec<[Vec<T>; 3]>,
    /// Scale of every row (gate weight times time rate).
    scale: Vec<T>,
    /// Whether the pull-backs accumulate the parameters' gradients (not when the parameters
    /// are frozen: context steps, adaptation).
    param_grads: bool,
    /// Gradient of the flat parameters.
    grad: Vec<T>,
    grad_bias_rows: Vec<Vec<T>>,
    grad_beta_rows: Vec<Vec<T>>,
    grad_enc: Vec<T>,
    grad_scale: Vec<T>,
    /// The tape of untaped evaluations.
    scratch: GepsTape<T>,
    /// Scratch: `(u ⊙ enc)` and cotangents.
    v: Vec<T>,
    gz: Vec<T>,
    gh: Vec<T>,
    gv: Vec<T>,
}

/// What a backward pass gives, per rollout: the gradient of the flat parameters, of the
/// context rows `[rows, c]` and of the row scales `[rows]`.
pub(crate) struct GepsGradients<T> {
    pub(crate) theta: Vec<T>,
    pub(crate) context: Vec<T>,
    pub(crate) scale: Vec<T>,
}

/// The `[rows, cols]` block of flat parameters `theta` at `at`, row-major.
fn block<T>(theta: &[T], at: usize, rows: usize, cols: usize) -> &[T] {
    &theta[at..at + rows * cols]
}

/// `(tanh(v) + 1) pi / 4`: the MIP angle of a (shifted) context entry.
fn mip_angle(v: f64) -> f64 {
    (v.tanh() + 1.0) * 0.5 * std::f64::consts::FRAC_PI_2
}

impl<'a, T: HostKernel> TapedGeps<'a, T> {
    /// The expert with flat parameters `theta` on rows with context slices `ctx: [rows, c]`
    /// and scales `scale: [rows]`.
    pub(crate) fn bind(layout: &'a GepsLayout, theta: &'a [T], ctx: &[T], scale: &[T]) -> Self {
        assert_eq!(theta.len(), layout.len, "flat GEPS parameters");
        let (c, r) = (layout.context, layout.rank);
        let rows = scale.len();
        assert_eq!(ctx.len(), rows * c, "context rows");
        let shifted: Vec<T> = match layout.shift {
            Some(at) => ctx.iter().map(|&v| v + theta[at]).collect(),
            None => ctx.to_vec(),
        };
        let enc = if layout.mip {
            let mut enc = Vec::with_capacity(rows * r);
            for row in shifted.chunks_exact(c) {
                enc.extend(row.iter().map(|&v| T::from_f64(mip_angle(v.to_f64()).cos())));
                enc.extend(row.iter().map(|&v| T::from_f64(mip_angle(v.to_f64()).sin())));
            }
            enc
        } else {
            shifted.clone()
        };
        let per_row = |root: usize, units: usize, factor: Option<usize>| {
            let mut v = vec![T::ZERO; rows * units];
            if let Some(f) = factor {
                let f = MatRef::transposed(&theta[f..f + units * r], r, units);
                gemm(MatRef::row_major(&enc, rows, r), f, T::ZERO, &mut v);
            }
            for row in v.chunks_exact_mut(units) {
                for (x, &b) in row.iter_mut().zip(&theta[root..root + units]) {
                    *x = b + *x;
                }
            }
            v
        };
        let bias_rows: Vec<Vec<T>> = layout.layers.iter().map(|l| per_row(l.bias, l.output, Some(l.a_bias))).collect();
        let beta_rows: Vec<Vec<T>> = layout.swishes.iter().map(|s| per_row(s.beta, s.units, s.a_beta)).collect();
        let width = layout.layers.iter().map(|l| l.output.max(l.input)).max().unwrap_or(0);
        let transpose = |at: usize, rows: usize, cols: usize| {
            let m = &theta[at..at + rows * cols];
            (0..cols).flat_map(|j| (0..rows).map(move |i| m[i * cols + j])).collect::<Vec<T>>()
        };
        let transposed = layout
            .layers
            .iter()
            .map(|l| [transpose(l.weight, l.output, l.input), transpose(l.b, r, l.input), transpose(l.a, l.output, r)])
            .collect();
        Self {
            layout,
            theta,
            rows,
            shifted,
            enc,
            grad_bias_rows: bias_rows.iter().map(|b| vec![T::ZERO; b.len()]).collect(),
            grad_beta_rows: beta_rows.iter().map(|b| vec![T::ZERO; b.len()]).collect(),
            bias_rows,
            beta_rows,
            transposed,
            scale: scale.to_vec(),
            param_grads: true,
            grad: vec![T::ZERO; layout.len],
            grad_enc: vec![T::ZERO; rows * r],
            grad_scale: vec![T::ZERO; rows],
            scratch: GepsTape::default(),
            v: vec![T::ZERO; rows * r],
            gz: vec![T::ZERO; rows * width],
            gh: vec![T::ZERO; rows * width],
            gv: vec![T::ZERO; rows * r],
        }
    }

    /// The same field, its pull-backs leaving the parameters' gradients out (they stay zero);
    /// contexts, scales and states still get theirs.
    pub(crate) fn without_param_grads(mut self) -> Self {
        self.param_grads = false;
        self
    }

    /// Takes the accumulated per-row gradients back through the binding and returns every
    /// gradient of the rollout.
    pub(crate) fn finish(mut self) -> GepsGradients<T> {
        let (rows, r, c) = (self.rows, self.layout.rank, self.layout.context);
        let enc = MatRef::row_major(&self.enc, rows, r);
        // `bias = b0 + enc A_b^T` and `beta = beta0 + enc A_beta^T`
        let terms = self.layout.layers.iter().map(|l| (l.output, l.bias, Some(l.a_bias)));
        let terms: Vec<_> = terms
            .zip(&self.grad_bias_rows)
            .chain(self.layout.swishes.iter().map(|s| (s.units, s.beta, s.a_beta)).zip(&self.grad_beta_rows))
            .collect();
        for ((units, root, factor), g) in terms {
            if self.param_grads {
                for row in g.chunks_exact(units) {
                    for (acc, &v) in self.grad[root..root + units].iter_mut().zip(row) {
                        *acc += v;
                    }
                }
            }
            if let Some(f) = factor {
                if self.param_grads {
                    gemm(MatRef::transposed(g, units, rows), enc, T::ONE, &mut self.grad[f..f + units * r]);
                }
                let g_rows = MatRef::row_major(g, rows, units);
                gemm(g_rows, MatRef::row_major(&self.theta[f..f + units * r], units, r), T::ONE, &mut self.grad_enc);
            }
        }
        // encoding and shift
        let context = if self.layout.mip {
            let mut g = vec![T::ZERO; rows * c];
            for ((gr, er), sr) in
                g.chunks_exact_mut(c).zip(self.grad_enc.chunks_exact(r)).zip(self.shifted.chunks_exact(c))
            {
                for j in 0..c {
                    let v = sr[j].to_f64();
                    let (angle, th) = (mip_angle(v), v.tanh());
                    let d_angle = (1.0 - th * th) * 0.25 * std::f64::consts::PI;
                    let d = -er[j].to_f64() * angle.sin() + er[c + j].to_f64() * angle.cos();
                    gr[j] = T::from_f64(d * d_angle);
                }
            }
            g
        } else {
            self.grad_enc
        };
        if let Some(at) = self.layout.shift.filter(|_| self.param_grads) {
            let mut s = T::ZERO;
            for &v in &context {
                s += v;
            }
            self.grad[at] += s;
        }
        GepsGradients { theta: self.grad, context, scale: self.grad_scale }
    }
}

impl<T: HostKernel> HostField<T> for TapedGeps<'_, T> {
    fn dim(&self) -> usize {
        self.layout.layers[0].input
    }

    fn rows(&self) -> usize {
        self.rows
    }

    /// An untaped evaluation records into one scratch tape, reused (no allocation per step).
    fn eval(&mut self, t: f64, x: &[T], out: &mut [T]) {
        let mut tape = std::mem::take(&mut self.scratch);
        self.eval_taped(t, x, out, &mut tape);
        self.scratch = tape;
    }
}

impl<T: HostKernel> TapedField<T> for TapedGeps<'_, T> {
    type Tape = GepsTape<T>;

    fn new_tape(&self) -> GepsTape<T> {
        GepsTape::default()
    }

    fn tape_len(&self) -> usize {
        let per_row: usize = self.layout.layers.iter().map(|l| l.input + self.layout.rank).sum::<usize>()
            + self.layout.swishes.iter().map(|s| 2 * s.units).sum::<usize>()
            + self.dim();
        per_row * self.rows
    }

    fn eval_taped(&mut self, _t: f64, x: &[T], out: &mut [T], tape: &mut GepsTape<T>) {
        let (rows, r) = (self.rows, self.layout.rank);
        let layers = &self.layout.layers;
        tape.h.resize(layers.len(), Vec::new());
        tape.u.resize(layers.len(), Vec::new());
        tape.z.resize(layers.len() - 1, Vec::new());
        tape.sig.resize(layers.len() - 1, Vec::new());
        tape.h[0].clear();
        tape.h[0].extend_from_slice(x);
        for (l, at) in layers.iter().enumerate() {
            let h = MatRef::row_major(&tape.h[l], rows, at.input);
            let u = &mut tape.u[l];
            u.resize(rows * r, T::ZERO);
            let [w_t, b_t, a_t] = &self.transposed[l];
            gemm(h, MatRef::row_major(b_t, at.input, r), T::ZERO, u);
            for ((v, &uv), &e) in self.v.iter_mut().zip(u.iter()).zip(&self.enc) {
                *v = uv * e;
            }
            let z = if l + 1 == layers.len() { &mut tape.last } else { &mut tape.z[l] };
            z.resize(rows * at.output, T::ZERO);
            gemm(h, MatRef::row_major(w_t, at.input, at.output), T::ZERO, z);
            gemm(MatRef::row_major(&self.v, rows, r), MatRef::row_major(a_t, r, at.output), T::ONE, z);
            for (zv, &b) in z.iter_mut().zip(&self.bias_rows[l]) {
                *zv += b;
            }
            if l + 1 < layers.len() {
                let (sig, next) = (&mut tape.sig[l], &mut tape.h[l + 1]);
                sig.resize(z.len(), T::ZERO);
                next.resize(z.len(), T::ZERO);
                for (((s, n), &zv), &b) in sig.iter_mut().zip(next.iter_mut()).zip(z.iter()).zip(&self.beta_rows[l]) {
                    *s = T::ONE / (T::ONE + (-(zv * b)).fast_exp());
                    *n = zv * *s;
                }
            }
        }
        let d = self.dim();
        for ((o, &zv), row) in out.iter_mut().zip(&tape.last).zip(0..) {
            *o = zv * self.scale[row / d];
        }
    }

    fn pull_back(&mut self, tape: &GepsTape<T>, g: &[T], x_bar: &mut [T]) {
        let (rows, r, d, theta) = (self.rows, self.layout.rank, self.dim(), self.theta);
        let layers = &self.layout.layers;
        // out = last ⊙ scale
        let gz = &mut self.gz[..rows * d];
        for (i, ((gzv, &gv), &zv)) in gz.iter_mut().zip(g).zip(&tape.last).enumerate() {
            self.grad_scale[i / d] += gv * zv;
            *gzv = gv * self.scale[i / d];
        }
        for (l, at) in layers.iter().enumerate().rev() {
            let (out, input) = (at.output, at.input);
            let gz = MatRef::row_major(&self.gz[..rows * out], rows, out);
            let gz_t = MatRef::transposed(&self.gz[..rows * out], out, rows);
            let h = MatRef::row_major(&tape.h[l], rows, input);
            for (acc, &v) in self.grad_bias_rows[l].iter_mut().zip(&self.gz[..rows * out]) {
                *acc += v;
            }
            if self.param_grads {
                gemm(gz_t, h, T::ONE, &mut self.grad[at.weight..at.weight + out * input]);
                // v = u ⊙ enc; dA += gz^T v
                for ((v, &uv), &e) in self.v.iter_mut().zip(&tape.u[l]).zip(&self.enc) {
                    *v = uv * e;
                }
                gemm(gz_t, MatRef::row_major(&self.v, rows, r), T::ONE, &mut self.grad[at.a..at.a + out * r]);
            }
            // gv = gz A
            gemm(gz, MatRef::row_major(block(theta, at.a, out, r), out, r), T::ZERO, &mut self.gv);
            // d enc += gv ⊙ u; gu = gv ⊙ enc (in place)
            for (((ge, gv), &uv), &e) in self.grad_enc.iter_mut().zip(self.gv.iter_mut()).zip(&tape.u[l]).zip(&self.enc)
            {
                *ge += *gv * uv;
                *gv *= e;
            }
            let gu = MatRef::row_major(&self.gv, rows, r);
            if self.param_grads {
                gemm(MatRef::transposed(&self.gv, r, rows), h, T::ONE, &mut self.grad[at.b..at.b + r * input]);
            }
            // gh = gz W0 + gu B
            let gh: &mut [T] = if l == 0 { &mut *x_bar } else { &mut self.gh[..rows * input] };
            gemm(gz, MatRef::row_major(block(theta, at.weight, out, input), out, input), T::ZERO, gh);
            gemm(gu, MatRef::row_major(block(theta, at.b, r, input), r, input), T::ONE, gh);
            if l > 0 {
                // h = z ⊙ s with s = sigmoid(beta z): dh/dz = s (1 + beta z (1 - s)), dh/dbeta = z^2 s (1 - s)
                let (z, sig, beta) = (&tape.z[l - 1], &tape.sig[l - 1], &self.beta_rows[l - 1]);
                let g_beta = &mut self.grad_beta_rows[l - 1];
                for i in 0..rows * input {
                    let (zv, s, b, gv) = (z[i], sig[i], beta[i], self.gh[i]);
                    let ds = s * (T::ONE - s);
                    g_beta[i] += gv * zv * zv * ds;
                    self.gz[i] = gv * (s + b * zv * ds);
                }
            }
        }
    }
}
