//! The fused rollout of GEPS experts on the host ([`TapedGeps`] under a [`HostSolver`],
//! fixed-step or adaptive). Top-1: every expert integrates its own rows, one rayon task per
//! expert. Top-k and shared: one field sums every expert's units onto their rows
//! ([`TapedMixture`]), the rows cut into a few fixed tasks. On an autodiff backend the whole
//! rollout is one node of the graph whose backward pass is the discrete adjoint
//! ([`mixer_ode::pull_back`]). The tensor path records about a hundred operations per
//! evaluation; this records one per rollout, and uses both cores.
//!
//! Results do not depend on the number of threads: the tasks are fixed by the problem, and
//! every gradient is summed in a fixed order. Autodiff backends over burn-flex and burn-ndarray take
//! this path; others (a GPU backend) keep the tensor path.

use core::any::{Any, TypeId};
use core::ops::Range;
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
use crate::geps_taped::{GepsLayout, TapedGeps};
use crate::host_kernel::HostKernel;
use crate::taped_mixture::{MixtureTape, Part, TapedMixture};

/// The shape of one fused rollout: the solver, the output times, each expert's layout and
/// units (a unit is one expert acting on one row with its own context and scale; units are
/// ordered expert by expert), and the tasks that integrate them.
#[derive(Debug)]
pub(crate) struct FusedProblem {
    solver: HostSolver,
    times: Vec<f64>,
    dim: usize,
    /// Per expert taking part: its layout.
    groups: Vec<GepsLayout>,
    /// Where each group starts in the flat parameters, the context values and the units (one
    /// more entry at the end: the totals).
    theta_at: Vec<usize>,
    ctx_at: Vec<usize>,
    unit_at: Vec<usize>,
    /// Independent rollouts over consecutive ranges of the rows, run in parallel.
    tasks: Vec<Task>,
}

/// One independent rollout: the rows it integrates and the experts acting on them.
#[derive(Debug)]
struct Task {
    rows: Range<usize>,
    parts: Vec<TaskPart>,
}

/// The units of one group that act on a task's rows.
#[derive(Debug)]
struct TaskPart {
    group: usize,
    units: Range<usize>,
    /// The row of each unit relative to the task's first row; `None`: the units are the
    /// task's rows, one to one.
    rows: Option<Vec<usize>>,
}

/// Offsets of each group's block in a flat vector whose group `g` holds `size(g)` values.
fn offsets(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut at = vec![0];
    for s in sizes {
        at.push(at.last().copied().unwrap_or(0) + s);
    }
    at
}

/// Rows per task of a mixture rollout, at least: fewer rows are not worth a thread task.
const MIXTURE_TASK_ROWS: usize = 32;
/// Tasks a mixture rollout is cut into at most (fixed, so results do not depend on threads).
const MIXTURE_TASKS: usize = 4;

impl FusedProblem {
    /// Groups of `experts` (one per group, at least one) with `units[g]` units each.
    fn with_groups<B: Backend>(
        solver: HostSolver,
        times: &[f64],
        experts: &[&GepsExpert<B>],
        units: &[usize],
    ) -> Option<Self> {
        let dim = experts.first()?.layers[0].weight.dims()[1];
        let groups: Vec<GepsLayout> = experts.iter().map(|e| GepsLayout::of(e)).collect();
        let theta_at = offsets(groups.iter().map(GepsLayout::len));
        let ctx_at = offsets(groups.iter().zip(units).map(|(l, n)| n * l.context_len()));
        let unit_at = offsets(units.iter().copied());
        Some(Self { solver, times: times.to_vec(), dim, groups, theta_at, ctx_at, unit_at, tasks: Vec::new() })
    }

    /// The top-1 problem of `experts` on `rows[g]` rows each: every unit is its own row (rows
    /// ordered expert by expert), one task per expert.
    pub(crate) fn new<B: Backend>(
        solver: HostSolver,
        times: &[f64],
        experts: &[&GepsExpert<B>],
        rows: &[usize],
    ) -> Option<Self> {
        let mut p = Self::with_groups(solver, times, experts, rows)?;
        p.tasks = (0..p.groups.len())
            .map(|g| {
                let units = p.unit_at[g]..p.unit_at[g + 1];
                Task { rows: units.clone(), parts: vec![TaskPart { group: g, units, rows: None }] }
            })
            .collect();
        Some(p)
    }

    /// The mixture problem of `experts` over `rows` rows: group `g`'s units act on the rows
    /// `unit_rows[g]` (ascending), and a row's field is the sum of its units'. The rows are
    /// cut into at most [`MIXTURE_TASKS`] consecutive tasks of at least [`MIXTURE_TASK_ROWS`].
    pub(crate) fn mixture<B: Backend>(
        solver: HostSolver,
        times: &[f64],
        experts: &[&GepsExpert<B>],
        unit_rows: &[Vec<usize>],
        rows: usize,
    ) -> Option<Self> {
        let sizes: Vec<usize> = unit_rows.iter().map(Vec::len).collect();
        let mut p = Self::with_groups(solver, times, experts, &sizes)?;
        let count = (rows / MIXTURE_TASK_ROWS).clamp(1, MIXTURE_TASKS);
        p.tasks = (0..count)
            .map(|k| {
                let span = k * rows / count..(k + 1) * rows / count;
                let parts = unit_rows
                    .iter()
                    .enumerate()
                    .filter_map(|(g, rs)| {
                        let (lo, hi) = (rs.partition_point(|&r| r < span.start), rs.partition_point(|&r| r < span.end));
                        let local = rs[lo..hi].iter().map(|&r| r - span.start).collect();
                        (hi > lo).then(|| TaskPart {
                            group: g,
                            units: p.unit_at[g] + lo..p.unit_at[g] + hi,
                            rows: Some(local),
                        })
                    })
                    .collect();
                Task { rows: span, parts }
            })
            .collect();
        Some(p)
    }

