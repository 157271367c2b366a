//! The fused top-1 rollout of GEPS experts: every expert integrates its own rows on the host
//! ([`TapedGeps`] under a [`HostSolver`], fixed-step or adaptive), one rayon task per expert, and on an
//! autodiff backend the whole rollout is one node of the graph whose backward pass is the
//! discrete adjoint ([`mixer_ode::pull_back`]). The tensor path records about a hundred
//! operations per evaluation; this records one per rollout, and uses both cores.
//!
//! Results do not depend on the number of threads: each expert's rows are one task, and every
//! gradient is summed in a fixed order. Autodiff backends over burn-flex and burn-ndarray take
//! this path; others (a GPU backend) keep the tensor path.

use core::any::{Any, TypeId};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Element, Tensor, TensorData, TensorPrimitive, backend::Backend};
use rayon::prelude::*;

use mixer_core::Error;
use mixer_ode::{HostSolver, RolloutTape, pull_back};

use crate::GepsExpert;
use crate::geps_taped::{GepsLayout, GepsTape, TapedGeps};
use crate::host_kernel::HostKernel;

/// The shape of one fused rollout: the solver, the output times and each expert's layout and
/// rows (rows are ordered expert by expert).
#[derive(Debug)]
pub(crate) struct FusedProblem {
    solver: HostSolver,
    times: Vec<f64>,
    dim: usize,
    /// Per expert with rows: its layout and number of rows.
    groups: Vec<(GepsLayout, usize)>,
    /// Where each group starts in the flat parameters, the context values and the rows
    /// (one more entry at the end: the totals).
    theta_at: Vec<usize>,
    ctx_at: Vec<usize>,
    row_at: Vec<usize>,
}

/// Offsets of each group's block in a flat vector whose group `g` holds `size(g)` values.
fn offsets(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut at = vec![0];
    for s in sizes {
        at.push(at.last().copied().unwrap_or(0) + s);
    }
    at
}

impl FusedProblem {
    /// The problem of `experts` (one per group, at least one) on `rows` rows each.
    pub(crate) fn new<B: Backend>(
        solver: HostSolver,
        times: &[f64],
        experts: &[&GepsExpert<B>],
        rows: &[usize],
    ) -> Option<Self> {
        let dim = experts.first()?.layers[0].weight.dims()[1];
        let groups: Vec<(GepsLayout, usize)> = experts.iter().zip(rows).map(|(e, &n)| (GepsLayout::of(e), n)).collect();
        let theta_at = offsets(groups.iter().map(|(l, _)| l.len()));
        let ctx_at = offsets(groups.iter().map(|(l, n)| n * l.context_len()));
        let row_at = offsets(groups.iter().map(|&(_, n)| n));
        Some(Self { solver, times: times.to_vec(), dim, groups, theta_at, ctx_at, row_at })
    }

    fn rows(&self) -> usize {
        self.row_at[self.groups.len()]
    }
}

/// The host values of one rollout's inputs: flat parameters of every group, context rows,
/// row scales and initial states, each concatenated group by group.
#[derive(Debug)]
struct Inputs<T> {
    theta: Vec<T>,
    ctx: Vec<T>,
    scale: Vec<T>,
    x0: Vec<T>,
}

/// Group `g` of `inputs` bound as a taped field, and its initial states.
fn bind<'a, T: HostKernel>(p: &'a FusedProblem, inputs: &'a Inputs<T>, g: usize) -> (TapedGeps<'a, T>, &'a [T]) {
    let (theta_at, ctx_at, row_at) = (&p.theta_at, &p.ctx_at, &p.row_at);
    let layout = &p.groups[g].0;
    let field = TapedGeps::bind(
        layout,
        &inputs.theta[theta_at[g]..theta_at[g + 1]],
        &inputs.ctx[ctx_at[g]..ctx_at[g + 1]],
        &inputs.scale[row_at[g]..row_at[g + 1]],
    );
    (field, &inputs.x0[row_at[g] * p.dim..row_at[g + 1] * p.dim])
}

type Tape<T> = RolloutTape<GepsTape<T>, T>;

/// Every group's rollout, in parallel; `[rows, T, d]` in group order, with the tapes when
/// `taped`. A failing group fails the whole rollout and is named.
#[allow(clippy::type_complexity)]
fn forward_in<T: HostKernel>(
    p: &FusedProblem,
    inputs: &Inputs<T>,
    taped: bool,
) -> Result<(Vec<T>, Vec<Option<Tape<T>>>), (usize, Error)> {
    let parts: Vec<Result<(Vec<T>, Option<Tape<T>>), (usize, Error)>> = (0..p.groups.len())
        .into_par_iter()
        .map(|g| {
            let (mut field, x0) = bind(p, inputs, g);
            let run = if taped {
                p.solver.integrate_taped(&mut field, x0, &p.times).map(|(y, t)| (y, Some(t)))
            } else {
                p.solver.integrate(&mut field, x0, &p.times).map(|y| (y, None))
            };
            run.map_err(|e| (g, e))
        })
        .collect();
    let mut y = Vec::with_capacity(p.rows() * p.times.len() * p.dim);
    let mut tapes = Vec::with_capacity(parts.len());
    for part in parts {
        let (yg, tape) = part?;
        y.extend(yg);
        tapes.push(tape);
    }
    Ok((y, tapes))
}

