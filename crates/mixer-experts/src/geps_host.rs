//! A frozen host copy of a [`GepsExpert`], and its vector field bound to per-row contexts: the
//! weights are read once, the per-row biases and swish slopes are computed once per rollout,
//! and each evaluation is three matrix products and one swish per layer on host buffers.

use burn::tensor::{Tensor, backend::Backend};

use mixer_core::host::to_vec;
use mixer_core::{Error, HostField};

use crate::host_kernel::{HostKernel, MatRef, gemm, swish_in_place};
use crate::{ExpertError, GepsExpert, LearnableSwish};

/// One [`mixer_hyper::LowRankLinear`] layer, frozen: host copies of its parameters, the
/// matrices transposed once so that every product reads them row-major (cheap packing).
#[derive(Clone, Debug)]
struct FrozenLowRank<T> {
    input: usize,
    output: usize,
    /// `W0^T: [in, out]`.
    weight_t: Vec<T>,
    /// `b0: [out]`.
    bias: Vec<T>,
    /// `A^T: [r, out]`.
    a_t: Vec<T>,
    /// `B^T: [in, r]`.
    b_t: Vec<T>,
    /// `A_b^T: [r, out]`.
    a_bias_t: Vec<T>,
}

/// One [`LearnableSwish`], frozen.
#[derive(Clone, Debug)]
struct FrozenSwish<T> {
    /// `beta0: [units]`.
    beta: Vec<T>,
    /// `A_beta^T: [r, units]`, when the slopes read the context.
    a_beta_t: Option<Vec<T>>,
}

/// A gradient-free host copy of a [`GepsExpert`] in `f32` or `f64` ([`GepsExpert::freeze`]);
/// [`FrozenGeps::bind`] gives its vector field on rows with fixed contexts.
#[derive(Clone, Debug)]
pub struct FrozenGeps<T> {
    context: usize,
    mip: bool,
    shift: Option<T>,
    layers: Vec<FrozenLowRank<T>>,
    activations: Vec<FrozenSwish<T>>,
}

fn host<T: HostKernel, B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<T> {
    to_vec(t).into_iter().map(T::from_f64).collect()
}

/// A `[rows, cols]` matrix, transposed, on the host: `[cols, rows]` row-major.
fn host_transposed<T: HostKernel, B: Backend>(t: Tensor<B, 2>) -> Vec<T> {
    host(t.transpose())
}

impl<B: Backend> GepsExpert<B> {
    /// A frozen host copy of the expert's current weights (no gradient).
    pub fn freeze<T: HostKernel>(&self) -> FrozenGeps<T> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let [output, input] = l.weight.dims();
                FrozenLowRank {
                    input,
                    output,
                    weight_t: host_transposed(l.weight.val()),
                    bias: host(l.bias.val()),
                    a_t: host_transposed(l.a.val()),
                    b_t: host_transposed(l.b.val()),
                    a_bias_t: host_transposed(l.a_bias.val()),
                }
            })
            .collect();
        let activations = self
            .activations
            .iter()
            .map(|s: &LearnableSwish<B>| FrozenSwish {
                beta: host(s.beta.val()),
                a_beta_t: s.a_beta.as_ref().map(|a| host_transposed(a.val())),
            })
            .collect();
        FrozenGeps {
            context: self.context,
            mip: self.mip,
            shift: self.context_shift.as_ref().map(|s| host::<T, B, 1>(s.val())[0]),
            layers,
            activations,
        }
    }
}

impl<T: HostKernel> FrozenGeps<T> {
    /// State dimension `d`.
    pub fn state_dim(&self) -> usize {
        self.layers[0].input
    }

    /// Context size `c` the expert reads.
    pub fn context_dim(&self) -> usize {
        self.context
    }

    /// Width of the encoded context (the rank of every adaptation).
    fn rank(&self) -> usize {
        mixer_hyper::encoded_width(self.context, self.mip)
    }

    /// The encoded context of every row: shifted, then MIP-encoded (cosines first) when the
    /// expert uses MIP; `ctx: [rows, c]` → `[rows, c']`.
    fn encode(&self, ctx: &[T]) -> Vec<T> {
        let shifted: Vec<T> = ctx.iter().map(|&v| self.shift.map_or(v, |s| v + s)).collect();
        if !self.mip {
            return shifted;
        }
        let c = self.context;
        let mut out = Vec::with_capacity(2 * shifted.len());
        for row in shifted.chunks_exact(c) {
            let angle = |v: T| (v.to_f64().tanh() + 1.0) * 0.5 * std::f64::consts::FRAC_PI_2;
            out.extend(row.iter().map(|&v| T::from_f64(angle(v).cos())));
            out.extend(row.iter().map(|&v| T::from_f64(angle(v).sin())));
        }
        out
    }

