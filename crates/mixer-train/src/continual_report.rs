//! The scores of a continual run (HyperCRL, Huang et al., ICRA 2021): the reward and held-out
//! prediction matrices (after task `i`, on task `j <= i`) and the forgetting read from them.

use serde::{Deserialize, Serialize};

use crate::ContinualMethod;

/// The scores of a continual run: row `i` of each matrix is measured after learning task `i`,
/// column `j <= i` on task `j`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinualReport {
    /// The method.
    pub method: ContinualMethod,
    /// Task names, in order.
    pub tasks: Vec<String>,
    /// Mean planned episode return (empty rows without evaluation episodes).
    pub reward: Vec<Vec<f64>>,
    /// One-step prediction MSE on held-out transitions.
    pub mse: Vec<Vec<f64>>,
    /// Trainable parameters after each task.
    pub parameters: Vec<usize>,
    /// Returns of the episodes collected by planning while learning each task.
    pub planned_returns: Vec<Vec<f64>>,
    /// Training MSE (normalised units) of the last step of each task.
    pub train_mse: Vec<f64>,
    /// Seconds spent on each task (training, collection and evaluation).
    pub seconds: Vec<f64>,
}

/// Per column `j`, the best value of `matrix[i][j]` over rows `i` minus the last row's, where
/// `sign` is +1 when higher is better (rewards) and -1 when lower is (errors).
fn best_minus_final(matrix: &[Vec<f64>], sign: f64) -> Vec<f64> {
    let Some(last) = matrix.last() else { return Vec::new() };
    (0..last.len())
        .map(|j| {
            let best = matrix.iter().filter_map(|row| row.get(j)).map(|v| sign * v).fold(f64::NEG_INFINITY, f64::max);
            best - sign * last[j]
        })
        .collect()
}

/// The mean of `v`, `None` when empty.
fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl ContinualReport {
    /// Rewards on every task after the last one, `[tasks]`.
    pub fn final_rewards(&self) -> Vec<f64> {
        self.reward.last().cloned().unwrap_or_default()
    }

    /// Mean of [`ContinualReport::final_rewards`].
    pub fn average_final_reward(&self) -> Option<f64> {
        mean(&self.final_rewards())
    }

    /// Per task, its best reward over the run minus its final reward (0 for the last task).
    pub fn forgetting(&self) -> Vec<f64> {
        best_minus_final(&self.reward, 1.0)
    }

    /// Mean forgetting over all tasks but the last.
    pub fn average_forgetting(&self) -> Option<f64> {
        let f = self.forgetting();
        mean(&f[..f.len().saturating_sub(1)])
    }

    /// Per task, its final held-out MSE minus its best one (the growth of prediction error).
    pub fn mse_forgetting(&self) -> Vec<f64> {
        best_minus_final(&self.mse, -1.0)
    }
}
