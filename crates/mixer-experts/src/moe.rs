//! The mixture-of-experts layer for neural ODEs: routes environments to experts, integrates only
//! the selected experts on their rows, and scatters the trajectories back.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use tracing::{debug, warn};

use mixer_core::{Error, Expert, Integrator, Routing, VectorField, anchor_module, anchor_tensor};

use crate::{AnyExpert, ExpertConfig, ExpertError};

/// `K` experts of one type; with context splitting (`d_xi = K c`) expert `k` reads slice `k`
/// of an environment's context, otherwise (`d_xi = c`) every expert reads the whole context.
#[derive(Module, Debug)]
pub struct MixtureOfExperts<B: Backend, X> {
    /// The experts.
    pub experts: Vec<X>,
    _backend: core::marker::PhantomData<B>,
}

pub(crate) fn index<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]), device)
}

/// Rows to integrate over one grid: row `r` starts at `x0[r]` at `times[0]` and belongs to
/// environment `env_of_row[r]`.
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
}

impl<'a, B: Backend> Rows<'a, B> {
    /// Rows on their own time grid (rate 1).
    pub fn new(env_of_row: &'a [usize], x0: Tensor<B, 2>, times: &'a [f64]) -> Self {
        Self { env_of_row, x0, times, rate: None }
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

/// One expert's field on a fixed set of rows: `w_r * f(x_r, ctx_r)` (`w` absent means 1).
struct ExpertField<B: Backend, X> {
    /// The expert's rollout view (see [`ExpertField::new`]).
    expert: X,
    /// Per-row context slice `[rows, c]`.
    ctx: Tensor<B, 2>,
    /// Per-row weight `[rows, 1]`.
    weight: Option<Tensor<B, 2>>,
}

impl<B: Backend, X: Module<B>> ExpertField<B, X> {
    /// The field of `expert` over rows with contexts `ctx` and weights `weight`, reading rollout
    /// views of all three ([`mixer_core::anchor`]): same values and gradients, but recording
    /// the rollout stays linear in its length under burn-autodiff 0.21 (forward and backward
    /// of 100 RK4 steps of a width-64 GEPS expert: 0.57 s instead of 6.8 s, docs/benchmarks.md).
    fn new(expert: &X, ctx: Tensor<B, 2>, weight: Option<Tensor<B, 2>>) -> Self {
        Self { expert: anchor_module(expert.clone()), ctx: anchor_tensor(ctx), weight: weight.map(anchor_tensor) }
    }
}

impl<B: Backend, X: Expert<B>> VectorField<B> for ExpertField<B, X> {
    fn dim(&self) -> usize {
        self.expert.state_dim()
    }

    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.expert.forward(x, self.ctx.clone());
        match &self.weight {
            Some(w) => y * w.clone(),
            None => y,
        }
    }
}

/// The weighted sum `sum_k w_rk f_k(x_r, ctx_rk)` over the experts taking part.
struct MixtureField<B: Backend, X> {
    parts: Vec<ExpertField<B, X>>,
}

impl<B: Backend, X: Expert<B>> VectorField<B> for MixtureField<B, X> {
    fn dim(&self) -> usize {
        self.parts.first().map_or(0, |p| p.dim())
    }

    fn eval(&self, t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut parts = self.parts.iter();
        let first = parts.next().map(|p| p.eval(t, x.clone()));
        parts.fold(first.unwrap_or_else(|| x.zeros_like()), |acc, p| acc + p.eval(t, x.clone()))
    }
}

impl<B: Backend> MixtureOfExperts<B, AnyExpert<B>> {
    /// `k` identical experts (same initial weights, MIXER.md §1) for states of size `dim`
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
        Self { experts, _backend: core::marker::PhantomData }
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
    /// (differentiable) gate weight; top-k, dense and shared-expert routings integrate
    /// `sum_slots w[env, slot] f_expert(x, ctx slice)`. Dropped environments stay at `x0`.
    pub fn rollout(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        env_of_row: &[usize],
        x0: Tensor<B, 2>,
        times: &[f64],
    ) -> Result<Tensor<B, 3>, ExpertError> {
        self.rollout_rows(integrator, routing, contexts, Rows::new(env_of_row, x0, times))
    }

    /// [`MixtureOfExperts::rollout`] of a [`Rows`] bundle, honouring its time rates.
    pub fn rollout_rows(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: Rows<'_, B>,
    ) -> Result<Tensor<B, 3>, ExpertError> {
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
        let device = rows.x0.device();
        if n == 0 {
            return Ok(Tensor::zeros([0, rows.times.len(), self.experts[0].state_dim()], &device));
        }
        if k == 1 && routing.shared.is_empty() {
            return self.rollout_top1(integrator, routing, contexts, rows);
        }
        let rates = rows.row_rates(&device);
        let env_idx = index::<B>(rows.env_of_row, &device);
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
            parts.push(ExpertField::new(
                &self.experts[e],
                self.context_slice(contexts.clone(), e)?.select(0, env_idx.clone()),
                Some(rated(w_env.select(0, env_idx.clone()), rates.clone())),
            ));
        }
        for &(e, w) in &routing.shared {
            if e >= self.num_experts() {
                return Err(Error::shape("shared expert index (below K)", self.num_experts(), e).into());
            }
            parts.push(ExpertField::new(
                &self.experts[e],
                self.context_slice(contexts.clone(), e)?.select(0, env_idx.clone()),
                Some(rated(Tensor::full([n, 1], w, &device), rates.clone())),
            ));
        }
        if parts.is_empty() {
            return Ok(rows.x0.unsqueeze_dim::<3>(1).repeat_dim(1, rows.times.len()));
        }
        debug!(rows = n, experts = parts.len(), "dense mixture rollout");
        let field = MixtureField { parts };
        integrator.integrate(&field, rows.x0, rows.times).map_err(|e| rollout_error(e, None, rows.env_of_row))
    }

