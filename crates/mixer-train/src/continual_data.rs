//! The experience of continual model-based control (HyperCRL, Huang, Xie, Gilitschenski, Shkurti
//! et al., "Continual Model-Based Reinforcement Learning with Hypernetworks", ICRA 2021): the
//! task sequence, a fixed-capacity FIFO buffer of transitions per task, and episodes on the true
//! system with any policy.

use burn::tensor::{Tensor, backend::Backend};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use mixer_core::host::tensor2;
use mixer_core::{Error, Rng};
use mixer_data::ControlSystem;
use mixer_hyper::DeltaNormaliser;

use crate::TrainError;

/// One task of a continual sequence: a controlled system at one parameter setting.
#[derive(Clone, Debug)]
pub struct ContinualTask {
    /// Task name (reports).
    pub name: String,
    /// The true system.
    pub system: ControlSystem,
    /// Its parameters, `[params]`.
    pub params: Vec<f64>,
}

impl ContinualTask {
    /// State dimension `d`.
    pub fn dim(&self) -> usize {
        self.system.spec().dim()
    }

    /// Action dimension `m`.
    pub fn actions(&self) -> usize {
        self.system.spec().num_actions()
    }
}

/// The first `count` tasks of `system`'s task sequence.
pub fn system_tasks(system: &ControlSystem, count: usize) -> Result<Vec<ContinualTask>, TrainError> {
    let spec = system.spec();
    if count == 0 || count > spec.tasks.len() {
        let reason = format!("must be in 1..={} (the tasks of `{}`), got {count}", spec.tasks.len(), spec.name);
        return Err(Error::config("tasks", reason).into());
    }
    (0..count)
        .map(|t| {
            Ok(ContinualTask {
                name: spec.tasks[t].name.clone(),
                system: system.clone(),
                params: system.task_params(t)?,
            })
        })
        .collect()
}

/// Checks that a task sequence is not empty and that every task has the first one's state and
/// action sizes; returns `(d, m)`.
pub fn check_sequence(tasks: &[ContinualTask]) -> Result<(usize, usize), TrainError> {
    let first = tasks.first().ok_or_else(|| Error::config("tasks", "need at least one task"))?;
    let (d, m) = (first.dim(), first.actions());
    for t in tasks {
        if (t.dim(), t.actions()) != (d, m) {
            return Err(Error::shape(
                format!("task `{}` (state, action) sizes; every task needs the first task's", t.name),
                [d, m],
                [t.dim(), t.actions()],
            )
            .into());
        }
    }
    Ok((d, m))
}

/// Transitions `(state, action, next state)` of one task, first in first out once full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionBuffer {
    /// State dimension `d`.
    pub dim: usize,
    /// Action dimension `m`.
    pub actions: usize,
    /// Most transitions kept.
    pub capacity: usize,
    /// States `[n, d]` row-major, oldest first.
    pub states: Vec<f64>,
    /// Actions `[n, m]`.
    pub taken: Vec<f64>,
    /// Next states `[n, d]`.
    pub next: Vec<f64>,
}

impl TransitionBuffer {
    /// An empty buffer; `capacity` must be at least 1.
    pub fn new(dim: usize, actions: usize, capacity: usize) -> Result<Self, TrainError> {
        if capacity == 0 {
            return Err(Error::config("capacity", "a buffer must hold at least one transition").into());
        }
        Ok(Self { dim, actions, capacity, states: Vec::new(), taken: Vec::new(), next: Vec::new() })
    }

    /// Transitions held.
    pub fn len(&self) -> usize {
        self.states.len() / self.dim.max(1)
    }

    /// Whether no transition is held.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Appends rows `states: [k, d]`, `actions: [k, m]`, `next: [k, d]`, dropping the oldest
    /// beyond the capacity.
    pub fn extend(&mut self, states: &[f64], actions: &[f64], next: &[f64]) {
        self.states.extend_from_slice(states);
        self.taken.extend_from_slice(actions);
        self.next.extend_from_slice(next);
        let over = self.len().saturating_sub(self.capacity);
        if over > 0 {
            self.states.drain(..over * self.dim);
            self.taken.drain(..over * self.actions);
            self.next.drain(..over * self.dim);
        }
    }

    /// Model inputs `(state, action)` `[n, d + m]` and state changes `[n, d]` of rows `rows`.
    pub fn rows(&self, rows: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let (d, m) = (self.dim, self.actions);
        let mut inputs = Vec::with_capacity(rows.len() * (d + m));
        let mut deltas = Vec::with_capacity(rows.len() * d);
        for &r in rows {
            inputs.extend_from_slice(&self.states[r * d..(r + 1) * d]);
            inputs.extend_from_slice(&self.taken[r * m..(r + 1) * m]);
            let (x, y) = (&self.states[r * d..(r + 1) * d], &self.next[r * d..(r + 1) * d]);
            deltas.extend(y.iter().zip(x).map(|(a, b)| a - b));
        }
        (inputs, deltas)
    }

    /// Every row's inputs and state changes.
    pub fn all_rows(&self) -> (Vec<f64>, Vec<f64>) {
        self.rows(&(0..self.len()).collect::<Vec<_>>())
    }

    /// The normaliser of every row's inputs and state changes (at least one row needed).
    pub fn normaliser(&self) -> Result<DeltaNormaliser, TrainError> {
        let (inputs, deltas) = self.all_rows();
        Ok(DeltaNormaliser::fit(&inputs, self.dim + self.actions, &deltas, self.dim)?)
    }

