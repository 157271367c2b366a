//! Controlled systems `dx/dt = f(x, u; p)` with a reward and a task sequence, stepped on the host
//! in batches: the environments of continual model-based control (HyperCRL, Huang, Xie,
//! Gilitschenski, Shkurti et al., "Continual model-based reinforcement learning with
//! hypernetworks", IROS 2021), declared as data like the zoo's ODEs.
//!
//! An action is clipped to its bounds and held over one control interval `dt`, integrated by
//! classical RK4 with `substeps` steps (`mixer_ode`'s host RK4); the step's reward is the
//! `reward` expression at the interval's starting state and clipped action.

use mixer_core::{HostField, Rng};
use mixer_ode::{HostSolver, Rk4};
use rand::Rng as _;

use crate::DataError;
use crate::builtin::CONTROL_BUILTIN;
use crate::control_spec::ControlSpec;
use crate::equations::{Compiled, Names, Point};

/// A validated controlled system with its compiled right-hand sides and reward.
///
/// ```
/// use mixer_data::ControlSystem;
/// # fn main() -> Result<(), mixer_data::DataError> {
/// let pendulum = ControlSystem::builtin("pendulum-swingup")?;
/// let heavy = pendulum.task_params(1)?; // mass 2.0
/// // two rows hanging down, pushed both ways (the second torque is clipped to -2)
/// let step = pendulum.step(&heavy, &[3.1, 0.0, 3.1, 0.0], &[1.0, -5.0])?;
/// assert_eq!((step.next.len(), step.reward.len()), (4, 2));
/// assert!(step.next[1] > 0.0 && step.next[3] < 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ControlSystem {
    spec: ControlSpec,
    rhs: Vec<Compiled>,
    reward: Compiled,
}

/// Next states and rewards of one batched control step.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlStep {
    /// States after one control interval, `[rows, dim]` row-major.
    pub next: Vec<f64>,
    /// Reward of each row's step, `[rows]`.
    pub reward: Vec<f64>,
}

/// Names of the shipped controlled systems.
pub fn control_builtin_names() -> Vec<&'static str> {
    CONTROL_BUILTIN.iter().map(|(n, _)| *n).collect()
}

impl ControlSystem {
    /// Validates `spec` and compiles its right-hand sides and reward.
    pub fn from_spec(spec: ControlSpec) -> Result<Self, DataError> {
        spec.validate()?;
        let params = spec.parameter_names();
        let names = Names { state: &spec.state, action: &spec.action, params: &params, time: false };
        let rhs = spec
            .rhs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Compiled::parse(text, &names).map_err(|reason| DataError::BadExpression {
                    system: spec.name.clone(),
                    index,
                    expr: text.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        let reward = Compiled::parse(&spec.reward, &names).map_err(|reason| {
            DataError::spec(&spec.name, "reward", format!("cannot use `{}`: {reason}", spec.reward))
        })?;
        Ok(Self { spec, rhs, reward })
    }

    /// Parses a controlled-system file's TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DataError> {
        Self::from_spec(ControlSpec::from_toml(text)?)
    }

    /// A shipped controlled system by name ([`control_builtin_names`]).
    pub fn builtin(name: &str) -> Result<Self, DataError> {
        let text = CONTROL_BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| {
            DataError::UnknownSystem { name: name.to_string(), known: control_builtin_names().join(", ") }
        })?;
        Self::from_toml(text)
    }

    /// The definition.
    pub fn spec(&self) -> &ControlSpec {
        &self.spec
    }

    /// The parameter values of task `index` of the sequence, `[params]`.
    pub fn task_params(&self, index: usize) -> Result<Vec<f64>, DataError> {
        self.spec.task_values(index)
    }

    /// `a` clipped to the action bounds (`a: [rows, actions]` row-major, changed in place).
    pub fn clip_actions(&self, a: &mut [f64]) {
        let m = self.spec.num_actions();
        for (i, v) in a.iter_mut().enumerate() {
            let b = self.spec.action_bounds[i % m];
            *v = v.clamp(b.low, b.high);
        }
    }

    /// An episode's initial state, `[dim]`: the spec's state plus its uniform noise.
    pub fn initial_state(&self, rng: &mut Rng) -> Vec<f64> {
        let init = &self.spec.initial;
        let noise = |i: usize| init.noise.get(i).copied().unwrap_or(0.0);
        init.state.iter().enumerate().map(|(i, &x)| x + noise(i) * (2.0 * rng.random::<f64>() - 1.0)).collect()
    }

