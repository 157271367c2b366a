//! GEPS experts on batched tensors: the forward pass shared by one expert (rank 2) and by
//! several experts stacked along a leading axis (rank 3), and the top-1 field that integrates
//! the rows of all those experts in one rollout, their rows split into slots of one size.

use core::any::Any;

use burn::tensor::{IndexingUpdateOp, Int, Tensor, backend::Backend};

use mixer_core::{VectorField, anchor_tensor};
use mixer_hyper::{encode_context, sigmoid};

use crate::{AnyExpert, GepsExpert};

/// One low-rank layer, rank `D` (a leading axis indexes experts or slots): `W0: [.., out, in]`,
/// `b0: [.., 1, out]`, `A: [.., out, c]`, `B: [.., c, in]`, `A_b: [.., out, c]`.
struct LayerParams<B: Backend, const D: usize> {
    weight: Tensor<B, D>,
    bias: Tensor<B, D>,
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    a_bias: Tensor<B, D>,
}

/// One learnable swish: `beta0: [.., 1, units]` and, when context-modulated, `A_beta: [.., units, c]`.
struct SwishParams<B: Backend, const D: usize> {
    beta: Tensor<B, D>,
    a_beta: Option<Tensor<B, D>>,
}

/// The parameters of GEPS experts as rank-`D` tensors: one expert's own (`D = 2`), or those of
/// several experts of one layout stacked along a leading axis (`D = 3`).
pub(crate) struct GepsParams<B: Backend, const D: usize> {
    layers: Vec<LayerParams<B, D>>,
    activations: Vec<SwishParams<B, D>>,
    /// Context shift, `[.., 1, 1]`.
    shift: Option<Tensor<B, D>>,
    mip: bool,
}

impl<B: Backend> GepsParams<B, 2> {
    /// The parameters of `expert` (its `Param` values: gradients reach the expert).
    pub(crate) fn of(expert: &GepsExpert<B>) -> Self {
        Self {
            layers: expert
                .layers
                .iter()
                .map(|l| LayerParams {
                    weight: l.weight.val(),
                    bias: l.bias.val().unsqueeze_dim(0),
                    a: l.a.val(),
                    b: l.b.val(),
                    a_bias: l.a_bias.val(),
                })
                .collect(),
            activations: expert
                .activations
                .iter()
                .map(|s| SwishParams {
                    beta: s.beta.val().unsqueeze_dim(0),
                    a_beta: s.a_beta.as_ref().map(|a| a.val()),
                })
                .collect(),
            shift: expert.context_shift.as_ref().map(|s| s.val().unsqueeze_dim(0)),
            mip: expert.mip,
        }
    }

    /// Shape of every tensor in a fixed order (`None` for an absent one), the MIP flag and the
    /// context size: experts stack when these agree.
    fn layout(&self, context: usize) -> (Vec<Option<[usize; 2]>>, bool, usize) {
        let layers = self.layers.iter().flat_map(|l| [&l.weight, &l.bias, &l.a, &l.b, &l.a_bias].map(Some));
        let swishes = self.activations.iter().flat_map(|s| [Some(&s.beta), s.a_beta.as_ref()]);
        let shapes = layers.chain(swishes).chain([self.shift.as_ref()]).map(|t| t.map(Tensor::dims)).collect();
        (shapes, self.mip, context)
    }
}

impl<B: Backend> GepsParams<B, 3> {
    /// The parameters of `experts` stacked along a new leading axis, as rollout views
    /// ([`mixer_core::anchor`]); `None` when there is no expert or their layouts differ (sizes,
    /// context shift, MIP).
    pub(crate) fn stack(experts: &[&GepsExpert<B>]) -> Option<Self> {
        let first = experts.first()?;
        let parts: Vec<GepsParams<B, 2>> = experts.iter().map(|e| GepsParams::of(e)).collect();
        let layout = parts[0].layout(first.context);
        if parts.iter().zip(experts).any(|(p, e)| p.layout(e.context) != layout) {
            return None;
        }
        let stack = |f: &dyn Fn(&GepsParams<B, 2>) -> Option<Tensor<B, 2>>| -> Option<Tensor<B, 3>> {
            let slices = parts.iter().map(f).collect::<Option<Vec<_>>>()?;
            Some(anchor_tensor(Tensor::stack(slices, 0)))
        };
        let layer = |i: usize| -> Option<LayerParams<B, 3>> {
            Some(LayerParams {
                weight: stack(&|p| Some(p.layers.get(i)?.weight.clone()))?,
                bias: stack(&|p| Some(p.layers.get(i)?.bias.clone()))?,
                a: stack(&|p| Some(p.layers.get(i)?.a.clone()))?,
                b: stack(&|p| Some(p.layers.get(i)?.b.clone()))?,
                a_bias: stack(&|p| Some(p.layers.get(i)?.a_bias.clone()))?,
            })
        };
        let swish = |i: usize| -> Option<SwishParams<B, 3>> {
            let a_beta = match parts[0].activations.get(i)?.a_beta {
                Some(_) => Some(stack(&|p| p.activations.get(i)?.a_beta.clone())?),
                None => None,
            };
            Some(SwishParams { beta: stack(&|p| Some(p.activations.get(i)?.beta.clone()))?, a_beta })
        };
        let shift = match parts[0].shift {
            Some(_) => Some(stack(&|p| p.shift.clone())?),
            None => None,
        };
        Some(Self {
            layers: (0..parts[0].layers.len()).map(layer).collect::<Option<_>>()?,
            activations: (0..parts[0].activations.len()).map(swish).collect::<Option<_>>()?,
            shift,
            mip: parts[0].mip,
        })
    }
}