    fn rows(&self) -> usize {
        self.tasks.last().map_or(0, |t| t.rows.end)
    }
}

/// The host values of one rollout's inputs: flat parameters of every group, the units'
/// context rows and scales (group by group) and the rows' initial states.
#[derive(Debug)]
struct Inputs<T> {
    theta: Vec<T>,
    ctx: Vec<T>,
    scale: Vec<T>,
    x0: Vec<T>,
}

/// Task `k` of `inputs` bound as a taped field, and its initial states.
fn bind<'a, T: HostKernel>(p: &'a FusedProblem, inputs: &'a Inputs<T>, k: usize) -> (TapedMixture<'a, T>, &'a [T]) {
    let task = &p.tasks[k];
    let parts = task
        .parts
        .iter()
        .map(|part| {
            let (g, units) = (part.group, &part.units);
            let layout = &p.groups[g];
            let c = layout.context_len();
            let ctx_at = p.ctx_at[g] + (units.start - p.unit_at[g]) * c;
            let field = TapedGeps::bind(
                layout,
                &inputs.theta[p.theta_at[g]..p.theta_at[g + 1]],
                &inputs.ctx[ctx_at..ctx_at + units.len() * c],
                &inputs.scale[units.clone()],
            );
            Part::new(field, part.rows.clone())
        })
        .collect();
    let x0 = &inputs.x0[task.rows.start * p.dim..task.rows.end * p.dim];
    (TapedMixture::new(parts, task.rows.len(), p.dim), x0)
}

type Tape<T> = RolloutTape<MixtureTape<T>, T>;

/// Every task's rollout, in parallel; `[rows, T, d]` in task order, with the tapes when
/// `taped`. A failing task fails the whole rollout and is named.
#[allow(clippy::type_complexity)]
fn forward_in<T: HostKernel>(
    p: &FusedProblem,
    inputs: &Inputs<T>,
    taped: bool,
) -> Result<(Vec<T>, Vec<Option<Tape<T>>>), (usize, Error)> {
    let parts: Vec<Result<(Vec<T>, Option<Tape<T>>), (usize, Error)>> = (0..p.tasks.len())
        .into_par_iter()
        .map(|k| {
            let (mut field, x0) = bind(p, inputs, k);
            let run = if taped {
                p.solver.integrate_taped(&mut field, x0, &p.times).map(|(y, t)| (y, Some(t)))
            } else {
                p.solver.integrate(&mut field, x0, &p.times).map(|y| (y, None))
            };
            run.map_err(|e| (k, e))
        })
        .collect();
    let mut y = Vec::with_capacity(p.rows() * p.times.len() * p.dim);
    let mut tapes = Vec::with_capacity(parts.len());
    for part in parts {
        let (yk, tape) = part?;
        y.extend(yk);
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
        write!(f, "fused GEPS rollout of {} groups in {} tasks", self.problem.groups.len(), self.problem.tasks.len())
    }
}

/// Gradients of every input: `(theta, ctx, scale, x0)`; the parameters' only when `params`
/// (else left zero: frozen experts skip their share of the backward pass). A group's
/// parameter gradient is summed over the tasks in task order.
#[allow(clippy::type_complexity)]
fn backward_in<T: HostKernel>(saved: &Saved<T>, y_bar: &[T], params: bool) -> (Vec<T>, Vec<T>, Vec<T>, Vec<T>) {
    let p = &saved.problem;
    let (steps, d) = (p.times.len(), p.dim);
    let tasks: Vec<_> = (0..p.tasks.len())
        .into_par_iter()
        .map(|k| {
            let (field, _) = bind(p, &saved.inputs, k);
            let mut field = if params { field } else { field.without_param_grads() };
            let tape = saved.tapes[k].as_ref().expect("a taped forward pass");
            let rows = &p.tasks[k].rows;
            let x0 = pull_back(tape, &mut field, &y_bar[rows.start * steps * d..rows.end * steps * d]);
            let grads: Vec<_> = field.into_parts().into_iter().map(|part| part.field.finish()).collect();
            (grads, x0)
        })
        .collect();
    let mut theta = vec![T::ZERO; p.theta_at[p.groups.len()]];
    let mut ctx = vec![T::ZERO; p.ctx_at[p.groups.len()]];
    let mut scale = vec![T::ZERO; p.unit_at[p.groups.len()]];
    let mut x0 = Vec::with_capacity(p.rows() * d);
    for (task, (grads, x0_k)) in p.tasks.iter().zip(tasks) {
        for (part, g) in task.parts.iter().zip(grads) {
            let group: usize = part.group;
            let span: Range<usize> = p.theta_at[group]..p.theta_at[group + 1];
            for (acc, v) in theta[span].iter_mut().zip(g.theta) {
                *acc += v;
            }
            let c = p.groups[group].context_len();
            let at = p.ctx_at[group] + (part.units.start - p.unit_at[group]) * c;
            ctx[at..at + g.context.len()].copy_from_slice(&g.context);
            scale[part.units.clone()].copy_from_slice(&g.scale);
        }
        x0.extend(x0_k);
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
