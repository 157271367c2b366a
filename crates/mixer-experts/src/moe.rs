//! The mixture-of-experts layer for neural ODEs: routes environments to experts, integrates only
//! the selected experts on their rows, and scatters the trajectories back.

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use mixer_core::{Expert, Integrator, Routing, VectorField};

use crate::{ExpertConfig, ExpertError};

/// `K` experts of one type; expert `k` reads slice `k` of an environment's context
/// (`d_xi = K * c`, context splitting).
#[derive(Module, Debug)]
pub struct MixtureOfExperts<B: Backend, X> {
    /// The experts.
    pub experts: Vec<X>,
    _backend: core::marker::PhantomData<B>,
}

fn index<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]), device)
}

/// One expert's field on a fixed set of rows: `w_r * f(x_r, ctx_r)`.
struct ExpertField<'a, B: Backend, X> {
    expert: &'a X,
    ctx: Tensor<B, 2>,
    weight: Tensor<B, 2>,
}

impl<B: Backend, X: Expert<B>> VectorField<B> for ExpertField<'_, B, X> {
    fn dim(&self) -> usize {
        self.expert.state_dim()
    }

    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.expert.forward(x, self.ctx.clone()) * self.weight.clone()
    }
}

/// The dense field `sum_k w_rk f_k(x_r, ctx_rk)` over every expert with non-zero weight.
struct MixtureField<'a, B: Backend, X> {
    parts: Vec<ExpertField<'a, B, X>>,
}

impl<B: Backend, X: Expert<B>> VectorField<B> for MixtureField<'_, B, X> {
    fn dim(&self) -> usize {
        self.parts[0].dim()
    }

    fn eval(&self, t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.parts.iter().map(|p| p.eval(t, x.clone())).reduce(|a, b| a + b).expect("at least one expert")
    }
}

impl<B: Backend> MixtureOfExperts<B, crate::AnyExpert<B>> {
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
            return Err(mixer_core::Error::config("experts", "at least one expert").into());
        }
        let first = config.init::<B>(dim, context, device)?;
        Ok(Self::new(vec![first; k]))
    }
}

impl<B: Backend, X: Expert<B> + Module<B>> MixtureOfExperts<B, X> {
    /// A mixture of the given experts.
    pub fn new(experts: Vec<X>) -> Self {
        Self { experts, _backend: core::marker::PhantomData }
    }

    /// Number of experts `K`.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Context slice of expert `k` for the given rows: `[rows, c]` from `contexts: [envs, K c]`.
    fn slice(&self, contexts: &Tensor<B, 2>, rows_env: &Tensor<B, 1, Int>, k: usize) -> Tensor<B, 2> {
        let c = self.experts[k].context_dim();
        let [_, d_xi] = contexts.dims();
        let cols = if d_xi == c { 0..c } else { k * c..(k + 1) * c };
        contexts.clone().slice([0..contexts.dims()[0], cols]).select(0, rows_env.clone())
    }

    /// Trajectories `[rows, T, d]` of rows starting at `x0: [rows, d]` at `times[0]`, row `r`
    /// belonging to environment `env_of_row[r]` with context `contexts[env]` (`[envs, d_xi]`),
    /// routed by `routing` (one unit per environment). Top-1 routings integrate each expert
    /// only on its rows; top-k and dense routings integrate the weighted sum of experts.
    pub fn rollout(
        &self,
        integrator: &dyn Integrator<B>,
        routing: &Routing<B>,
        contexts: Tensor<B, 2>,
        env_of_row: &[usize],
        x0: Tensor<B, 2>,
        times: &[f64],
    ) -> Result<Tensor<B, 3>, ExpertError> {
        let device = x0.device();
        let [rows, dim] = x0.dims();
        if env_of_row.len() != rows {
            return Err(mixer_core::Error::shape("env_of_row", rows, env_of_row.len()).into());
        }
        if routing.k == 1 {
            let top1 = routing.top1();
            let mut outputs = Vec::new();
            let mut order = Vec::with_capacity(rows);
            for k in 0..self.num_experts() {
                let rows_k: Vec<usize> = (0..rows).filter(|&r| top1[env_of_row[r]] == Some(k)).collect();
                if rows_k.is_empty() {
                    continue;
                }
                let envs: Vec<usize> = rows_k.iter().map(|&r| env_of_row[r]).collect();
                let env_idx = index::<B>(&envs, &device);
                let field = ExpertField {
                    expert: &self.experts[k],
                    ctx: self.slice(&contexts, &env_idx, k),
                    weight: routing.weights.clone().select(0, env_idx),
                };
                let y = integrator
                    .integrate(&field, x0.clone().select(0, index::<B>(&rows_k, &device)), times)
                    .map_err(|e| rollout_error(e, k, &envs))?;
                outputs.push(y);
                order.extend(rows_k);
            }
            let dropped: Vec<usize> = (0..rows).filter(|&r| top1[env_of_row[r]].is_none()).collect();
            if !dropped.is_empty() {
                let held = x0.clone().select(0, index::<B>(&dropped, &device)).unsqueeze_dim::<3>(1);
                outputs.push(held.repeat_dim(1, times.len()));
                order.extend(dropped);
            }
            let all = Tensor::cat(outputs, 0);
            let mut inverse = vec![0; rows];
            for (pos, &r) in order.iter().enumerate() {
                inverse[r] = pos;
            }
            return Ok(all.select(0, index::<B>(&inverse, &device)));
        }
        let env_idx = index::<B>(env_of_row, &device);
        let mut parts = Vec::new();
        for (k, group) in routing.groups(self.num_experts()).into_iter().enumerate() {
            if group.units.is_empty() {
                continue;
            }
            // weight of expert k for each environment (0 where it is not among the choices)
            let envs = routing.num_units();
            let mut mask = vec![0.0; envs * routing.k];
            for (u, s) in group.units.iter().zip(&group.slots) {
                mask[u * routing.k + s] = 1.0;
            }
            let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [envs, routing.k]), &device);
            let w_env: Tensor<B, 2> = (routing.weights.clone() * mask).sum_dim(1);
            parts.push(ExpertField {
                expert: &self.experts[k],
                ctx: self.slice(&contexts, &env_idx, k),
                weight: w_env.select(0, env_idx.clone()),
            });
        }
        if parts.is_empty() {
            return Ok(x0.unsqueeze_dim::<3>(1).repeat_dim(1, times.len()));
        }
        let field = MixtureField { parts };
        let envs = {
            let mut e = env_of_row.to_vec();
            e.sort_unstable();
            e.dedup();
            e
        };
        integrator.integrate(&field, x0, times).map_err(|e| rollout_error(e, usize::MAX, &envs)).map(|y| {
            debug_assert_eq!(y.dims()[2], dim);
            y
        })
    }
}

fn rollout_error(source: mixer_core::Error, expert: usize, envs: &[usize]) -> ExpertError {
    let mut envs = envs.to_vec();
    envs.dedup();
    ExpertError::Rollout { expert: (expert != usize::MAX).then_some(expert), envs, source }
}