/// What the backward pass needs: the problem, the inputs' host values and every group's tape.
struct Saved<T> {
    problem: Arc<FusedProblem>,
    inputs: Inputs<T>,
    tapes: Vec<Option<Tape<T>>>,
}

impl<T> core::fmt::Debug for Saved<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "fused GEPS rollout of {} groups", self.problem.groups.len())
    }
}

/// Gradients of every input, group by group: `(theta, ctx, scale, x0)`; the parameters' only
/// when `params` (else left zero: frozen experts skip their share of the backward pass).
#[allow(clippy::type_complexity)]
fn backward_in<T: HostKernel>(saved: &Saved<T>, y_bar: &[T], params: bool) -> (Vec<T>, Vec<T>, Vec<T>, Vec<T>) {
    let p = &saved.problem;
    let (row_at, steps) = (&p.row_at, p.times.len());
    let parts: Vec<_> = (0..p.groups.len())
        .into_par_iter()
        .map(|g| {
            let (field, _) = bind(p, &saved.inputs, g);
            let mut field = if params { field } else { field.without_param_grads() };
            let tape = saved.tapes[g].as_ref().expect("a taped forward pass");
            let span = row_at[g] * steps * p.dim..row_at[g + 1] * steps * p.dim;
            let x0 = pull_back(tape, &mut field, &y_bar[span]);
            (field.finish(), x0)
        })
        .collect();
    let (mut theta, mut ctx, mut scale, mut x0) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (grads, x0_g) in parts {
        theta.extend(grads.theta);
        ctx.extend(grads.context);
        scale.extend(grads.scale);
        x0.extend(x0_g);
    }
    (theta, ctx, scale, x0)
}

/// The host float types of the fused rollout. Its two passes are methods of concrete types so
/// that they are compiled in this crate, at its optimisation level: generic code is compiled
/// where it is instantiated, and the callers (trainers, binaries) are generic over the backend.
trait FusedFloat: HostKernel + Element {
    /// [`forward_in`] in this type.
    #[allow(clippy::type_complexity)]
    fn forward(
        p: &FusedProblem,
        inputs: &Inputs<Self>,
        taped: bool,
    ) -> Result<(Vec<Self>, Vec<Option<Tape<Self>>>), (usize, Error)>;

    /// [`backward_in`] in this type.
    #[allow(clippy::type_complexity)]
    fn backward(saved: &Saved<Self>, y_bar: &[Self], params: bool) -> (Vec<Self>, Vec<Self>, Vec<Self>, Vec<Self>);
}

macro_rules! fused_float {
    ($t:ty) => {
        impl FusedFloat for $t {
            fn forward(
                p: &FusedProblem,
                inputs: &Inputs<Self>,
                taped: bool,
            ) -> Result<(Vec<Self>, Vec<Option<Tape<Self>>>), (usize, Error)> {
                forward_in(p, inputs, taped)
            }

            fn backward(
                saved: &Saved<Self>,
                y_bar: &[Self],
                params: bool,
            ) -> (Vec<Self>, Vec<Self>, Vec<Self>, Vec<Self>) {
                backward_in(saved, y_bar, params)
            }
        }
    };
}

fused_float!(f32);
fused_float!(f64);

/// Host values of a float primitive, in `T`.
fn host<I: Backend, T: Element>(t: FloatTensor<I>) -> Vec<T> {
    Tensor::<I, 1>::from_primitive(TensorPrimitive::Float(t))
        .into_data()
        .convert::<T>()
        .into_vec()
        .expect("host values")
}

/// A float primitive of `I` holding `v` with shape `shape`.
fn primitive<I: Backend, T: Element>(v: Vec<T>, shape: Vec<usize>, device: &I::Device) -> FloatTensor<I> {
    I::float_from_data(TensorData::new(v, shape).convert_dtype(<I::FloatElem as Element>::dtype()), device)
}

/// The backward step of the fused rollout: the graph node's parents are the flat parameters,
/// the context rows, the row scales and the initial states.
#[derive(Debug)]
struct FusedBackward<T>(core::marker::PhantomData<T>);

impl<I: Backend, T: FusedFloat> Backward<I, 4> for FusedBackward<T> {
    type State = Arc<Saved<T>>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y_bar = grads.consume::<I>(&ops.node);
        let device = I::float_device(&y_bar);
        // the first parent, the experts' parameters, is untracked when they are frozen
        let params = ops.parents[0].is_some();
        let (theta, ctx, scale, x0) = T::backward(&ops.state, &host::<I, T>(y_bar), params);
        for (node, g) in ops.parents.iter().zip([theta, ctx, scale, x0]) {
            if let Some(node) = node {
                let n = g.len();
                grads.register::<I>(node.id, primitive::<I, T>(g, vec![n], &device));
            }
        }
    }
}

