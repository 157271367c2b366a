//! Evaluation: roll out every trajectory of a split from its initial state and score it.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::{Array4, s};
use serde::{Deserialize, Serialize};

use mixer_core::{Dataset, Integrator, Mode, Seeds};

use crate::TrainError;
use crate::batch::{Batch, Window};
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
    /// Expert chosen for each environment.
    pub assignment: Vec<usize>,
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
    let per = |f: fn(ndarray::ArrayView3<f64>, ndarray::ArrayView3<f64>) -> f64| {
        Summary::new((0..data.num_envs()).map(|e| f(pred.slice(s![e, .., .., ..]), data.env(e))).collect())
    };
    EvalReport { mse: per(mse), rel_l2: per(rel_l2), rel_l2_env: Some(per(rel_l2_env)), mape: per(mape), assignment }
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
    use super::*;

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
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("rel_l2_env"), "{json}");
        let mut new = r.clone();
        new.rel_l2_env = Some(Summary::new(vec![0.1, 0.3]));
        let back: EvalReport = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
