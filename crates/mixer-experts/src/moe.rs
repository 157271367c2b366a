//! The mixture-of-experts layer for neural ODEs: routes environments to experts, integrates only
//! the selected experts on their rows, and scatters the trajectories back.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};
use tracing::{debug, warn};

use mixer_core::{Error, Expert, Integrator, Routing, VectorField, anchor_module, anchor_tensor};

use crate::fused::{FusedInputs, FusedProblem};
use crate::stacked::{GepsParams, Padding, StackedField, StackedMixtureField, as_geps};
use crate::{AnyExpert, ExpertConfig, ExpertError};

/// `K` experts of one type; with context splitting (`d_xi = K c`) expert `k` reads slice `k`
/// of an environment's context, otherwise (`d_xi = c`) every expert reads the whole context.
#[derive(Module, Debug)]
pub struct MixtureOfExperts<B: Backend, X> {
    /// The experts.
    pub experts: Vec<X>,
    /// How [`MixtureOfExperts::rollout_rows`] integrates a routing.
    #[module(skip)]
    dispatch: Dispatch,
    _backend: core::marker::PhantomData<B>,
}

pub(crate) fn index<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]), device)
}

/// Rows to integrate over one grid: row `r` starts at `x0[r]` at `times[0]` and belongs to
/// environment `env_of_row[r]`.
///
/// With `anchor_of_row`, row `r`'s field is its expert expanded about the context of
/// environment `anchor_of_row[r]` ([`Expert::forward_about`], NCF's context pool); experts
/// without an expansion (GEPS, CoDA, NCF of order 0) read only their own context.
///
/// With `rate`, environment `e` is integrated on `times` with every field multiplied by
/// `rate[e]`: solving `dx/ds = h f(x)` on `s` is solving the autonomous `dx/dt = f(x)` on
/// `t = t_0 + h (s - s_0)`. Environments whose grids differ only by scale (ODE families with
/// different horizons) then share one rollout. Experts ignore time, so this is exact.
#[derive(Clone, Debug)]
pub struct Rows<'a, B: Backend> {
    /// Environment of each row, `[rows]`.
    pub env_of_row: &'a [usize],
    /// Initial states, `[rows, d]`.
    pub x0: Tensor<B, 2>,
    /// The shared (possibly rescaled) time grid.
    pub times: &'a [f64],
    /// Time rate per environment (indexed like the context rows); `None` means 1.
    pub rate: Option<&'a [f64]>,
    /// Environment whose context each row's field is expanded about, `[rows]`; `None`: its own.
    pub anchor_of_row: Option<&'a [usize]>,
}

impl<'a, B: Backend> Rows<'a, B> {
    /// Rows on their own time grid (rate 1).
    pub fn new(env_of_row: &'a [usize], x0: Tensor<B, 2>, times: &'a [f64]) -> Self {
        Self { env_of_row, x0, times, rate: None, anchor_of_row: None }
    }

    /// Per-row rates `[rows, 1]`, or `None` when every rate is 1.
    fn row_rates(&self, device: &B::Device) -> Option<Tensor<B, 2>> {
        let rate = self.rate?;
        let per_row: Vec<f64> = self.env_of_row.iter().map(|&e| rate[e]).collect();
        Some(Tensor::from_data(TensorData::new(per_row, [self.env_of_row.len(), 1]), device))
    }
}

/// `w * rate` where a rate is given.
fn rated<B: Backend>(w: Tensor<B, 2>, rate: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
    match rate {
        Some(r) => w * r,
        None => w,
    }
}

/// One expert's field on a fixed set of rows: `w_r * f(x_r, ctx_r)` (`w` absent means 1),
/// either on every row of the state or, sparse, on the rows `rows` of it only.
struct ExpertField<B: Backend, X> {
    /// The expert's rollout view (see [`ExpertField::new`]).
    expert: X,
    /// Per-row context slice `[rows, c]`.
    ctx: Tensor<B, 2>,
    /// Per-row weight `[rows, 1]`.
    weight: Option<Tensor<B, 2>>,
    /// Per-row context slice the expert is expanded about, `[rows, c]` (`None`: no expansion).
    anchor: Option<Tensor<B, 2>>,
    /// The rows of the state this expert acts on; `None`: all of them.
    rows: Option<Tensor<B, 1, Int>>,
}

impl<B: Backend, X: Module<B>> ExpertField<B, X> {
    /// The field of `expert` over rows with contexts `ctx` and weights `weight`, reading rollout
    /// views of all three ([`mixer_core::anchor`]): same values and gradients, but recording
    /// the rollout stays linear in its length under burn-autodiff 0.21 (forward and backward
    /// of 100 RK4 steps of a width-64 GEPS expert: 0.57 s instead of 6.8 s, docs/benchmarks.md).
    fn new(expert: &X, ctx: Tensor<B, 2>, weight: Option<Tensor<B, 2>>) -> Self {
        Self {
            expert: anchor_module(expert.clone()),
            ctx: anchor_tensor(ctx),
            weight: weight.map(anchor_tensor),
            anchor: None,
            rows: None,
        }
    }

    /// The same field expanded about the per-row contexts `anchor` (`None` leaves it as it is).
    fn about(self, anchor: Option<Tensor<B, 2>>) -> Self {
        Self { anchor: anchor.map(anchor_tensor), ..self }
    }

    /// The same field acting only on `rows` of the state (`ctx` and `weight` are per selected row).
    fn on_rows(self, rows: Tensor<B, 1, Int>) -> Self {
        Self { rows: Some(rows), ..self }
    }
}

impl<B: Backend, X: Expert<B>> ExpertField<B, X> {
    /// `acc` plus this field's contribution at state `x` (scattered onto its rows when sparse).
    fn add_to(&self, acc: Tensor<B, 2>, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.rows {
            None => acc + self.eval(0.0, x),
            Some(rows) => {
                acc.select_assign(0, rows.clone(), self.eval(0.0, x.select(0, rows.clone())), IndexingUpdateOp::Add)
            }
        }
    }
}

impl<B: Backend, X: Expert<B>> VectorField<B> for ExpertField<B, X> {
    fn dim(&self) -> usize {
        self.expert.state_dim()
    }

    /// The field on the rows it was built for (`x` holds exactly those rows).
    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = match &self.anchor {
            Some(a) => self.expert.forward_about(x, self.ctx.clone(), a.clone()),
            None => self.expert.forward(x, self.ctx.clone()),
        };
        match &self.weight {
            Some(w) => y * w.clone(),
            None => y,
        }
    }
}

/// How a routing's experts are integrated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dispatch {
    /// Top-1 GEPS experts under a solver of `mixer-ode`: every expert integrates its rows on the
    /// host (adaptive solvers: each expert its own step sequence, as [`Dispatch::PerExpert`]),
    /// one thread task per expert, and the rollout is one autodiff node with a hand-written
    /// backward pass (the discrete adjoint); CPU backends only. Top-k and shared: the same
    /// on one host field that sums every expert's (row, slot) units onto their rows, the rows
    /// cut into at most four fixed tasks run in parallel. Where that does not apply, as
    /// [`Dispatch::Stacked`]. The default.
    #[default]
    Fused,
    /// GEPS experts of one layout evaluated in one stacked pass (others fall back to
    /// [`Dispatch::PerExpert`]). Top-1: one rollout of all rows, cut into slots of one size.
    /// Top-k and shared: every (row, slot) pair is a unit of its expert, the units' outputs
    /// are weighted and summed back onto their rows at every evaluation.
    Stacked,
    /// Top-1: one rollout per expert over its rows. Top-k and shared: each expert evaluated
    /// only on the rows routed to it (gather, evaluate, scatter-add).
    PerExpert,
    /// The masked reference: every expert with any unit evaluated on every row, its weight zero
    /// where it is not chosen (what dense implementations do; the baseline of the sparse paths).
    Dense,
}

/// What the slots of a stacked pass read ([`Padding`]): the row of each padded unit, the
/// contexts `[S, M, c]` and the scales `[S, M, 1]` (gate weight times time rate).
struct SlotInputs<B: Backend> {
    rows: Vec<usize>,
    ctx: Tensor<B, 3>,
    scale: Tensor<B, 3>,
}