    /// The expert's field on `rows = ctx.len() / c` rows: row `r` reads context
    /// `ctx[r * c..(r + 1) * c]` (row-major `[rows, c]`) and, with `rate`, its derivative is
    /// multiplied by `rate[r]`.
    pub fn bind(&self, ctx: &[f64], rate: Option<&[f64]>) -> Result<GepsHostField<'_, T>, ExpertError> {
        let c = self.context;
        if !ctx.len().is_multiple_of(c) {
            return Err(Error::shape("contexts (rows * context size)", c, ctx.len()).into());
        }
        let rows = ctx.len() / c;
        if let Some(rate) = rate
            && rate.len() != rows
        {
            return Err(Error::shape("time rates (one per row)", rows, rate.len()).into());
        }
        let ctx: Vec<T> = ctx.iter().map(|&v| T::from_f64(v)).collect();
        let enc = self.encode(&ctx);
        let r = self.rank();
        // per-row additive terms: `b0 + enc A_b^T` and `beta0 + enc A_beta^T`
        let per_row = |root: &[T], factor_t: Option<&[T]>| {
            let units = root.len();
            let mut v = vec![T::ZERO; rows * units];
            if let Some(f) = factor_t {
                gemm(MatRef::row_major(&enc, rows, r), MatRef::row_major(f, r, units), T::ZERO, &mut v);
            }
            for row in v.chunks_exact_mut(units.max(1)) {
                for (x, &b) in row.iter_mut().zip(root) {
                    *x = b + *x;
                }
            }
            v
        };
        let bias_rows = self.layers.iter().map(|l| per_row(&l.bias, Some(&l.a_bias_t))).collect();
        let beta_rows = self.activations.iter().map(|s| per_row(&s.beta, s.a_beta_t.as_deref())).collect();
        let width = self.layers.iter().map(|l| l.output).max().unwrap_or(0);
        Ok(GepsHostField {
            expert: self,
            rows,
            enc,
            bias_rows,
            beta_rows,
            rate: rate.map(|v| v.iter().map(|&x| T::from_f64(x)).collect()),
            hidden: [vec![T::ZERO; rows * width], vec![T::ZERO; rows * width]],
            low: vec![T::ZERO; rows * r],
        })
    }
}

/// A [`FrozenGeps`] bound to per-row contexts and rates ([`FrozenGeps::bind`]): a
/// [`HostField`] for the host solvers of `mixer-ode`.
#[derive(Clone, Debug)]
pub struct GepsHostField<'a, T> {
    expert: &'a FrozenGeps<T>,
    rows: usize,
    /// Encoded contexts, `[rows, c']`.
    enc: Vec<T>,
    /// Per layer, `b0 + enc A_b^T`, `[rows, out]`.
    bias_rows: Vec<Vec<T>>,
    /// Per activation, `beta0 + enc A_beta^T`, `[rows, units]`.
    beta_rows: Vec<Vec<T>>,
    /// Time rate of every row.
    rate: Option<Vec<T>>,
    /// Hidden states of consecutive layers, `[rows, width]` each.
    hidden: [Vec<T>; 2],
    /// `(x B^T) ⊙ enc`, `[rows, c']`.
    low: Vec<T>,
}

/// `dst = x W0^T + ((x B^T) ⊙ enc) A^T + bias_rows` for one layer.
fn low_rank_forward<T: HostKernel>(
    layer: &FrozenLowRank<T>,
    x: &[T],
    enc: &[T],
    bias_rows: &[T],
    low: &mut [T],
    dst: &mut [T],
) {
    let rows = dst.len() / layer.output;
    let r = enc.len() / rows.max(1);
    let x = MatRef::row_major(x, rows, layer.input);
    gemm(x, MatRef::row_major(&layer.weight_t, layer.input, layer.output), T::ZERO, dst);
    gemm(x, MatRef::row_major(&layer.b_t, layer.input, r), T::ZERO, low);
    for (l, &e) in low.iter_mut().zip(enc) {
        *l *= e;
    }
    gemm(MatRef::row_major(low, rows, r), MatRef::row_major(&layer.a_t, r, layer.output), T::ONE, dst);
    for (d, &b) in dst.iter_mut().zip(bias_rows) {
        *d += b;
    }
}

impl<T: HostKernel> HostField<T> for GepsHostField<'_, T> {
    fn dim(&self) -> usize {
        self.expert.state_dim()
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn eval(&mut self, _t: f64, x: &[T], out: &mut [T]) {
        let layers = &self.expert.layers;
        let rows = self.rows;
        let [mut cur, mut next] = std::mem::take(&mut self.hidden);
        for (l, layer) in layers.iter().enumerate() {
            let input: &[T] = if l == 0 { x } else { &cur[..rows * layer.input] };
            if l + 1 == layers.len() {
                low_rank_forward(layer, input, &self.enc, &self.bias_rows[l], &mut self.low, out);
            } else {
                let dst = &mut next[..rows * layer.output];
                low_rank_forward(layer, input, &self.enc, &self.bias_rows[l], &mut self.low, dst);
                swish_in_place(dst, &self.beta_rows[l]);
                std::mem::swap(&mut cur, &mut next);
            }
        }
        self.hidden = [cur, next];
        if let Some(rate) = &self.rate {
            let d = self.expert.state_dim();
            for (row, &k) in out.chunks_exact_mut(d).zip(rate) {
                for v in row {
                    *v *= k;
                }
            }
        }
    }
}