    /// `batch` rows drawn uniformly with replacement, as tensors `([k, d + m], [k, d])`.
    pub fn sample<B: Backend>(&self, batch: usize, rng: &mut Rng, device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let rows: Vec<usize> = (0..batch).map(|_| rng.random_range(0..self.len())).collect();
        self.tensors(&rows, device)
    }

    /// Rows `rows` as tensors `([k, d + m], [k, d])`.
    pub fn tensors<B: Backend>(&self, rows: &[usize], device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (inputs, deltas) = self.rows(rows);
        let k = rows.len();
        (tensor2(&inputs, [k, self.dim + self.actions], device), tensor2(&deltas, [k, self.dim], device))
    }

    /// A buffer of `count` distinct rows drawn at random (all of them when fewer are held).
    pub fn subset(&self, count: usize, rng: &mut Rng) -> Self {
        let mut rows: Vec<usize> = (0..self.len()).collect();
        rand::seq::SliceRandom::shuffle(rows.as_mut_slice(), rng);
        rows.truncate(count);
        rows.sort_unstable();
        let mut out = Self { capacity: count.max(1), states: Vec::new(), taken: Vec::new(), next: Vec::new(), ..*self };
        let (d, m) = (self.dim, self.actions);
        for r in rows {
            out.extend(
                &self.states[r * d..(r + 1) * d],
                &self.taken[r * m..(r + 1) * m],
                &self.next[r * d..(r + 1) * d],
            );
        }
        out
    }
}

/// One episode of `steps` control steps on the true system of `task` from a seeded initial state,
/// with `policy(state) -> action`; its transitions go into `buffer`. Returns the summed reward.
pub fn run_episode(
    task: &ContinualTask,
    steps: usize,
    rng: &mut Rng,
    buffer: &mut TransitionBuffer,
    mut policy: impl FnMut(&[f64], &mut Rng) -> Result<Vec<f64>, TrainError>,
) -> Result<f64, TrainError> {
    let mut x = task.system.initial_state(rng);
    let mut total = 0.0;
    for _ in 0..steps {
        let mut u = policy(&x, rng)?;
        task.system.clip_actions(&mut u);
        let step = task.system.step(&task.params, &x, &u)?;
        total += step.reward[0];
        buffer.extend(&x, &u, &step.next);
        x = step.next;
    }
    Ok(total)
}

/// A policy drawing each action uniformly within its bounds.
pub fn random_action(task: &ContinualTask) -> impl FnMut(&[f64], &mut Rng) -> Result<Vec<f64>, TrainError> + '_ {
    move |_, rng| Ok(task.system.spec().action_bounds.iter().map(|b| rng.random_range(b.low..b.high)).collect())
}

/// A buffer of random-action transitions of `task`: episodes of `steps` until `count` are held.
pub fn random_transitions(
    task: &ContinualTask,
    count: usize,
    steps: usize,
    rng: &mut Rng,
) -> Result<TransitionBuffer, TrainError> {
    let mut buffer = TransitionBuffer::new(task.dim(), task.actions(), count)?;
    while buffer.len() < count {
        let left = count - buffer.len();
        run_episode(task, steps.min(left), rng, &mut buffer, random_action(task))?;
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::Seeds;

    #[test]
    fn the_buffer_is_first_in_first_out() {
        let mut b = TransitionBuffer::new(1, 1, 3).unwrap();
        b.extend(&[1.0, 2.0], &[0.1, 0.2], &[1.5, 2.5]);
        b.extend(&[3.0, 4.0], &[0.3, 0.4], &[3.5, 4.0]);
        assert_eq!((b.len(), b.states.clone()), (3, vec![2.0, 3.0, 4.0]));
        let (inputs, deltas) = b.rows(&[0, 2]);
        assert_eq!(inputs, vec![2.0, 0.2, 4.0, 0.4]);
        assert_eq!(deltas, vec![0.5, 0.0]);
        let sub = b.subset(2, &mut Seeds::new(1).stream("s"));
        assert_eq!(sub.len(), 2);
        assert!(TransitionBuffer::new(1, 1, 0).is_err());
    }

    #[test]
    fn sequences_need_matching_sizes() {
        let pendulum = ControlSystem::builtin("pendulum-swingup").unwrap();
        let cartpole = ControlSystem::builtin("cartpole-swingup").unwrap();
        let mut tasks = system_tasks(&pendulum, 2).unwrap();
        assert_eq!(check_sequence(&tasks).unwrap(), (2, 1));
        tasks.extend(system_tasks(&cartpole, 1).unwrap());
        let err = check_sequence(&tasks).unwrap_err().to_string();
        assert!(err.contains("[2, 1]") && err.contains("[4, 1]"), "{err}");
        assert!(check_sequence(&[]).is_err());
        assert!(system_tasks(&pendulum, 0).is_err());
        assert!(system_tasks(&pendulum, 7).is_err());
    }

    #[test]
    fn random_transitions_follow_the_true_system() {
        let pendulum = ControlSystem::builtin("pendulum-swingup").unwrap();
        let task = &system_tasks(&pendulum, 1).unwrap()[0];
        let b = random_transitions(task, 25, 10, &mut Seeds::new(2).stream("r")).unwrap();
        assert_eq!(b.len(), 25);
        let step = pendulum.step(&task.params, &b.states[..2], &b.taken[..1]).unwrap();
        assert_eq!(step.next, b.next[..2].to_vec());
        assert!(b.taken.iter().all(|u| (-2.0..=2.0).contains(u)));
    }
}