/// The units of a top-k or shared routing: every (row, slot) pair and every (row, shared
/// expert) pair.
struct MixtureUnits<B: Backend> {
    /// Each unit as (row, row of `weights`).
    pairs: Vec<(usize, usize)>,
    /// (expert, its units), experts with units only, rows ascending within a group.
    groups: Vec<(usize, Vec<usize>)>,
    /// The weight column `[envs k + shared, 1]`: routed units read `weights[env, slot]`, shared
    /// ones the constants appended after them.
    weights: Tensor<B, 2>,
}

/// The weighted sum `sum_k w_rk f_k(x_r, ctx_rk)` over the experts taking part.
struct MixtureField<B: Backend, X> {
    parts: Vec<ExpertField<B, X>>,
}

impl<B: Backend, X: Expert<B>> VectorField<B> for MixtureField<B, X> {
    fn dim(&self) -> usize {
        self.parts.first().map_or(0, |p| p.dim())
    }

    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.parts.iter().fold(x.zeros_like(), |acc, p| p.add_to(acc, x.clone()))
    }
}

impl<B: Backend> MixtureOfExperts<B, AnyExpert<B>> {
    /// `k` identical experts (same initial weights, as in MixER) for states of size `dim`
    /// reading context slices of size `context`.
    pub fn init(
        config: &ExpertConfig,
        dim: usize,
        context: usize,
        k: usize,
        device: &B::Device,
    ) -> Result<Self, ExpertError> {
        if k == 0 {
            return Err(Error::config("experts", "at least one expert is needed").into());
        }
        let first = config.init::<B>(dim, context, device)?;
        Ok(Self::new((0..k).map(|_| first.clone().map(&mut Fresh)).collect()))
    }
}

/// Copies every float parameter into a new leaf with a new [`ParamId`](burn::module::ParamId):
/// clones of a module share parameter ids and autodiff nodes, so identical experts made by
/// cloning would share gradients, optimiser state and checkpoint entries.
struct Fresh;

impl<B: Backend> ModuleMapper<B> for Fresh {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        Param::from_tensor(param.val().detach())
    }
}

impl<B: Backend, X: Expert<B> + Module<B>> MixtureOfExperts<B, X> {
    /// A mixture of the given experts (all of the same state and context sizes).
    pub fn new(experts: Vec<X>) -> Self {
        Self { experts, dispatch: Dispatch::default(), _backend: core::marker::PhantomData }
    }

    /// The same mixture, integrating routings by `dispatch` (the fused path by default).
    pub fn with_dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// How routings are integrated.
    pub fn dispatch(&self) -> Dispatch {
        self.dispatch
    }

    /// Number of experts `K`.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Whether contexts of width `d_xi` are split (`d_xi = K c`, `true`) or shared (`d_xi = c`).
    pub fn splits(&self, d_xi: usize) -> Result<bool, ExpertError> {
        let c = self.experts.first().map_or(0, Expert::context_dim);
        let k = self.num_experts();
        if k == 0 {
            return Err(Error::config("experts", "the mixture holds no expert").into());
        }
        if d_xi == k * c && k > 1 {
            Ok(true)
        } else if d_xi == c {
            Ok(false)
        } else {
            Err(Error::shape("context width d_xi (K * c with splitting, c without)", [k * c, c], d_xi).into())
        }
    }

    /// Context slice of expert `k` for all environments: `contexts: [envs, d_xi]` → `[envs, c]`.
    pub fn context_slice(&self, contexts: Tensor<B, 2>, k: usize) -> Result<Tensor<B, 2>, ExpertError> {
        let [envs, d_xi] = contexts.dims();
        if k >= self.num_experts() {
            return Err(
                Error::config("expert", format!("index {k} >= number of experts {}", self.num_experts())).into()
            );
        }
        let c = self.experts[k].context_dim();
        Ok(if self.splits(d_xi)? { contexts.slice([0..envs, k * c..(k + 1) * c]) } else { contexts })
    }