    fn rollout_top1(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        rows: Rows<'_, B>,
    ) -> Result<Tensor<B, 3>, ExpertError> {
        let device = rows.x0.device();
        let (env_of_row, n) = (rows.env_of_row, rows.env_of_row.len());
        let rates = rows.row_rates(&device);
        let top1 = routing.top1();
        let mut outputs = Vec::new();
        let mut order = Vec::with_capacity(n);
        for k in 0..self.num_experts() {
            let rows_k: Vec<usize> = (0..n).filter(|&r| top1[env_of_row[r]] == Some(k)).collect();
            if rows_k.is_empty() {
                continue;
            }
            let envs_k: Vec<usize> = rows_k.iter().map(|&r| env_of_row[r]).collect();
            let env_idx = index::<B>(&envs_k, &device);
            let row_idx = index::<B>(&rows_k, &device);
            let field = ExpertField::new(
                &self.experts[k],
                self.context_slice(contexts.clone(), k)?.select(0, env_idx.clone()),
                Some(rated(
                    routing.weights.clone().select(0, env_idx),
                    rates.clone().map(|r| r.select(0, row_idx.clone())),
                )),
            );
            debug!(expert = k, rows = rows_k.len(), "top-1 expert rollout");
            let y = integrator
                .integrate(&field, rows.x0.clone().select(0, row_idx), rows.times)
                .map_err(|e| rollout_error(e, Some(k), &envs_k))?;
            outputs.push(y);
            order.extend(rows_k);
        }
        let dropped: Vec<usize> = (0..n).filter(|&r| top1[env_of_row[r]].is_none()).collect();
        if !dropped.is_empty() {
            let held = rows.x0.select(0, index::<B>(&dropped, &device)).unsqueeze_dim::<3>(1);
            outputs.push(held.repeat_dim(1, rows.times.len()));
            order.extend(dropped);
        }
        let all = Tensor::cat(outputs, 0);
        let mut inverse = vec![0; n];
        for (pos, &r) in order.iter().enumerate() {
            inverse[r] = pos;
        }
        Ok(all.select(0, index::<B>(&inverse, &device)))
    }

    /// Loss of every expert on every environment, no routing: each expert is integrated on all
    /// rows with its context slice, and the MSE over (times, dims) is averaged over each
    /// environment's rows. `target: [rows, T, d]`; returns `[envs, K]`, NaN for environments
    /// without rows and +inf where an expert's rollout fails (logged). Run it on an inference
    /// backend: MixER's gate refit takes no gradient.
    pub fn expert_losses(
        &self,
        integrator: &dyn Integrator<B>,
        contexts: Tensor<B, 2>,
        env_of_row: &[usize],
        x0: Tensor<B, 2>,
        times: &[f64],
        target: Tensor<B, 3>,
    ) -> Result<Tensor<B, 2>, ExpertError> {
        let (envs, rows) = self.check(&contexts, &Rows::new(env_of_row, x0.clone(), times))?;
        let [_, d] = x0.dims();
        if target.dims() != [rows, times.len(), d] {
            return Err(Error::shape("target trajectories", [rows, times.len(), d], target.dims()).into());
        }
        let device = x0.device();
        let mut counts = vec![0usize; envs];
        for &e in env_of_row {
            counts[e] += 1;
        }
        let mut averaging = vec![0.0; envs * rows];
        for (r, &e) in env_of_row.iter().enumerate() {
            averaging[e * rows + r] = 1.0 / counts[e] as f64;
        }
        let averaging = Tensor::<B, 2>::from_data(TensorData::new(averaging, [envs, rows]), &device);
        let missing: Vec<f64> = counts.iter().map(|&c| if c == 0 { f64::NAN } else { 0.0 }).collect();
        let missing = Tensor::<B, 2>::from_data(TensorData::new(missing, [envs, 1]), &device);
        let env_idx = index::<B>(env_of_row, &device);
        let mut columns = Vec::with_capacity(self.num_experts());
        for (k, expert) in self.experts.iter().enumerate() {
            let field =
                ExpertField::new(expert, self.context_slice(contexts.clone(), k)?.select(0, env_idx.clone()), None);
            let column = match integrator.integrate(&field, x0.clone(), times) {
                Ok(pred) => {
                    let row_mse: Tensor<B, 2> = (pred - target.clone()).square().reshape([rows as i32, -1]).mean_dim(1);
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