    /// `f(x, u; p)` of one row into `dx` (`x, dx: [dim]`, `u: [actions]`, `p: [params]`).
    pub fn rhs(&self, x: &[f64], u: &[f64], p: &[f64], dx: &mut [f64]) {
        self.rhs_at(&Point { t: 0.0, x, u, p }, &mut Vec::with_capacity(8), dx);
    }

    fn rhs_at(&self, at: &Point<'_>, buf: &mut Vec<f64>, dx: &mut [f64]) {
        for (out, e) in dx.iter_mut().zip(&self.rhs) {
            *out = e.eval(at, buf);
        }
    }

    /// The reward of one row's step from state `x` with (already clipped) action `u`.
    pub fn reward(&self, x: &[f64], u: &[f64], p: &[f64]) -> f64 {
        self.reward.eval(&Point { t: 0.0, x, u, p }, &mut Vec::with_capacity(8))
    }

    /// One control interval for a batch: `states: [rows, dim]` and `actions: [rows, actions]`
    /// (row-major; actions clipped to their bounds) at parameters `params: [params]`.
    ///
    /// Fails on wrong lengths and when a state turns non-finite.
    pub fn step(&self, params: &[f64], states: &[f64], actions: &[f64]) -> Result<ControlStep, DataError> {
        self.step_with(params, states, actions, self.spec.substeps)
    }

    /// [`ControlSystem::step`] with `substeps` RK4 steps instead of the spec's.
    pub fn step_with(
        &self,
        params: &[f64],
        states: &[f64],
        actions: &[f64],
        substeps: usize,
    ) -> Result<ControlStep, DataError> {
        let rows = self.check_batch(params, states, actions)?;
        let mut u = actions.to_vec();
        self.clip_actions(&mut u);
        let (d, m) = (self.spec.dim(), self.spec.num_actions());
        let reward =
            (0..rows).map(|r| self.reward(&states[r * d..(r + 1) * d], &u[r * m..(r + 1) * m], params)).collect();
        let mut field = HeldAction { system: self, params, actions: &u, rows };
        let path = HostSolver::Rk4(Rk4 { substeps }).integrate(&mut field, states, &[0.0, self.spec.dt])?;
        let next = path.chunks_exact(2 * d).flat_map(|row| row[d..].iter().copied()).collect();
        Ok(ControlStep { next, reward })
    }

    /// The number of rows of a batch, after checking the lengths of its buffers.
    fn check_batch(&self, params: &[f64], states: &[f64], actions: &[f64]) -> Result<usize, DataError> {
        let (d, m, np) = (self.spec.dim(), self.spec.num_actions(), self.spec.parameters.len());
        let shape = |what: &str, expected: String, found: usize| {
            Err(mixer_core::Error::shape(format!("{what} of `{}`", self.spec.name), expected, found).into())
        };
        if params.len() != np {
            return shape("parameters", np.to_string(), params.len());
        }
        if !states.len().is_multiple_of(d) {
            return shape("states", format!("a multiple of {d}"), states.len());
        }
        let rows = states.len() / d;
        if actions.len() != rows * m {
            return shape("actions", format!("{rows} rows x {m}"), actions.len());
        }
        mixer_core::ensure_finite("parameters", params)?;
        Ok(rows)
    }

    /// The total reward of one episode of `spec.episode_steps` steps from a seeded initial state
    /// at parameters `params`, with `policy(state) -> action` (`[dim] -> [actions]`).
    pub fn episode_return(
        &self,
        params: &[f64],
        rng: &mut Rng,
        mut policy: impl FnMut(&[f64]) -> Vec<f64>,
    ) -> Result<f64, DataError> {
        let mut x = self.initial_state(rng);
        let mut total = 0.0;
        for _ in 0..self.spec.episode_steps {
            let u = policy(&x);
            let step = self.step(params, &x, &u)?;
            total += step.reward[0];
            x = step.next;
        }
        Ok(total)
    }
}

/// The controlled field with each row's action held fixed: a [`HostField`] for the RK4 solver.
struct HeldAction<'a> {
    system: &'a ControlSystem,
    params: &'a [f64],
    /// Clipped actions, `[rows, actions]`.
    actions: &'a [f64],
    rows: usize,
}

impl HostField<f64> for HeldAction<'_> {
    fn dim(&self) -> usize {
        self.system.spec.dim()
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn eval(&mut self, _t: f64, x: &[f64], out: &mut [f64]) {
        let (d, m) = (self.system.spec.dim(), self.system.spec.num_actions());
        let mut buf = Vec::with_capacity(8);
        for (r, (xr, or)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let at = Point { t: 0.0, x: xr, u: &self.actions[r * m..(r + 1) * m], p: self.params };
            self.system.rhs_at(&at, &mut buf, or);
        }
    }
}

#[cfg(test)]
mod tests;
