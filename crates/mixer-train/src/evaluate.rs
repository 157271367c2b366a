//! Evaluation: roll out every trajectory of a split from its initial state and score it.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::{Array4, ArrayView2, ArrayView3, s};
use serde::{Deserialize, Serialize};

use mixer_core::{Dataset, Integrator, Mode, Seeds};

use crate::TrainError;
use crate::batch::{Batch, Window};
use crate::dsr_metrics::{Occupation, hellinger_spectrum, mase, state_space_divergence};
use crate::metrics::{Summary, mape, mse, rel_l2, rel_l2_env};
use crate::model::{Theta, route};

/// Scores of one split, each a mean ± std and median over environments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean squared error.
    pub mse: Summary,
    /// ODEBench relative L2 (pointwise: explodes where the truth nears zero).
    pub rel_l2: Summary,
    /// Environment relative L2 `||Y^ - Y||_F / ||Y||_F` ([`crate::metrics::rel_l2_env`]); absent
    /// from reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_l2_env: Option<Summary>,
    /// Mean absolute percentage error (entries with |y| > 1e-3).
    pub mape: Summary,
    /// Long-term reconstruction metrics, each the mean over an environment's trajectories; absent
    /// from reports written before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_term: Option<LongTerm>,
    /// Expert chosen for each environment.
    pub assignment: Vec<usize>,
}

/// Long-term metrics of dynamical-system reconstruction ([`crate::dsr_metrics`]) per environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LongTerm {
    /// State-space divergence `D_stsp` of the environment's trajectories pooled
    /// ([`Occupation::for_data`]).
    pub dstsp: Summary,
    /// Hellinger distance of power spectra `D_H` (smoothing 1 frequency bin).
    pub hellinger: Summary,
    /// Mean absolute scaled error.
    pub mase: Summary,
}

/// Predicted trajectories `[envs, trajs, steps, dim]` of every trajectory of `data`, rolled out from
/// its initial state with contexts `[envs, d_xi]`.
pub fn predict<B: Backend>(
    theta: &Theta<B>,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
) -> Result<(Array4<f64>, Vec<usize>), TrainError> {
    let device = contexts.device();
    let mut rng = Seeds::new(0).stream("evaluate");
    let routing = route(theta, contexts.clone(), Mode::Eval, &mut rng)?;
    let assignment = routing.top1().into_iter().map(|e| e.unwrap_or(0)).collect();
    let envs: Vec<usize> = (0..data.num_envs()).collect();
    let batch = Batch::<B>::new(data, &envs, Window::full(data.num_steps()), None, &device);
    let mut out = Array4::<f64>::zeros(data.x.dim());
    let (trajs, steps, dim) = (data.num_trajs(), data.num_steps(), data.dim());
    for g in &batch.groups {
        let pred = theta
            .moe
            .rollout_rows(integrator, &routing, contexts.clone(), batch.rows(g))
            .map_err(|e| TrainError::Rollout { envs: dedup(&g.env_of_row), source: Box::new(e.into()) })?;
        let values = mixer_core::host::to_vec(pred);
        for (r, &env) in g.env_of_row.iter().enumerate() {
            let traj = r % trajs;
            let block = &values[r * steps * dim..(r + 1) * steps * dim];
            let view = ndarray::ArrayView2::from_shape((steps, dim), block).expect("row block has steps x dim values");
            out.slice_mut(s![env, traj, .., ..]).assign(&view);
        }
    }
    Ok((out, assignment))
}

/// Scores predictions against a dataset's trajectories, per environment.
pub fn score(pred: &Array4<f64>, data: &Dataset, assignment: Vec<usize>) -> EvalReport {
    let per = |f: fn(ArrayView3<f64>, ArrayView3<f64>) -> f64| {
        Summary::new((0..data.num_envs()).map(|e| f(pred.slice(s![e, .., .., ..]), data.env(e))).collect())
    };
    let long_term = LongTerm { dstsp: per(dstsp_env), hellinger: per(hellinger_env), mase: per(mase_env) };
    EvalReport {
        mse: per(mse),
        rel_l2: per(rel_l2),
        rel_l2_env: Some(per(rel_l2_env)),
        mape: per(mape),
        long_term: Some(long_term),
        assignment,
    }
}