impl<B: Backend, const D: usize> GepsParams<B, D> {
    /// The experts at one context per row, `ctx: [.., rows, c]`: the context is shifted and
    /// encoded, and the row-dependent biases and slopes are computed, once.
    pub(crate) fn bind(self, ctx: Tensor<B, D>) -> BoundGeps<B, D> {
        let ctx = match self.shift {
            Some(shift) => ctx + shift,
            None => ctx,
        };
        let ctx = encode(ctx, self.mip);
        let layers = self
            .layers
            .into_iter()
            .map(|l| BoundLayer {
                bias: l.bias + ctx.clone().matmul(l.a_bias.transpose()),
                weight_t: l.weight.transpose(),
                b_t: l.b.transpose(),
                a_t: l.a.transpose(),
            })
            .collect();
        let slopes = self
            .activations
            .into_iter()
            .map(|s| match s.a_beta {
                Some(a) => s.beta + ctx.clone().matmul(a.transpose()),
                None => s.beta,
            })
            .collect();
        BoundGeps { layers, slopes, ctx }
    }
}

/// [`encode_context`] over the last axis of a rank-`D` context.
fn encode<B: Backend, const D: usize>(ctx: Tensor<B, D>, mip: bool) -> Tensor<B, D> {
    if !mip {
        return ctx;
    }
    let mut dims = ctx.dims();
    let c = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    dims[D - 1] = 2 * c;
    encode_context(ctx.reshape([rows, c]), true).reshape(dims)
}

/// A layer at fixed contexts: `W0^T: [.., in, out]`, `B^T: [.., in, c']`, `A^T: [.., c', out]`
/// and the per-row bias `b0 + ctx' A_b^T: [.., rows, out]`.
struct BoundLayer<B: Backend, const D: usize> {
    weight_t: Tensor<B, D>,
    b_t: Tensor<B, D>,
    a_t: Tensor<B, D>,
    bias: Tensor<B, D>,
}

/// GEPS experts at one (shifted, encoded) context `ctx'` per row: the GEPS forward pass.
pub(crate) struct BoundGeps<B: Backend, const D: usize> {
    layers: Vec<BoundLayer<B, D>>,
    /// Swish slopes `beta0 + ctx' A_beta^T`, `[.., rows, units]` (`[.., 1, units]` unmodulated).
    slopes: Vec<Tensor<B, D>>,
    /// Encoded context `[.., rows, c']`.
    ctx: Tensor<B, D>,
}

impl<B: Backend, const D: usize> BoundGeps<B, D> {
    /// `f(x, ctx)` for `x: [.., rows, d]`: every layer `x W0^T + ((x B^T) * ctx') A^T + b0 +
    /// ctx' A_b^T`, a swish `h * sigmoid(beta h)` after all but the last.
    pub(crate) fn forward(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let base = h.clone().matmul(layer.weight_t.clone());
            let low = (h.matmul(layer.b_t.clone()) * self.ctx.clone()).matmul(layer.a_t.clone());
            h = base + low + layer.bias.clone();
            if let Some(beta) = self.slopes.get(i) {
                h = h.clone() * sigmoid(h * beta.clone());
            }
        }
        h
    }
}

/// `expert` as a GEPS expert, when it is one (a [`GepsExpert`] or [`AnyExpert::Geps`]).
pub(crate) fn as_geps<B: Backend, X: 'static>(expert: &X) -> Option<&GepsExpert<B>> {
    let any = expert as &dyn Any;
    any.downcast_ref::<GepsExpert<B>>().or_else(|| match any.downcast_ref::<AnyExpert<B>>()? {
        AnyExpert::Geps(g) => Some(g),
        _ => None,
    })
}

/// Padding one more slot costs about as much as this many rows (a slot adds a few small
/// matrix products to every evaluation).
const SLOT_ROWS: usize = 16;