/// `x` as a `To` when both are the same type.
fn cast<From: 'static, To: 'static>(x: From) -> Option<To> {
    (Box::new(x) as Box<dyn Any>).downcast::<To>().ok().map(|b| *b)
}

/// The inputs of [`rollout`] on backend `B`: flat parameters, context rows, row scales and
/// initial states, all rank 1 and concatenated group by group.
pub(crate) struct FusedInputs<B: Backend> {
    pub(crate) theta: Tensor<B, 1>,
    pub(crate) ctx: Tensor<B, 1>,
    pub(crate) scale: Tensor<B, 1>,
    pub(crate) x0: Tensor<B, 1>,
}

/// The fused rollout `[rows, T, d]` (rows in group order), or `None` when this backend or
/// float type has no fused path. A diverging group is reported with its index.
pub(crate) fn rollout<B: Backend>(
    problem: FusedProblem,
    inputs: FusedInputs<B>,
) -> Option<Result<Tensor<B, 3>, (usize, Error)>> {
    let problem = Arc::new(problem);
    match <B::FloatElem as Element>::dtype() {
        DType::F32 => typed::<B, f32>(problem, inputs),
        DType::F64 => typed::<B, f64>(problem, inputs),
        _ => None,
    }
}

fn typed<B: Backend, T: FusedFloat>(
    problem: Arc<FusedProblem>,
    inputs: FusedInputs<B>,
) -> Option<Result<Tensor<B, 3>, (usize, Error)>> {
    let device = inputs.theta.device();
    if !B::ad_enabled(&device) {
        return Some(inference::<B, T>(&problem, inputs));
    }
    autodiff::<B, Flex, T>(&problem, &inputs)
        .or_else(|| autodiff::<B, NdArray<f32>, T>(&problem, &inputs))
        .or_else(|| autodiff::<B, NdArray<f64>, T>(&problem, &inputs))
}

/// The output shape `[rows, T, d]`.
fn out_shape(p: &FusedProblem) -> Vec<usize> {
    vec![p.rows(), p.times.len(), p.dim]
}

/// Forward only, on a backend without autodiff.
fn inference<B: Backend, T: FusedFloat>(
    p: &FusedProblem,
    inputs: FusedInputs<B>,
) -> Result<Tensor<B, 3>, (usize, Error)> {
    let device = inputs.theta.device();
    let read = |t: Tensor<B, 1>| host::<B, T>(t.into_primitive().tensor());
    let values =
        Inputs { theta: read(inputs.theta), ctx: read(inputs.ctx), scale: read(inputs.scale), x0: read(inputs.x0) };
    let (y, _) = T::forward(p, &values, false)?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(primitive::<B, T>(y, out_shape(p), &device))))
}

/// The rollout as one node of `Autodiff<I>`'s graph, when `B` is that backend.
fn autodiff<B: Backend, I: Backend, T: FusedFloat>(
    problem: &Arc<FusedProblem>,
    inputs: &FusedInputs<B>,
) -> Option<Result<Tensor<B, 3>, (usize, Error)>> {
    if TypeId::of::<B>() != TypeId::of::<Autodiff<I>>() {
        return None;
    }
    let as_ad =
        |t: &Tensor<B, 1>| cast::<FloatTensor<B>, FloatTensor<Autodiff<I>>>(t.clone().into_primitive().tensor());
    let [theta, ctx, scale, x0] =
        [&inputs.theta, &inputs.ctx, &inputs.scale, &inputs.x0].map(|t| as_ad(t).expect("B is Autodiff<I>"));
    let device = I::float_device(&theta.primitive);
    let values = Inputs {
        theta: host::<I, T>(theta.primitive.clone()),
        ctx: host::<I, T>(ctx.primitive.clone()),
        scale: host::<I, T>(scale.primitive.clone()),
        x0: host::<I, T>(x0.primitive.clone()),
    };
    let nodes = [theta.node.clone(), ctx.node.clone(), scale.node.clone(), x0.node.clone()];
    let prep = FusedBackward::<T>(core::marker::PhantomData).prepare::<NoCheckpointing>(nodes).compute_bound();
    let out = match prep.stateful() {
        OpsKind::Tracked(prep) => match T::forward(problem, &values, true) {
            Ok((y, tapes)) => {
                let y = primitive::<I, T>(y, out_shape(problem), &device);
                Ok(prep.finish(Arc::new(Saved { problem: problem.clone(), inputs: values, tapes }), y))
            }
            Err(e) => Err(e),
        },
        OpsKind::UnTracked(prep) => match T::forward(problem, &values, false) {
            Ok((y, _)) => Ok(prep.finish(primitive::<I, T>(y, out_shape(problem), &device))),
            Err(e) => Err(e),
        },
    };
    Some(out.map(|t| {
        let t = cast::<FloatTensor<Autodiff<I>>, FloatTensor<B>>(t).expect("B is Autodiff<I>");
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }))
}