    /// Checks the shapes shared by rollouts and expert losses; returns `(envs, rows)`.
    fn check(&self, contexts: &Tensor<B, 2>, rows: &Rows<'_, B>) -> Result<(usize, usize), ExpertError> {
        let [envs, d_xi] = contexts.dims();
        self.splits(d_xi)?;
        let [n, dim] = rows.x0.dims();
        if rows.env_of_row.len() != n {
            return Err(Error::shape("env_of_row (one environment per row of x0)", n, rows.env_of_row.len()).into());
        }
        if let Some(&e) = rows.env_of_row.iter().find(|&&e| e >= envs) {
            return Err(Error::shape("environment id (below the number of context rows)", envs, e).into());
        }
        if let Some(anchors) = rows.anchor_of_row {
            if anchors.len() != n {
                return Err(Error::shape("anchor_of_row (one environment per row of x0)", n, anchors.len()).into());
            }
            if let Some(&e) = anchors.iter().find(|&&e| e >= envs) {
                return Err(Error::shape("anchor environment id (below the number of context rows)", envs, e).into());
            }
        }
        let want = self.experts[0].state_dim();
        if dim != want {
            return Err(Error::shape("state dimension of x0", want, dim).into());
        }
        if let Some(rate) = rows.rate {
            if rate.len() != envs {
                return Err(Error::shape("time rates (one per context row)", envs, rate.len()).into());
            }
            if let Some(r) = rate.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
                return Err(Error::config("rate", format!("time rates must be finite and positive, got {r}")).into());
            }
        }
        mixer_core::check_times(rows.times)?;
        Ok((envs, n))
    }

    /// Trajectories `[rows, T, d]` from `x0: [rows, d]` at `times[0]`; row `r` belongs to
    /// environment `env_of_row[r]` with context `contexts[env]` (`contexts: [envs, d_xi]`), and
    /// `routing` has one unit per environment. Top-1 routings (no shared experts) group rows by
    /// expert once and integrate each expert only on its rows, its output multiplied by the
    /// (differentiable) gate weight; when those experts are GEPS experts of one layout and at
    /// least two have rows, all their rows are integrated in one stacked rollout (rows cut into
    /// slots of one size, one expert per slot; adaptive integrators then choose one step
    /// sequence for all of them). Top-k, dense and shared-expert routings integrate
    /// `sum_slots w[env, slot] f_expert(x, ctx slice)`, GEPS experts of one layout again in one
    /// stacked pass ([`Dispatch`]). Dropped environments stay at `x0`.
    pub fn rollout(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        env_of_row: &[usize],
        x0: Tensor<B, 2>,
        times: &[f64],
    ) -> Result<Tensor<B, 3>, ExpertError>
    where
        X: 'static,
    {
        self.rollout_rows(integrator, routing, contexts, Rows::new(env_of_row, x0, times))
    }

    /// [`MixtureOfExperts::rollout`] of a [`Rows`] bundle, honouring its time rates, by the
    /// mixture's [`Dispatch`].
    pub fn rollout_rows(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: Rows<'_, B>,
    ) -> Result<Tensor<B, 3>, ExpertError>
    where
        X: 'static,
    {
        self.rollout_rows_by(integrator, routing, contexts, rows, self.dispatch)
    }

    /// [`MixtureOfExperts::rollout_rows`] with the dispatch of a top-1 routing chosen
    /// ([`Dispatch::PerExpert`] is the reference of the stacked GEPS rollout and its timing
    /// baseline).
    pub fn rollout_rows_by(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: Rows<'_, B>,
        dispatch: Dispatch,
    ) -> Result<Tensor<B, 3>, ExpertError>
    where
        X: 'static,
    {
        let (envs, n) = self.check(&contexts, &rows)?;
        let k = routing.k;
        if k == 0 || routing.num_units() != envs || routing.weights.dims() != [envs, k] {
            return Err(Error::shape(
                "routing (one unit per environment, weights [envs, k])",
                [envs, k],
                routing.weights.dims(),
            )
            .into());
        }
        if let Some(&Some(e)) = routing.indices.iter().find(|i| i.is_some_and(|e| e >= self.num_experts())) {
            return Err(Error::shape("routed expert index (below K)", self.num_experts(), e).into());
        }
        if let Some(&(e, _)) = routing.shared.iter().find(|(e, _)| *e >= self.num_experts()) {
            return Err(Error::shape("shared expert index (below K)", self.num_experts(), e).into());
        }
        let device = rows.x0.device();
        if n == 0 {
            return Ok(Tensor::zeros([0, rows.times.len(), self.experts[0].state_dim()], &device));
        }
        if k == 1 && routing.shared.is_empty() && dispatch != Dispatch::Dense {
            return self.rollout_top1(integrator, routing, contexts, rows, dispatch);
        }
        if matches!(dispatch, Dispatch::Stacked | Dispatch::Fused) {
            let units = self.mixture_units(routing, &rows);
            if dispatch == Dispatch::Fused
                && let Some(y) = self.rollout_fused_mixture(integrator, &units, contexts.clone(), &rows)?
            {
                return Ok(y);
            }
            if let Some(y) = self.rollout_stacked_mixture(integrator, &units, contexts.clone(), &rows)? {
                return Ok(y);
            }
        }
        let rates = rows.row_rates(&device);
        let env_idx = index::<B>(rows.env_of_row, &device);
        // the anchor rows of `rows_e` (all rows when `None`) in context slice `ctx`
        let anchors = |ctx: &Tensor<B, 2>, rows_e: Option<&[usize]>| {
            rows.anchor_of_row.map(|a| {
                let ids: Vec<usize> = match rows_e {
                    Some(rs) => rs.iter().map(|&r| a[r]).collect(),
                    None => a.to_vec(),
                };
                ctx.clone().select(0, index::<B>(&ids, &device))
            })
        };
        let mut parts = Vec::new();
        for (e, group) in routing.groups(self.num_experts()).into_iter().enumerate() {
            if group.units.is_empty() {
                continue;
            }
            let mut mask = vec![0.0; envs * k];
            for (u, s) in group.units.iter().zip(&group.slots) {
                mask[u * k + s] = 1.0;
            }
            let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [envs, k]), &device);
            let w_env: Tensor<B, 2> = (routing.weights.clone() * mask).sum_dim(1);
            let ctx = self.context_slice(contexts.clone(), e)?;
            let mine: Vec<usize> = (0..n).filter(|&r| group.units.contains(&rows.env_of_row[r])).collect();
            if mine.is_empty() && dispatch != Dispatch::Dense {
                continue;
            }
            parts.push(if dispatch == Dispatch::Dense || mine.len() == n {
                ExpertField::new(
                    &self.experts[e],
                    ctx.clone().select(0, env_idx.clone()),
                    Some(rated(w_env.select(0, env_idx.clone()), rates.clone())),
                )
                .about(anchors(&ctx, None))
            } else {
                let row_idx = index::<B>(&mine, &device);
                let envs_e: Vec<usize> = mine.iter().map(|&r| rows.env_of_row[r]).collect();
                let env_idx_e = index::<B>(&envs_e, &device);
                let rates_e = rates.clone().map(|r| r.select(0, row_idx.clone()));
                ExpertField::new(
                    &self.experts[e],
                    ctx.clone().select(0, env_idx_e.clone()),
                    Some(rated(w_env.select(0, env_idx_e), rates_e)),
                )
                .about(anchors(&ctx, Some(&mine)))
                .on_rows(row_idx)
            });
        }
        for &(e, w) in &routing.shared {
            let ctx = self.context_slice(contexts.clone(), e)?;
            parts.push(
                ExpertField::new(
                    &self.experts[e],
                    ctx.clone().select(0, env_idx.clone()),
                    Some(rated(Tensor::full([n, 1], w, &device), rates.clone())),
                )
                .about(anchors(&ctx, None)),
            );
        }
        if parts.is_empty() {
            return Ok(rows.x0.unsqueeze_dim::<3>(1).repeat_dim(1, rows.times.len()));
        }
        debug!(rows = n, experts = parts.len(), ?dispatch, "mixture rollout");
        let field = MixtureField { parts };
        integrator.integrate(&field, rows.x0, rows.times).map_err(|e| rollout_error(e, None, rows.env_of_row))
    }

    fn rollout_top1(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: Rows<'_, B>,
        dispatch: Dispatch,
    ) -> Result<Tensor<B, 3>, ExpertError>
    where
        X: 'static,
    {
        let device = rows.x0.device();
        let (env_of_row, n) = (rows.env_of_row, rows.env_of_row.len());
        let rates = rows.row_rates(&device);
        let top1 = routing.top1();
        let groups: Vec<(usize, Vec<usize>)> = (0..self.num_experts())
            .map(|k| (k, (0..n).filter(|&r| top1[env_of_row[r]] == Some(k)).collect::<Vec<_>>()))
            .filter(|(_, rows_k)| !rows_k.is_empty())
            .collect();
        let mut outputs = Vec::new();
        let mut order = Vec::with_capacity(n);
        let fused = match dispatch {
            Dispatch::Fused => self.rollout_fused(integrator, routing, contexts.clone(), &rows, &groups)?,
            _ => None,
        };
        if let Some(y) = fused {
            outputs.push(y);
            order.extend(groups.iter().flat_map(|(_, rows_k)| rows_k.iter().copied().map(Some)));
        } else if matches!(dispatch, Dispatch::Stacked | Dispatch::Fused)
            && let Some((padding, params)) = self.stacked(&groups)
        {
            match self.rollout_stacked(integrator, routing, contexts.clone(), &rows, &groups, &padding, params) {
                Ok(y) => {
                    outputs.push(y);
                    order.extend(padding.order);
                }
                // rare (a diverging expert): the loop names the expert and its environments, so
                // that a caller can drop just those
                Err(e) => {
                    debug!(error = %e, "stacked rollout failed; repeating it expert by expert");
                    return self.rollout_top1(integrator, routing, contexts, rows, Dispatch::PerExpert);
                }
            }
        } else {
            for (k, rows_k) in groups {
                let envs_k: Vec<usize> = rows_k.iter().map(|&r| env_of_row[r]).collect();
                let env_idx = index::<B>(&envs_k, &device);
                let row_idx = index::<B>(&rows_k, &device);
                let ctx = self.context_slice(contexts.clone(), k)?;
                let anchor = rows.anchor_of_row.map(|a| {
                    let ids: Vec<usize> = rows_k.iter().map(|&r| a[r]).collect();
                    ctx.clone().select(0, index::<B>(&ids, &device))
                });
                let field = ExpertField::new(
                    &self.experts[k],
                    ctx.select(0, env_idx.clone()),
                    Some(rated(
                        routing.weights.clone().select(0, env_idx),
                        rates.clone().map(|r| r.select(0, row_idx.clone())),
                    )),
                )
                .about(anchor);
                debug!(expert = k, rows = rows_k.len(), "top-1 expert rollout");
                let y = integrator
                    .integrate(&field, rows.x0.clone().select(0, row_idx), rows.times)
                    .map_err(|e| rollout_error(e, Some(k), &envs_k))?;
                outputs.push(y);
                order.extend(rows_k.into_iter().map(Some));
            }
        }
        let dropped: Vec<usize> = (0..n).filter(|&r| top1[env_of_row[r]].is_none()).collect();
        if !dropped.is_empty() {
            let held = rows.x0.select(0, index::<B>(&dropped, &device)).unsqueeze_dim::<3>(1);
            outputs.push(held.repeat_dim(1, rows.times.len()));
            order.extend(dropped.into_iter().map(Some));
        }
        let all = Tensor::cat(outputs, 0);
        let mut inverse = vec![0; n];
        for (pos, r) in order.iter().enumerate() {
            if let Some(r) = *r {
                inverse[r] = pos;
            }
        }
        Ok(all.select(0, index::<B>(&inverse, &device)))
    }

    /// The rows of `groups` (expert, its rows; non-empty) integrated by the fused host path
    /// ([`Dispatch::Fused`]) in group order, or `None` where it does not apply (an expert that
    /// is not GEPS, a solver not of `mixer-ode`, a backend without the fused path).
    fn rollout_fused(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: &Rows<'_, B>,
        groups: &[(usize, Vec<usize>)],
    ) -> Result<Option<Tensor<B, 3>>, ExpertError>
    where
        X: 'static,
    {
        let Some(solver) = mixer_ode::HostSolver::from_integrator(integrator) else { return Ok(None) };
        let Some(geps) = groups.iter().map(|&(k, _)| as_geps::<B, X>(&self.experts[k])).collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let sizes: Vec<usize> = groups.iter().map(|(_, r)| r.len()).collect();
        let Some(problem) = FusedProblem::new(solver, rows.times, &geps, &sizes) else { return Ok(None) };
        let device = rows.x0.device();
        let rates = rows.row_rates(&device);
        let (mut ctx, mut scale, mut x0) = (Vec::new(), Vec::new(), Vec::new());
        for (k, rows_k) in groups {
            let envs_k: Vec<usize> = rows_k.iter().map(|&r| rows.env_of_row[r]).collect();
            let (env_idx, row_idx) = (index::<B>(&envs_k, &device), index::<B>(rows_k, &device));
            ctx.push(self.context_slice(contexts.clone(), *k)?.select(0, env_idx.clone()).flatten(0, 1));
            let w = routing.weights.clone().select(0, env_idx);
            scale.push(rated(w, rates.clone().map(|r| r.select(0, row_idx.clone()))).flatten(0, 1));
            x0.push(rows.x0.clone().select(0, row_idx).flatten(0, 1));
        }
        let inputs = FusedInputs {
            theta: Tensor::cat(geps.iter().map(|e| crate::geps_taped::GepsLayout::flat(e)).collect(), 0),
            ctx: Tensor::cat(ctx, 0),
            scale: Tensor::cat(scale, 0),
            x0: Tensor::cat(x0, 0),
        };
        debug!(experts = groups.len(), rows = rows.env_of_row.len(), "fused top-1 rollout");
        match crate::fused::rollout(problem, inputs) {
            None => Ok(None),
            Some(Ok(y)) => Ok(Some(y)),
            Some(Err((g, e))) => {
                let (k, rows_k) = &groups[g];
                let envs: Vec<usize> = rows_k.iter().map(|&r| rows.env_of_row[r]).collect();
                Err(rollout_error(e, Some(*k), &envs))
            }
        }
    }

    /// The slots of `groups` (expert, its rows; non-empty) and the parameters of each slot's
    /// expert, when at least two experts have rows and all of them are GEPS experts of one
    /// layout.
    fn stacked(&self, groups: &[(usize, Vec<usize>)]) -> Option<(Padding, GepsParams<B, 3>)>
    where
        X: 'static,
    {
        if groups.len() < 2 {
            return None;
        }
        self.stack_groups(groups)
    }

    /// The slots of `groups` (expert, ids of its units; non-empty) and the parameters of each
    /// slot's expert, when all of them are GEPS experts of one layout.
    fn stack_groups(&self, groups: &[(usize, Vec<usize>)]) -> Option<(Padding, GepsParams<B, 3>)>
    where
        X: 'static,
    {
        let geps = groups.iter().map(|&(k, _)| as_geps::<B, X>(&self.experts[k])).collect::<Option<Vec<_>>>()?;
        let padding = Padding::new(&groups.iter().map(|(_, ids)| ids.as_slice()).collect::<Vec<_>>());
        let params = GepsParams::stack(&padding.slots.iter().map(|&g| geps[g]).collect::<Vec<_>>())?;
        Some((padding, params))
    }

    /// What the slots of `padding` read, for units that are (row, weight) pairs: unit `u` acts
    /// on row `pairs[u].0` with the gate weight in row `pairs[u].1` of `weights: [W, 1]`, by the
    /// expert of its group in `groups`.
    fn slot_inputs(
        &self,
        padding: &Padding,
        groups: &[(usize, Vec<usize>)],
        pairs: &[(usize, usize)],
        weights: Tensor<B, 2>,
        contexts: Tensor<B, 2>,
        rows: &Rows<'_, B>,
    ) -> Result<SlotInputs<B>, ExpertError> {
        let device = rows.x0.device();
        let m = padding.size;
        let padded_rows: Vec<usize> = padding.rows.iter().map(|&u| pairs[u].0).collect();
        let padded_envs: Vec<usize> = padded_rows.iter().map(|&r| rows.env_of_row[r]).collect();
        let slices =
            groups.iter().map(|&(k, _)| self.context_slice(contexts.clone(), k)).collect::<Result<Vec<_>, _>>()?;
        let ctx = padding
            .slots
            .iter()
            .enumerate()
            .map(|(s, &g)| slices[g].clone().select(0, index::<B>(&padded_envs[s * m..(s + 1) * m], &device)))
            .collect();
        let weight_ids: Vec<usize> = padding.rows.iter().map(|&u| pairs[u].1).collect();
        let scale = rated(
            weights.select(0, index::<B>(&weight_ids, &device)),
            rows.row_rates(&device).map(|r| r.select(0, index::<B>(&padded_rows, &device))),
        );
        let slots = padding.slots.len();
        Ok(SlotInputs { rows: padded_rows, ctx: Tensor::stack(ctx, 0), scale: scale.reshape([slots, m, 1]) })
    }

    /// One rollout of all rows of `groups` in the slots of `padding`, each slot read by its
    /// expert's parameters in `params`; returns `[slots * M, T, d]`, in the order of
    /// `padding.order`. A failure names every environment of the rows (the failing expert is
    /// unknown; [`MixtureOfExperts::rollout_rows`] then repeats the rollout expert by expert).
    #[allow(clippy::too_many_arguments)]
    fn rollout_stacked(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: &Rows<'_, B>,
        groups: &[(usize, Vec<usize>)],
        padding: &Padding,
        params: GepsParams<B, 3>,
    ) -> Result<Tensor<B, 3>, ExpertError> {
        let device = rows.x0.device();
        // a unit is a row, weighted by its environment's gate weight
        let pairs: Vec<(usize, usize)> = rows.env_of_row.iter().enumerate().map(|(r, &e)| (r, e)).collect();
        let SlotInputs { rows: padded_rows, ctx, scale } =
            self.slot_inputs(padding, groups, &pairs, routing.weights.clone(), contexts, rows)?;
        let slots = padding.slots.len();
        let field = StackedField::new(params, ctx, scale, self.experts[0].state_dim());
        debug!(
            experts = groups.len(),
            slots,
            rows = rows.env_of_row.len(),
            padded = padded_rows.len(),
            "stacked top-1 rollout"
        );
        integrator.integrate(&field, rows.x0.clone().select(0, index::<B>(&padded_rows, &device)), rows.times).map_err(
            |e| {
                let envs: Vec<usize> = padding.order.iter().flatten().map(|&r| rows.env_of_row[r]).collect();
                rollout_error(e, None, &envs)
            },
        )
    }

    /// The units of a top-k or shared routing ([`MixtureUnits`]), built once for whichever
    /// mixture path takes them.
    fn mixture_units(&self, routing: &Routing<B>, rows: &Rows<'_, B>) -> MixtureUnits<B> {
        let (k, envs) = (routing.k, routing.num_units());
        let mut pairs = Vec::new();
        let mut by_expert = vec![Vec::new(); self.num_experts()];
        for (r, &env) in rows.env_of_row.iter().enumerate() {
            let routed = (0..k).filter_map(|s| routing.indices[env * k + s].map(|e| (e, env * k + s)));
            let shared = routing.shared.iter().enumerate().map(|(i, &(e, _))| (e, envs * k + i));
            for (e, w) in routed.chain(shared) {
                by_expert[e].push(pairs.len());
                pairs.push((r, w));
            }
        }
        let groups = by_expert.into_iter().enumerate().filter(|(_, u)| !u.is_empty()).collect();
        let mut weights = routing.weights.clone().reshape([envs * k, 1]);
        if !routing.shared.is_empty() {
            let shared: Vec<f64> = routing.shared.iter().map(|&(_, w)| w).collect();
            let shared = Tensor::from_data(TensorData::new(shared, [routing.shared.len(), 1]), &rows.x0.device());
            weights = Tensor::cat(vec![weights, shared], 0);
        }
        MixtureUnits { pairs, groups, weights }
    }

    /// A top-k or shared routing integrated by the fused host path ([`Dispatch::Fused`]): one
    /// field summing every expert's units onto their rows; `None` where it does not apply
    /// (an expert that is not GEPS, a solver not of `mixer-ode`, a backend without the path).
    fn rollout_fused_mixture(
        &self,
        integrator: &dyn Integrator<B>,
        units: &MixtureUnits<B>,
        contexts: Tensor<B, 2>,
        rows: &Rows<'_, B>,
    ) -> Result<Option<Tensor<B, 3>>, ExpertError>
    where
        X: 'static,
    {
        let Some(solver) = mixer_ode::HostSolver::from_integrator(integrator) else { return Ok(None) };
        let MixtureUnits { pairs, groups, weights } = units;
        let Some(geps) = groups.iter().map(|&(k, _)| as_geps::<B, X>(&self.experts[k])).collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let unit_rows: Vec<Vec<usize>> =
            groups.iter().map(|(_, us)| us.iter().map(|&u| pairs[u].0).collect()).collect();
        let n = rows.env_of_row.len();
        let Some(problem) = FusedProblem::mixture(solver, rows.times, &geps, &unit_rows, n) else { return Ok(None) };
        let device = rows.x0.device();
        let rates = rows.row_rates(&device);
        let (mut ctx, mut weight_ids) = (Vec::new(), Vec::new());
        for ((k, units), unit_rows) in groups.iter().zip(&unit_rows) {
            let envs: Vec<usize> = unit_rows.iter().map(|&r| rows.env_of_row[r]).collect();
            ctx.push(self.context_slice(contexts.clone(), *k)?.select(0, index::<B>(&envs, &device)).flatten(0, 1));
            weight_ids.extend(units.iter().map(|&u| pairs[u].1));
        }
        let all_rows: Vec<usize> = unit_rows.concat();
        let scale = rated(
            weights.clone().select(0, index::<B>(&weight_ids, &device)),
            rates.map(|r| r.select(0, index::<B>(&all_rows, &device))),
        );
        let inputs = FusedInputs {
            theta: Tensor::cat(geps.iter().map(|e| crate::geps_taped::GepsLayout::flat(e)).collect(), 0),
            ctx: Tensor::cat(ctx, 0),
            scale: scale.flatten(0, 1),
            x0: rows.x0.clone().flatten(0, 1),
        };
        debug!(experts = groups.len(), units = pairs.len(), rows = n, "fused mixture rollout");
        match crate::fused::rollout(problem, inputs) {
            None => Ok(None),
            Some(Ok(y)) => Ok(Some(y)),
            Some(Err((_, e))) => Err(rollout_error(e, None, rows.env_of_row)),
        }
    }

    /// A top-k or shared routing as one stacked field over (row, slot) pairs, when every expert
    /// taking part is a GEPS expert of one layout ([`StackedMixtureField`]); `None` otherwise.
    fn rollout_stacked_mixture(
        &self,
        integrator: &dyn Integrator<B>,
        units: &MixtureUnits<B>,
        contexts: Tensor<B, 2>,
        rows: &Rows<'_, B>,
    ) -> Result<Option<Tensor<B, 3>>, ExpertError>
    where
        X: 'static,
    {
        let device = rows.x0.device();
        let MixtureUnits { pairs, groups, weights } = units;
        if groups.is_empty() {
            return Ok(None);
        }
        let Some((padding, params)) = self.stack_groups(groups) else { return Ok(None) };
        let SlotInputs { rows: padded_rows, ctx, scale } =
            self.slot_inputs(&padding, groups, pairs, weights.clone(), contexts, rows)?;
        let real: Vec<f64> = padding.order.iter().map(|u| if u.is_some() { 1.0 } else { 0.0 }).collect();
        let real = Tensor::<B, 1>::from_data(TensorData::new(real, [padded_rows.len()]), &device);
        let scale = scale.clone() * real.reshape(scale.dims());
        let field = StackedMixtureField::new(
            StackedField::new(params, ctx, scale, self.experts[0].state_dim()),
            index::<B>(&padded_rows, &device),
        );
        debug!(experts = groups.len(), pairs = pairs.len(), padded = padded_rows.len(), "stacked mixture rollout");
        integrator
            .integrate(&field, rows.x0.clone(), rows.times)
            .map(Some)
            .map_err(|e| rollout_error(e, None, rows.env_of_row))
    }

    /// Loss of every expert on every environment, no routing: each expert is integrated alone
    /// on all `rows` (their time rates and anchors honoured) with its context slice, and the
    /// MSE over (times, dims) against `target: [rows, T, d]` is averaged over each
    /// environment's rows. Returns `[envs, K]`, NaN for environments without rows and +inf
    /// where an expert's rollout fails (logged). Run it on an inference backend: MixER's gate
    /// refit takes no gradient.
    pub fn expert_losses(
        &self,
        integrator: &dyn Integrator<B>,
        contexts: Tensor<B, 2>,
        rows: Rows<'_, B>,
        target: Tensor<B, 3>,
    ) -> Result<Tensor<B, 2>, ExpertError>
    where
        X: 'static,
    {
        let (envs, n) = self.check(&contexts, &rows)?;
        let [_, d] = rows.x0.dims();
        if target.dims() != [n, rows.times.len(), d] {
            return Err(Error::shape("target trajectories", [n, rows.times.len(), d], target.dims()).into());
        }
        let device = rows.x0.device();
        let mut counts = vec![0usize; envs];
        for &e in rows.env_of_row {
            counts[e] += 1;
        }
        let mut averaging = vec![0.0; envs * n];
        for (r, &e) in rows.env_of_row.iter().enumerate() {
            averaging[e * n + r] = 1.0 / counts[e] as f64;
        }
        let averaging = Tensor::<B, 2>::from_data(TensorData::new(averaging, [envs, n]), &device);
        let missing: Vec<f64> = counts.iter().map(|&c| if c == 0 { f64::NAN } else { 0.0 }).collect();
        let missing = Tensor::<B, 2>::from_data(TensorData::new(missing, [envs, 1]), &device);
        let mut columns = Vec::with_capacity(self.num_experts());
        for k in 0..self.num_experts() {
            let alone = Routing::constant(envs, k, &device);
            let column = match self.rollout_rows_by(
                integrator,
                &alone,
                contexts.clone(),
                rows.clone(),
                Dispatch::PerExpert,
            ) {
                Ok(pred) => {
                    let row_mse: Tensor<B, 2> = (pred - target.clone()).square().reshape([n as i32, -1]).mean_dim(1);
                    averaging.clone().matmul(row_mse)
                }
                Err(err) => {
                    warn!(expert = k, error = %err, "expert rollout failed while computing expert losses; loss set to +inf");
                    Tensor::full([envs, 1], f64::INFINITY, &device)
                }
            };
            columns.push(column + missing.clone());
        }
        Ok(Tensor::cat(columns, 1))
    }
}