/// Rows grouped by expert, split into slots of `M` rows: slot `s` holds padded rows
/// `s M .. (s + 1) M`, up to `M` rows of one group, then (in a group's last slot) that slot's
/// first row again. `M` is the group size that minimises padded rows plus [`SLOT_ROWS`] per
/// slot: equal groups make one slot each, and one large group does not pad every other group
/// to its size.
pub(crate) struct Padding {
    /// Rows per slot `M`.
    pub(crate) size: usize,
    /// The group of each slot.
    pub(crate) slots: Vec<usize>,
    /// The row held by each padded row, `[slots * M]`.
    pub(crate) rows: Vec<usize>,
    /// The real row of each padded row, `None` for padding.
    pub(crate) order: Vec<Option<usize>>,
}

impl Padding {
    /// Slots of `groups` of row indices (empty groups get none).
    pub(crate) fn new(groups: &[&[usize]]) -> Self {
        let cost = |m: usize| groups.iter().map(|g| g.len().div_ceil(m)).sum::<usize>() * (m + SLOT_ROWS);
        let size = groups.iter().map(|g| g.len()).filter(|&m| m > 0).min_by_key(|&m| (cost(m), usize::MAX - m));
        let mut padding = Self { size: size.unwrap_or(0), slots: Vec::new(), rows: Vec::new(), order: Vec::new() };
        let Some(size) = size else { return padding };
        for (g, group) in groups.iter().enumerate() {
            for chunk in group.chunks(size) {
                padding.slots.push(g);
                for j in 0..size {
                    padding.rows.push(chunk[if j < chunk.len() { j } else { 0 }]);
                    padding.order.push(chunk.get(j).copied());
                }
            }
        }
        padding
    }
}

/// The top-1 field of GEPS experts on `S` slots of `M` rows ([`Padding`]): states `[S M, d]`,
/// row `s M + j` evaluated by the expert of slot `s` at its context and multiplied by its
/// scale (gate weight times time rate).
pub(crate) struct StackedField<B: Backend> {
    geps: BoundGeps<B, 3>,
    /// Per-row scale `[S, M, 1]`.
    scale: Tensor<B, 3>,
    /// `[S, M, d]`.
    shape: [usize; 3],
}

impl<B: Backend> StackedField<B> {
    /// The field of stacked `params` (one expert per slot, [`GepsParams::stack`]) at contexts
    /// `ctx: [S, M, c]` with scales `scale: [S, M, 1]`, for states of size `dim`; contexts and
    /// scales are read as rollout views.
    pub(crate) fn new(params: GepsParams<B, 3>, ctx: Tensor<B, 3>, scale: Tensor<B, 3>, dim: usize) -> Self {
        let [k, m, _] = ctx.dims();
        Self { geps: params.bind(anchor_tensor(ctx)), scale: anchor_tensor(scale), shape: [k, m, dim] }
    }
}

impl<B: Backend> VectorField<B> for StackedField<B> {
    fn dim(&self) -> usize {
        self.shape[2]
    }

    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [k, m, d] = self.shape;
        (self.geps.forward(x.reshape(self.shape)) * self.scale.clone()).reshape([k * m, d])
    }
}

/// The top-k (and shared) field of GEPS experts over units that are (row, slot) pairs, cut into
/// `S` slots of `M` units ([`Padding`]): each unit's row of the state is gathered, every slot
/// evaluated by its expert in one stacked pass ([`StackedField`], padding scaled by zero), and
/// the units' outputs are summed back onto their rows.
pub(crate) struct StackedMixtureField<B: Backend> {
    units: StackedField<B>,
    /// The row of each padded unit, `[S M]`.
    rows: Tensor<B, 1, Int>,
}

impl<B: Backend> StackedMixtureField<B> {
    /// The field summing `units` onto the rows `rows` (one per padded unit).
    pub(crate) fn new(units: StackedField<B>, rows: Tensor<B, 1, Int>) -> Self {
        Self { units, rows }
    }
}

impl<B: Backend> VectorField<B> for StackedMixtureField<B> {
    fn dim(&self) -> usize {
        self.units.dim()
    }