/// `f` of each trajectory of an environment (`[trajs, steps, dim]`), averaged.
fn per_trajectory(
    pred: ArrayView3<f64>,
    truth: ArrayView3<f64>,
    f: impl Fn(ArrayView2<f64>, ArrayView2<f64>) -> f64,
) -> f64 {
    let n = truth.shape()[0].max(1) as f64;
    pred.outer_iter().zip(truth.outer_iter()).map(|(p, t)| f(p, t)).sum::<f64>() / n
}

/// `D_stsp` of an environment: the occupation of all its trajectories pooled.
fn dstsp_env(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    let (trajs, steps, dim) = truth.dim();
    let pool = |x: ArrayView3<f64>| x.to_shape((trajs * steps, dim)).expect("a contiguous pool").into_owned();
    let how = Occupation::for_data(dim, trajs * steps);
    state_space_divergence(pool(pred).view(), pool(truth).view(), how)
}

fn hellinger_env(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    per_trajectory(pred, truth, |p, t| hellinger_spectrum(p, t, 1.0))
}

fn mase_env(pred: ArrayView3<f64>, truth: ArrayView3<f64>) -> f64 {
    per_trajectory(pred, truth, mase)
}

/// Predicts and scores a split.
pub fn evaluate<B: Backend>(
    theta: &Theta<B>,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
) -> Result<(EvalReport, Array4<f64>), TrainError> {
    let (pred, assignment) = predict(theta, integrator, contexts, data)?;
    Ok((score(&pred, data, assignment), pred))
}

fn dedup(envs: &[usize]) -> Vec<usize> {
    let mut v = envs.to_vec();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use mixer_core::TimeGrid;

    use super::*;

    #[test]
    fn perfect_predictions_score_zero_on_every_metric() {
        let x = Array4::from_shape_fn((3, 2, 32, 2), |(e, n, k, d)| {
            let phase = 0.3 * k as f64 * (1.0 + e as f64) + n as f64;
            if d == 0 { phase.sin() } else { phase.cos() }
        });
        let data = Dataset::new(x.clone(), TimeGrid::Shared((0..32).map(f64::from).collect()), None).unwrap();
        let r = score(&x, &data, vec![0; 3]);
        let lt = r.long_term.expect("long-term metrics are scored");
        assert_eq!((r.mse.mean, lt.dstsp.mean, lt.mase.mean), (0.0, 0.0, 0.0));
        assert!(lt.hellinger.mean.abs() < 1e-7, "{}", lt.hellinger.mean);
        let shifted = x.mapv(|v| v + 0.5);
        let lt = score(&shifted, &data, vec![0; 3]).long_term.unwrap();
        assert!(lt.dstsp.mean > 0.1 && lt.mase.mean > 0.1 && lt.hellinger.mean < 1e-7, "{lt:?}");
    }

    #[test]
    fn reports_written_before_the_env_metric_and_medians_still_parse() {
        let old = r#"{
            "mse": {"mean": 2.0, "std": 1.0, "per_env": [1.0, 3.0]},
            "rel_l2": {"mean": 5.0, "std": 4.0, "per_env": [1.0, 9.0]},
            "mape": {"mean": 0.5, "std": 0.0, "per_env": [0.5, 0.5]},
            "assignment": [0, 1]
        }"#;
        let r: EvalReport = serde_json::from_str(old).unwrap();
        assert_eq!((r.mse.median, r.rel_l2.median, r.rel_l2_env.as_ref()), (2.0, 5.0, None));
        assert!(r.long_term.is_none());
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("rel_l2_env"), "{json}");
        let mut new = r.clone();
        new.rel_l2_env = Some(Summary::new(vec![0.1, 0.3]));
        let back: EvalReport = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