fn rollout_error(source: Error, expert: Option<usize>, envs: &[usize]) -> ExpertError {
    let mut envs = envs.to_vec();
    envs.sort_unstable();
    envs.dedup();
    ExpertError::Rollout { expert, envs, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GepsConfig;
    use crate::tests::{TestAutodiffBackend, TestBackend};
    use burn::module::ModuleVisitor;
    use burn::tensor::backend::AutodiffBackend;
    use mixer_core::host::{tensor2, to_vec};
    use mixer_ode::{Rk4, Tsit5};

    type AB = TestAutodiffBackend;

    /// 5 environments: 0 and 3 go to expert 2, 1 to expert 0, 4 to expert 1; 2 is dropped.
    const TOP1: [Option<usize>; 5] = [Some(2), Some(0), None, Some(2), Some(1)];
    const WEIGHTS: [f64; 5] = [0.9, 0.7, 0.5, 1.3, 0.6];
    const RATES: [f64; 5] = [0.5, 2.0, 1.0, 1.25, 0.8];
    const TIMES: [f64; 4] = [0.0, 0.4, 1.0, 1.6];

    /// Rows over the environments: `counts[e]` rows of environment `e`, interleaved.
    struct Case {
        env_of_row: Vec<usize>,
        /// The non-empty row groups (expert, rows).
        groups: Vec<(usize, Vec<usize>)>,
    }

    impl Case {
        fn new(counts: [usize; 5]) -> Self {
            let mut left = counts;
            let mut env_of_row = Vec::new();
            while left.iter().any(|&c| c > 0) {
                for (e, c) in left.iter_mut().enumerate().filter(|(_, c)| **c > 0) {
                    env_of_row.push(e);
                    *c -= 1;
                }
            }
            let groups = (0..3)
                .map(|k| (k, (0..env_of_row.len()).filter(|&r| TOP1[env_of_row[r]] == Some(k)).collect::<Vec<_>>()))
                .collect();
            Self { env_of_row, groups }
        }

        /// Groups of 6, 1 and 2 rows, padded to 6 (one slot per expert), and groups of 16, 2
        /// and 80 rows in slots of 16 (expert 2 in five of them).
        fn all() -> [Case; 2] {
            [Case::new([3, 1, 2, 3, 2]), Case::new([40, 16, 3, 40, 2])]
        }

        fn n(&self) -> usize {
            self.env_of_row.len()
        }

        fn rows<B: Backend>(&self, x0: Tensor<B, 2>) -> Rows<'_, B> {
            Rows { env_of_row: &self.env_of_row, x0, times: &TIMES, rate: Some(&RATES), anchor_of_row: None }
        }

        /// Split contexts `[5, 6]`, initial states `[n, 2]` and the routing with gate weights `weights`.
        fn problem<B: Backend>(
            &self,
            weights: Tensor<B, 2>,
            device: &B::Device,
        ) -> (Tensor<B, 2>, Tensor<B, 2>, Routing<B>) {
            let ctx: Vec<f64> = (0..30).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.13).collect();
            let x0: Vec<f64> = (0..2 * self.n()).map(|i| ((i * 5 % 9) as f64 - 4.0) * 0.21).collect();
            let routing =
                Routing { k: 1, indices: TOP1.to_vec(), weights, shared: vec![], probs: None, aux_losses: vec![] };
            (tensor2(&ctx, [5, 6], device), tensor2(&x0, [self.n(), 2], device), routing)
        }
    }

    /// Three GEPS experts with distinct parameters (and distinct non-zero context shifts).
    fn mixture<B: Backend>(mip: bool, shift: bool, device: &B::Device) -> MixtureOfExperts<B, AnyExpert<B>> {
        let _rng = crate::tests::rng_lock();
        let experts = (0..3u64)
            .map(|k| {
                B::seed(device, 20 + k);
                let config = GepsConfig { dim: 2, context: 2, width: 6, depth: 3, context_shift: shift, mip };
                let mut e = config.init::<B>(device).unwrap();
                if shift {
                    e.context_shift = Some(Param::from_tensor(Tensor::from_data([0.2 - 0.15 * k as f64], device)));
                }
                AnyExpert::Geps(e)
            })
            .collect();
        MixtureOfExperts::new(experts)
    }

    #[test]
    fn anchored_rows_expand_ncf_experts_on_every_path() {
        let device = Default::default();
        let moe = {
            let _rng = crate::tests::rng_lock();
            TestBackend::seed(&device, 31);
            let ncf = ExpertConfig::Ncf { width: 8, depth: 2, intermediate: 4, branch_depth: 1, order: 2 };
            MixtureOfExperts::<TestBackend, AnyExpert<TestBackend>>::init(&ncf, 2, 2, 3, &device).unwrap()
        };
        let case = Case::new([3, 1, 2, 3, 2]);
        let (ctx, x0, r) = case.problem::<TestBackend>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        let rk4 = Rk4 { substeps: 1 };
        let run = |moe: &MixtureOfExperts<TestBackend, AnyExpert<TestBackend>>, anchors: Option<&[usize]>, dispatch| {
            let rows = Rows { anchor_of_row: anchors, ..case.rows(x0.clone()) };
            to_vec(moe.rollout_rows_by(&rk4, &r, ctx.clone(), rows, dispatch).unwrap())
        };
        let own = case.env_of_row.clone();
        let others: Vec<usize> = own.iter().map(|&e| (e + 1) % 5).collect();
        let plain = run(&moe, None, Dispatch::PerExpert);
        // about its own context, the expansion is the plain field
        assert_eq!(run(&moe, Some(&own), Dispatch::PerExpert), plain);
        // about other contexts it is not, and the top-1 loop and the masked dense path agree
        let expanded = run(&moe, Some(&others), Dispatch::PerExpert);
        assert!(max_diff(&expanded, &plain) > 1e-6);
        assert!(max_diff(&run(&moe, Some(&others), Dispatch::Dense), &expanded) < 1e-12);
        assert!(max_diff(&run(&moe, Some(&others), Dispatch::Fused), &expanded) < 1e-12);
        // experts without an expansion ignore anchors
        let geps = mixture::<TestBackend>(false, true, &device);
        assert_eq!(run(&geps, Some(&others), Dispatch::PerExpert), run(&geps, None, Dispatch::PerExpert));
        let bad = vec![7; case.n()];
        let rows = Rows { anchor_of_row: Some(&bad), ..case.rows(x0.clone()) };
        assert!(moe.rollout_rows(&rk4, &r, ctx.clone(), rows).is_err(), "anchors name context rows");
    }

    /// Largest `|a - b| / max(1, |b|)`.
    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs() / y.abs().max(1.0)))
    }

    #[test]
    fn the_cases_pad_and_split_groups() {
        let device = Default::default();
        let moe = mixture::<TestBackend>(false, true, &device);
        let [small, large] = Case::all();
        let (padding, _) = moe.stacked(&small.groups).expect("stacks");
        assert_eq!((padding.size, padding.slots), (6, vec![0, 1, 2]));
        let (padding, _) = moe.stacked(&large.groups).expect("stacks");
        assert_eq!((padding.size, padding.slots), (16, vec![0, 1, 2, 2, 2, 2, 2]));
    }

    #[test]
    fn stacked_and_fused_top1_rollouts_equal_the_per_expert_loop() {
        let device = Default::default();
        let rk4 = Rk4 { substeps: 2 };
        for case in Case::all() {
            for (mip, shift) in [(false, false), (false, true), (true, false), (true, true)] {
                let moe = mixture::<TestBackend>(mip, shift, &device);
                assert!(moe.stacked(&case.groups).is_some(), "the stacked path is taken");
                let (ctx, x0, r) = case.problem::<TestBackend>(tensor2(&WEIGHTS, [5, 1], &device), &device);
                let want = to_vec(
                    moe.rollout_rows_by(&rk4, &r, ctx.clone(), case.rows(x0.clone()), Dispatch::PerExpert).unwrap(),
                );
                for dispatch in [Dispatch::Stacked, Dispatch::Fused] {
                    let got =
                        to_vec(moe.rollout_rows_by(&rk4, &r, ctx.clone(), case.rows(x0.clone()), dispatch).unwrap());
                    let diff = max_diff(&got, &want);
                    assert!(
                        diff < 1e-12,
                        "{} rows, mip {mip} shift {shift}: {dispatch:?} vs per expert {diff}",
                        case.n()
                    );
                }
                // dropped rows stay at x0, routed rows move
                let x0 = to_vec(x0);
                for (row, &e) in case.env_of_row.iter().enumerate() {
                    let (start, end) = (row * 8 + 6, row * 8 + 8);
                    let moved = max_diff(&want[start..end], &x0[row * 2..row * 2 + 2]);
                    assert_eq!(moved > 1e-3, e != 2, "row {row} of environment {e}: moved by {moved}");
                }
            }
        }
    }

    #[test]
    fn adaptive_stacked_rollout_agrees_to_the_tolerance() {
        let device = Default::default();
        let tsit5 = Tsit5::new(1e-9, 1e-11);
        let moe = mixture::<TestBackend>(true, true, &device);
        for case in Case::all() {
            let (ctx, x0, r) = case.problem::<TestBackend>(tensor2(&WEIGHTS, [5, 1], &device), &device);
            let got = to_vec(moe.rollout_rows(&tsit5, &r, ctx.clone(), case.rows(x0.clone())).unwrap());
            let want = to_vec(moe.rollout_rows_by(&tsit5, &r, ctx, case.rows(x0), Dispatch::PerExpert).unwrap());
            let diff = max_diff(&got, &want);
            assert!(diff < 1e-7, "stacked vs per expert under tsit5: {diff}");
        }
    }

    /// Gradients of every parameter, in visiting order.
    struct ParamGrads<'a> {
        grads: &'a <AB as AutodiffBackend>::Gradients,
        out: Vec<Option<Vec<f64>>>,
    }

    impl ModuleVisitor<AB> for ParamGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            self.out.push(param.grad(self.grads).map(to_vec));
        }
    }

    /// A top-2 routing of the five environments: `indices` `[5 * 2]`, gate weights `[5, 2]`,
    /// and the `shared` experts.
    fn top2<B: Backend>(indices: &[Option<usize>], weights: Tensor<B, 2>, shared: &[(usize, f64)]) -> Routing<B> {
        Routing { k: 2, indices: indices.to_vec(), weights, shared: shared.to_vec(), probs: None, aux_losses: vec![] }
    }

    /// Values, parameter gradients (`None`: not reached), context and gate-weight gradients.
    type Outcome = (Vec<f64>, Vec<Option<Vec<f64>>>, Vec<f64>, Vec<f64>);

    /// Values and gradients (parameters, contexts, gate weights) of `sum(y * R)` for a top-2
    /// routing `indices` with weights `w`, plus `shared` experts, dispatched by `dispatch`.
    fn top2_run(
        case: &Case,
        indices: &[Option<usize>],
        w: &[f64],
        shared: &[(usize, f64)],
        dispatch: Dispatch,
    ) -> Outcome {
        let device = Default::default();
        let moe = mixture::<AB>(false, true, &device);
        let weights = tensor2::<AB>(w, [5, 2], &device).require_grad();
        let (ctx, x0, _) = case.problem::<AB>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        let ctx = ctx.require_grad();
        let r = top2(indices, weights.clone(), shared);
        let y = moe.rollout_rows_by(&Rk4 { substeps: 1 }, &r, ctx.clone(), case.rows(x0), dispatch).unwrap();
        let factor: Vec<f64> = (0..8 * case.n()).map(|i| 0.5 + 0.01 * (i % 97) as f64).collect();
        let factor = tensor2::<AB>(&factor, [case.n(), 8], &device).reshape([case.n(), 4, 2]);
        let grads = (y.clone() * factor).sum().backward();
        let mut params = ParamGrads { grads: &grads, out: Vec::new() };
        moe.visit(&mut params);
        (to_vec(y), params.out, to_vec(ctx.grad(&grads).unwrap()), to_vec(weights.grad(&grads).unwrap()))
    }

    #[test]
    fn sparse_top2_and_shared_dispatch_equals_the_masked_dense_mixture() {
        // Environment 2 has no rows; only it routes to expert 1, so without shared experts the
        // sparse path never evaluates expert 1 while the dense one runs it with weight zero.
        let case = Case::new([3, 1, 0, 3, 2]);
        let indices = [Some(2), Some(0), Some(0), None, Some(1), None, Some(2), Some(0), Some(0), Some(2)];
        let w = [0.6, 0.4, 0.9, 0.0, 1.0, 0.0, 0.3, 0.7, 0.5, 0.5];
        for shared in [vec![], vec![(1, 0.5)]] {
            let (want_y, want_p, want_c, want_w) = top2_run(&case, &indices, &w, &shared, Dispatch::Dense);
            for dispatch in [Dispatch::Fused, Dispatch::Stacked, Dispatch::PerExpert] {
                let (got_y, got_p, got_c, got_w) = top2_run(&case, &indices, &w, &shared, dispatch);
                let what = format!("{dispatch:?}, shared {shared:?}");
                assert!(max_diff(&got_y, &want_y) < 1e-12, "{what}: values");
                assert!(max_diff(&got_c, &want_c) < 1e-12, "{what}: context gradient");
                assert!(max_diff(&got_w, &want_w) < 1e-12, "{what}: gate weight gradient");
                // parameters of expert k come at [k * per, (k + 1) * per)
                let per = got_p.len() / 3;
                for (i, (g, d)) in got_p.iter().zip(&want_p).enumerate() {
                    match (g, d) {
                        (Some(g), Some(d)) => assert!(max_diff(g, d) < 1e-12, "{what}: parameter {i}"),
                        (None, Some(d)) => {
                            assert!(shared.is_empty() && i / per == 1, "{what}: parameter {i} lost its gradient");
                            assert!(d.iter().all(|v| *v == 0.0), "{what}: masked expert 1 has a gradient");
                        }
                        _ => panic!("{what}: parameter {i}: sparse {g:?}, dense {d:?}"),
                    }
                }
                if shared.is_empty() {
                    assert!(got_p[per..2 * per].iter().all(Option::is_none), "{what}: expert 1 was evaluated");
                }
            }
        }
    }

    #[test]
    fn top2_and_shared_geps_experts_stack_and_others_fall_back() {
        let device = Default::default();
        let mut moe = mixture::<TestBackend>(false, true, &device);
        let [case, _] = Case::all();
        let indices = [Some(2), Some(0), Some(0), None, Some(1), None, Some(2), Some(0), Some(0), Some(2)];
        let (ctx, x0, _) = case.problem::<TestBackend>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        let weights = tensor2::<TestBackend>(&[0.6, 0.4, 0.9, 0.0, 1.0, 0.0, 0.3, 0.7, 0.5, 0.5], [5, 2], &device);
        let r = top2(&indices, weights, &[(1, 0.5)]);
        let rk4 = Rk4 { substeps: 1 };
        let rows = case.rows(x0.clone());
        let units = moe.mixture_units(&r, &rows);
        let stacked = moe.rollout_stacked_mixture(&rk4, &units, ctx.clone(), &rows).unwrap();
        let dense = moe.rollout_rows_by(&rk4, &r, ctx.clone(), case.rows(x0.clone()), Dispatch::Dense).unwrap();
        assert!(max_diff(&to_vec(stacked.expect("GEPS experts of one layout stack")), &to_vec(dense.clone())) < 1e-12);
        moe.experts[1] = ExpertConfig::Coda { width: 6, depth: 3 }.init(2, 2, &device).unwrap();
        assert!(moe.rollout_stacked_mixture(&rk4, &units, ctx.clone(), &rows).unwrap().is_none());
        let fallback = moe.rollout_rows_by(&rk4, &r, ctx.clone(), case.rows(x0.clone()), Dispatch::Fused).unwrap();
        let per_expert = moe.rollout_rows_by(&rk4, &r, ctx, case.rows(x0), Dispatch::PerExpert).unwrap();
        assert_eq!(to_vec(fallback), to_vec(per_expert));
    }

    #[test]
    fn stacked_and_fused_gradients_equal_the_per_expert_loop() {
        let device = Default::default();
        let rk4 = Rk4 { substeps: 1 };
        for case in Case::all() {
            for (mip, shift) in [(false, false), (true, true)] {
                let moe = mixture::<AB>(mip, shift, &device);
                assert!(moe.stacked(&case.groups).is_some(), "the stacked path is taken");
                // value, parameter, context, gate-weight and initial-state gradients of `sum(y * R)`
                let run = |dispatch: Dispatch| {
                    let weights = tensor2::<AB>(&WEIGHTS, [5, 1], &device).require_grad();
                    let (ctx, x0, r) = case.problem::<AB>(weights.clone(), &device);
                    let (ctx, x0) = (ctx.require_grad(), x0.require_grad());
                    let y = moe.rollout_rows_by(&rk4, &r, ctx.clone(), case.rows(x0.clone()), dispatch).unwrap();
                    let factor: Vec<f64> = (0..8 * case.n()).map(|i| 0.5 + 0.01 * (i % 97) as f64).collect();
                    let factor = tensor2::<AB>(&factor, [case.n(), 8], &device).reshape([case.n(), 4, 2]);
                    let grads = (y.clone() * factor).sum().backward();
                    let mut params = ParamGrads { grads: &grads, out: Vec::new() };
                    moe.visit(&mut params);
                    let param_grads: Vec<Vec<f64>> =
                        params.out.into_iter().map(|g| g.expect("every expert has rows")).collect();
                    let (c, w, x) = (ctx.grad(&grads), weights.grad(&grads), x0.grad(&grads));
                    (to_vec(y), param_grads, to_vec(c.unwrap()), to_vec(w.unwrap()), to_vec(x.unwrap()))
                };
                let (want_y, want_p, want_c, want_w, want_x) = run(Dispatch::PerExpert);
                for dispatch in [Dispatch::Stacked, Dispatch::Fused] {
                    let (got_y, got_p, got_c, got_w, got_x) = run(dispatch);
                    let what = format!("{dispatch:?}, {} rows, mip {mip} shift {shift}", case.n());
                    assert!(max_diff(&got_y, &want_y) < 1e-12, "{what}: values");
                    assert_eq!(got_p.len(), want_p.len());
                    assert_eq!(got_p.len(), 3 * (3 * 5 + 2 * 2 + usize::from(shift)), "every parameter has a gradient");
                    for (i, (g, w)) in got_p.iter().zip(&want_p).enumerate() {
                        assert!(max_diff(g, w) < 1e-10, "{what}: parameter {i}: {}", max_diff(g, w));
                        assert!(w.iter().any(|v| v.abs() > 1e-8), "{what}: parameter {i} has a non-zero gradient");
                    }
                    assert!(max_diff(&got_c, &want_c) < 1e-10, "{what}: context gradient");
                    assert!(max_diff(&got_w, &want_w) < 1e-10, "{what}: gate weight gradient");
                    assert!(max_diff(&got_x, &want_x) < 1e-10, "{what}: initial-state gradient");
                    // the dropped environment's context and gate weight get none
                    assert_eq!(got_c[2 * 6..3 * 6], [0.0; 6]);
                    assert!(got_w.iter().enumerate().all(|(e, g)| (e == 2) == (*g == 0.0)), "{what}: {got_w:?}");
                }
                // frozen experts (context steps, adaptation): the fused pass leaves the parameters
                // out and gives the contexts the same gradient
                let frozen = moe.clone().no_grad();
                let (ctx, x0, r) = case.problem::<AB>(tensor2(&WEIGHTS, [5, 1], &device), &device);
                let ctx = ctx.require_grad();
                let y = frozen.rollout_rows_by(&rk4, &r, ctx.clone(), case.rows(x0), Dispatch::Fused).unwrap();
                let factor: Vec<f64> = (0..8 * case.n()).map(|i| 0.5 + 0.01 * (i % 97) as f64).collect();
                let factor = tensor2::<AB>(&factor, [case.n(), 8], &device).reshape([case.n(), 4, 2]);
                let got_c = to_vec(ctx.grad(&(y * factor).sum().backward()).unwrap());
                assert!(max_diff(&got_c, &want_c) < 1e-10, "frozen experts, mip {mip}: context gradient");
            }
        }
    }

    /// An integrator that always fails.
    struct Failing;

    impl<B: Backend> Integrator<B> for Failing {
        fn integrate(&self, _: &dyn VectorField<B>, _: Tensor<B, 2>, _: &[f64]) -> mixer_core::Result<Tensor<B, 3>> {
            Err(Error::config("solver", "always fails"))
        }

        fn order(&self) -> usize {
            1
        }
    }

    #[test]
    fn a_failing_stacked_rollout_names_the_failing_expert_like_the_loop() {
        let device = Default::default();
        let moe = mixture::<TestBackend>(false, true, &device);
        let [case, _] = Case::all();
        let (ctx, x0, r) = case.problem::<TestBackend>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        for stacked in [true, false] {
            let got = if stacked {
                moe.rollout_rows_by(&Failing, &r, ctx.clone(), case.rows(x0.clone()), Dispatch::Stacked)
            } else {
                moe.rollout_rows_by(&Failing, &r, ctx.clone(), case.rows(x0.clone()), Dispatch::PerExpert)
            };
            match got {
                Err(ExpertError::Rollout { expert: Some(0), envs, .. }) => assert_eq!(envs, [1], "stacked {stacked}"),
                other => panic!("expected a rollout error of expert 0, got {other:?}"),
            }
        }
    }

    #[test]
    fn fused_values_and_gradients_do_not_depend_on_the_thread_count() {
        let device = Default::default();
        let moe = mixture::<AB>(true, true, &device);
        let [_, case] = Case::all();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (ctx, x0, r) = case.problem::<AB>(tensor2(&WEIGHTS, [5, 1], &device), &device);
                let ctx = ctx.require_grad();
                let y = moe.rollout_rows_by(&Rk4 { substeps: 2 }, &r, ctx.clone(), case.rows(x0), Dispatch::Fused);
                let y = y.unwrap();
                let grads = (y.clone() * y.clone()).sum().backward();
                let mut params = ParamGrads { grads: &grads, out: Vec::new() };
                moe.visit(&mut params);
                (to_vec(y), params.out, to_vec(ctx.grad(&grads).unwrap()))
            })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn fused_top2_and_shared_rollouts_do_not_depend_on_the_thread_count() {
        let device = Default::default();
        let moe = mixture::<AB>(true, true, &device);
        // 101 rows: the fused mixture cuts them into three tasks
        let [_, case] = Case::all();
        let indices = [Some(2), Some(0), Some(0), None, Some(1), Some(2), Some(2), Some(0), Some(0), Some(1)];
        let w = [0.6, 0.4, 0.9, 0.0, 1.0, 0.2, 0.3, 0.7, 0.5, 0.5];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (ctx, x0, _) = case.problem::<AB>(tensor2(&WEIGHTS, [5, 1], &device), &device);
                let (ctx, weights) = (ctx.require_grad(), tensor2::<AB>(&w, [5, 2], &device).require_grad());
                let r = top2(&indices, weights.clone(), &[(1, 0.25)]);
                let y = moe.rollout_rows_by(&Rk4 { substeps: 2 }, &r, ctx.clone(), case.rows(x0), Dispatch::Fused);
                let y = y.unwrap();
                let grads = (y.clone() * y.clone()).sum().backward();
                let mut params = ParamGrads { grads: &grads, out: Vec::new() };
                moe.visit(&mut params);
                let grad = |t: &Tensor<AB, 2>| to_vec(t.grad(&grads).unwrap());
                (to_vec(y), params.out, grad(&ctx), grad(&weights))
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        // and it is the mixture: the stacked tensor path agrees to rounding
        let (ctx, x0, _) = case.problem::<AB>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        let weights = tensor2::<AB>(&w, [5, 2], &device);
        let r = top2(&indices, weights, &[(1, 0.25)]);
        let rk4 = Rk4 { substeps: 2 };
        let rows = case.rows(x0.clone());
        let fused = moe.rollout_fused_mixture(&rk4, &moe.mixture_units(&r, &rows), ctx.clone(), &rows).unwrap();
        assert_eq!(to_vec(fused.expect("the fused path applies")), one.0);
        let stacked = moe.rollout_rows_by(&rk4, &r, ctx, case.rows(x0), Dispatch::Stacked).unwrap();
        assert!(max_diff(&one.0, &to_vec(stacked)) < 1e-12);
    }

    #[test]
    fn a_diverging_fused_rollout_names_its_expert_and_environments() {
        let device = Default::default();
        let moe = mixture::<AB>(false, true, &device);
        let [case, _] = Case::all();
        let (ctx, x0, r) = case.problem::<AB>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        // environment 4 (expert 1) gets a NaN context: its rows stop being finite at the first output time
        let mut values = to_vec(ctx);
        values[4 * 6 + 2] = f64::NAN;
        let ctx = tensor2::<AB>(&values, [5, 6], &device);
        match moe.rollout_rows_by(&Rk4 { substeps: 1 }, &r, ctx, case.rows(x0), Dispatch::Fused) {
            Err(ExpertError::Rollout { expert: Some(1), envs, source }) => {
                assert_eq!(envs, [4]);
                assert!(matches!(source, Error::NonFiniteState { t } if t == TIMES[1]), "{source}");
            }
            other => panic!("expected a rollout error of expert 1, got {other:?}"),
        }
    }

    #[test]
    fn a_single_active_expert_or_mixed_layouts_do_not_stack() {
        let device = Default::default();
        let mut moe = mixture::<TestBackend>(false, true, &device);
        let [case, _] = Case::all();
        let groups = &case.groups;
        assert!(moe.stacked(&groups[..1]).is_none());
        if let AnyExpert::Geps(e) = &mut moe.experts[1] {
            e.context_shift = None;
        }
        assert!(moe.stacked(groups).is_none());
        moe.experts[1] = ExpertConfig::Coda { width: 6, depth: 3 }.init(2, 2, &device).unwrap();
        assert!(moe.stacked(groups).is_none());
        assert!(moe.stacked(&[groups[0].clone(), groups[2].clone()]).is_some());
        // the per-expert fallback still rolls out
        let (ctx, x0, r) = case.problem::<TestBackend>(tensor2(&WEIGHTS, [5, 1], &device), &device);
        assert_eq!(moe.rollout_rows(&Rk4 { substeps: 1 }, &r, ctx, case.rows(x0)).unwrap().dims(), [case.n(), 4, 2]);
    }
}