    fn eval(&self, t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.units.eval(t, x.clone().select(0, self.rows.clone()));
        x.zeros_like().select_assign(0, self.rows.clone(), y, IndexingUpdateOp::Add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GepsConfig;
    use crate::tests::TestBackend;
    use burn::module::Param;
    use mixer_core::Expert;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn bound_layers_equal_low_rank_linear_and_swish() {
        let device = Default::default();
        let _rng = crate::tests::rng_lock();
        TestBackend::seed(&device, 5);
        let e = GepsConfig { dim: 3, context: 2, width: 5, depth: 2, context_shift: false, mip: false }
            .init::<TestBackend>(&device)
            .unwrap();
        let x = tensor2::<TestBackend>(&[0.5, -1.0, 2.0, 1.5, 0.0, -0.3], [2, 3], &device);
        let ctx = tensor2::<TestBackend>(&[0.7, -0.2, 0.0, 1.3], [2, 2], &device);
        let h = e.layers[0].forward(x.clone(), ctx.clone());
        let h = e.activations[0].forward(h, Some(ctx.clone()));
        let want = to_vec(e.layers[1].forward(h, ctx.clone()));
        let got = to_vec(GepsParams::of(&e).bind(ctx).forward(x));
        assert_eq!(got.len(), 6);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
    }

    #[test]
    fn a_stack_evaluates_each_expert_on_its_rows() {
        let device = Default::default();
        let _rng = crate::tests::rng_lock();
        let experts: Vec<GepsExpert<TestBackend>> = (0..2)
            .map(|s| {
                TestBackend::seed(&device, 10 + s);
                let mut e = GepsConfig { dim: 2, context: 2, width: 4, depth: 3, context_shift: true, mip: true }
                    .init::<TestBackend>(&device)
                    .unwrap();
                e.context_shift = Some(Param::from_tensor(Tensor::from_data([0.3 - 0.5 * s as f64], &device)));
                e
            })
            .collect();
        let (x, c) = ([0.1, -0.2, 0.4, 0.9, -0.6, 0.3], [0.2, -0.4, 1.0, 0.5, -0.1, 0.0]);
        let refs: Vec<&GepsExpert<TestBackend>> = experts.iter().collect();
        let stacked = GepsParams::stack(&refs)
            .unwrap()
            .bind(tensor2::<TestBackend>(&c, [3, 2], &device).reshape([1, 3, 2]).repeat_dim(0, 2));
        let got =
            to_vec(stacked.forward(tensor2::<TestBackend>(&x, [3, 2], &device).reshape([1, 3, 2]).repeat_dim(0, 2)));
        for (k, e) in experts.iter().enumerate() {
            let want = to_vec(e.forward(tensor2(&x, [3, 2], &device), tensor2(&c, [3, 2], &device)));
            for (a, b) in got[k * 6..(k + 1) * 6].iter().zip(&want) {
                assert!((a - b).abs() < 1e-14, "expert {k}: {a} vs {b}");
            }
        }
        assert!((got[0] - got[6]).abs() > 1e-3, "the experts differ");
        // layouts that differ do not stack
        let mut other = experts[1].clone();
        other.context_shift = None;
        assert!(GepsParams::stack(&[&experts[0], &other]).is_none());
        other.mip = false;
        other.context_shift = experts[1].context_shift.clone();
        assert!(GepsParams::stack(&[&experts[0], &other]).is_none());
        assert!(GepsParams::<TestBackend, 3>::stack(&[]).is_none());
    }

    #[test]
    fn padding_splits_large_groups_and_repeats_a_slots_first_row() {
        let groups: [&[usize]; 3] = [&[4, 1], &[0], &[2, 3, 5]];
        let p = Padding::new(&groups);
        assert_eq!((p.size, p.slots.as_slice()), (3, [0, 1, 2].as_slice()));
        assert_eq!(p.rows, [4, 1, 4, 0, 0, 0, 2, 3, 5]);
        assert_eq!(p.order, [Some(4), Some(1), None, Some(0), None, None, Some(2), Some(3), Some(5)]);
        // one group of 80 and two of 20: slots of 20 rows, no padding
        let (big, small): (Vec<usize>, Vec<usize>) = ((0..80).collect(), (80..100).collect());
        let p = Padding::new(&[&small[..10], &big, &small[10..]]);
        assert_eq!((p.size, p.slots.as_slice()), (10, [0, 1, 1, 1, 1, 1, 1, 1, 1, 2].as_slice()));
        let p = Padding::new(&[&small, &big, &small]);
        assert_eq!((p.size, p.slots.as_slice()), (20, [0, 1, 1, 1, 1, 2].as_slice()));
        assert_eq!(p.order.iter().flatten().count(), 120);
        assert_eq!(p.rows[20..40], big[..20]);
        // a last slot that is not full repeats its own first row
        let all: Vec<usize> = (0..75).collect();
        let p = Padding::new(&[&all[..45], &all[45..55], &all[55..65], &all[65..]]);
        assert_eq!((p.size, p.slots.as_slice()), (10, [0, 0, 0, 0, 0, 1, 2, 3].as_slice()));
        assert_eq!(p.rows[40..50], [40, 41, 42, 43, 44, 40, 40, 40, 40, 40]);
        assert_eq!(p.order[40..50], [Some(40), Some(41), Some(42), Some(43), Some(44), None, None, None, None, None]);
        assert!(Padding::new(&[]).rows.is_empty());
    }
}
