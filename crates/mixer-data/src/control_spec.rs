//! Controlled systems as data: the TOML schema of a controlled ODE `dx/dt = f(x, u; p)` with a
//! reward, action bounds, an initial state and a task sequence (HyperCRL, Huang et al., IROS 2021).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::spec::{Parameter, is_identifier};

/// One controlled system: dynamics, reward, action bounds, episodes and the task sequence.
///
/// A file is TOML; see `crates/mixer-data/systems/control/*.toml` for the shipped ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSpec {
    /// Unique name (`pendulum-swingup`, ...).
    pub name: String,
    /// One line saying what the system is.
    #[serde(default)]
    pub description: String,
    /// State variable names, in order; `[dim]`.
    pub state: Vec<String>,
    /// Action (control input) names, in order; `[actions]`.
    pub action: Vec<String>,
    /// Parameters with their reference values, in order.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Right-hand side of each state variable (exmex syntax; state, action and parameter names).
    pub rhs: Vec<String>,
    /// Reward of one control step at its starting state and (clipped) action (exmex syntax).
    pub reward: String,
    /// Bounds of each action, `[actions]`; actions are clipped to them.
    pub action_bounds: Vec<ActionBound>,
    /// The state episodes start from.
    pub initial: InitialState,
    /// Control interval: an action is held for `dt` time units.
    pub dt: f64,
    /// RK4 steps per control interval.
    pub substeps: usize,
    /// Control steps per episode.
    pub episode_steps: usize,
    /// The task sequence: parameter settings met one after another.
    pub tasks: Vec<ControlTask>,
}

/// The interval `[low, high]` one action is clipped to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBound {
    /// Smallest value.
    pub low: f64,
    /// Largest value.
    pub high: f64,
}

/// The initial state of an episode: `state` plus independent uniform noise in `[-noise, noise]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialState {
    /// The noise-free initial state, `[dim]`.
    pub state: Vec<f64>,
    /// Half-width of the uniform noise per component, `[dim]`; empty for none.
    #[serde(default)]
    pub noise: Vec<f64>,
}

/// One task of the sequence: a name and the parameters it changes from their reference values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlTask {
    /// Unique name within the sequence.
    pub name: String,
    /// Parameter overrides, `name = value`; parameters not listed keep their reference value.
    #[serde(default)]
    pub set: BTreeMap<String, f64>,
}

impl ControlSpec {
    /// Parses and validates a controlled-system file's text.
    pub fn from_toml(text: &str) -> Result<Self, DataError> {
        let spec: ControlSpec = toml::from_str(text)
            .map_err(|e| DataError::spec("<control system file>", "toml", e.message().to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// State dimension.
    pub fn dim(&self) -> usize {
        self.state.len()
    }

    /// Number of actions.
    pub fn num_actions(&self) -> usize {
        self.action.len()
    }

    /// Parameter names, in order.
    pub fn parameter_names(&self) -> Vec<String> {
        self.parameters.iter().map(|p| p.name.clone()).collect()
    }

    /// Reference parameter values, `[params]`.
    pub fn reference_values(&self) -> Vec<f64> {
        self.parameters.iter().map(|p| p.value).collect()
    }

    /// The parameter values of task `index`, `[params]`.
    pub fn task_values(&self, index: usize) -> Result<Vec<f64>, DataError> {
        let task = self.tasks.get(index).ok_or_else(|| {
            DataError::spec(&self.name, "tasks", format!("no task {index}; there are {}", self.tasks.len()))
        })?;
        let mut values = self.reference_values();
        for (name, v) in &task.set {
            let i = self.parameters.iter().position(|p| &p.name == name).ok_or_else(|| {
                DataError::spec(&self.name, format!("tasks.{}", task.name), format!("`{name}` is not a parameter"))
            })?;
            values[i] = *v;
        }
        Ok(values)
    }

    /// Checks every field; the one place a controlled-system file is validated.
    pub fn validate(&self) -> Result<(), DataError> {
        let err = |field: &str, reason: String| Err(DataError::spec(&self.name, field, reason));
        if self.name.trim().is_empty() {
            return err("name", "must not be empty".into());
        }
        if self.state.is_empty() {
            return err("state", "needs at least one state variable".into());
        }
        if self.action.is_empty() {
            return err("action", "needs at least one action".into());
        }
        if self.rhs.len() != self.state.len() {
            return err("rhs", format!("has {} equations for {} state variables", self.rhs.len(), self.state.len()));
        }
        self.validate_names()?;
        self.validate_bounds()?;
        self.validate_initial()?;
        self.validate_timing()?;
        self.validate_tasks()
    }

    fn validate_names(&self) -> Result<(), DataError> {
        let mut names: Vec<&str> = self.state.iter().map(String::as_str).collect();
        names.extend(self.action.iter().map(String::as_str));
        names.extend(self.parameters.iter().map(|p| p.name.as_str()));
        for (i, n) in names.iter().enumerate() {
            if !is_identifier(n) {
                return Err(DataError::spec(
                    &self.name,
                    "state/action/parameters",
                    format!("`{n}` is not a name (letters, digits, `_`, not a digit first)"),
                ));
            }
            if names[..i].contains(n) {
                return Err(DataError::spec(&self.name, "state/action/parameters", format!("`{n}` is used twice")));
            }
        }
        match self.parameters.iter().find(|p| !p.value.is_finite()) {
            Some(p) => Err(DataError::spec(&self.name, "parameters", format!("value of `{}` is not finite", p.name))),
            None => Ok(()),
        }
    }

    fn validate_bounds(&self) -> Result<(), DataError> {
        let err = |reason: String| Err(DataError::spec(&self.name, "action_bounds", reason));
        if self.action_bounds.len() != self.action.len() {
            return err(format!("has {} bounds for {} actions", self.action_bounds.len(), self.action.len()));
        }
        for (name, b) in self.action.iter().zip(&self.action_bounds) {
            if !(b.low < b.high && b.low.is_finite() && b.high.is_finite()) {
                return err(format!("`{name}` needs finite low < high, got [{}, {}]", b.low, b.high));
            }
        }
        Ok(())
    }

    fn validate_initial(&self) -> Result<(), DataError> {
        let (d, init) = (self.dim(), &self.initial);
        let err = |field: &str, reason: String| Err(DataError::spec(&self.name, field, reason));
        if init.state.len() != d || init.state.iter().any(|v| !v.is_finite()) {
            return err("initial.state", format!("needs {d} finite values, got {:?}", init.state));
        }
        if !init.noise.is_empty() && (init.noise.len() != d || init.noise.iter().any(|v| !(*v >= 0.0 && v.is_finite())))
        {
            return err("initial.noise", format!("needs {d} finite half-widths >= 0 (or none), got {:?}", init.noise));
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), DataError> {
        let err = |field: &str, reason: String| Err(DataError::spec(&self.name, field, reason));
        if !(self.dt > 0.0 && self.dt.is_finite()) {
            return err("dt", format!("must be a positive number, got {}", self.dt));
        }
        if self.substeps == 0 {
            return err("substeps", "needs at least 1 RK4 step per control interval".into());
        }
        if self.episode_steps == 0 {
            return err("episode_steps", "needs at least 1 control step".into());
        }
        Ok(())
    }

    fn validate_tasks(&self) -> Result<(), DataError> {
        let err = |field: String, reason: String| Err(DataError::spec(&self.name, field, reason));
        if self.tasks.is_empty() {
            return err("tasks".into(), "needs at least one task".into());
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if task.name.trim().is_empty() || self.tasks[..i].iter().any(|t| t.name == task.name) {
                return err("tasks".into(), format!("task {i} needs a unique, non-empty name, got `{}`", task.name));
            }
            for (name, v) in &task.set {
                if !self.parameters.iter().any(|p| &p.name == name) {
                    return err(format!("tasks.{}", task.name), format!("`{name}` is not a parameter"));
                }
                if !v.is_finite() {
                    return err(format!("tasks.{}", task.name), format!("value of `{name}` is not finite"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "toy"
state = ["x"]
action = ["u"]
parameters = [{ name = "a", value = 1.0 }]
rhs = ["-a*x + u"]
reward = "-x^2"
action_bounds = [{ low = -1.0, high = 1.0 }]
initial = { state = [1.0], noise = [0.1] }
dt = 0.1
substeps = 2
episode_steps = 10
tasks = [{ name = "base" }, { name = "fast", set = { a = 3.0 } }]
"#;

    /// The field named by the error of `GOOD` with `from` replaced by `to`.
    fn field_of_error(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        match ControlSpec::from_toml(&GOOD.replace(from, to)) {
            Err(DataError::BadSpec { field, .. }) => field,
            other => panic!("expected a BadSpec for {to:?}, got {other:?}"),
        }
    }

    #[test]
    fn good_spec_parses_and_applies_task_overrides() {
        let s = ControlSpec::from_toml(GOOD).unwrap();
        assert_eq!((s.dim(), s.num_actions()), (1, 1));
        assert_eq!(s.task_values(0).unwrap(), vec![1.0]);
        assert_eq!(s.task_values(1).unwrap(), vec![3.0]);
        assert!(s.task_values(2).is_err());
    }

    #[test]
    fn rhs_count_must_match_state_count() {
        assert_eq!(field_of_error(r#"rhs = ["-a*x + u"]"#, r#"rhs = ["-a*x + u", "x"]"#), "rhs");
    }

    #[test]
    fn empty_action_bound_is_refused() {
        assert_eq!(field_of_error("high = 1.0", "high = -1.0"), "action_bounds");
        assert_eq!(field_of_error("{ low = -1.0, high = 1.0 }", "{ low = 1.0, high = 1.0 }"), "action_bounds");
        assert_eq!(
            field_of_error(r#"action_bounds = [{ low = -1.0, high = 1.0 }]"#, "action_bounds = []"),
            "action_bounds"
        );
    }

    #[test]
    fn task_overriding_unknown_parameter_is_refused() {
        assert_eq!(field_of_error("set = { a = 3.0 }", "set = { b = 3.0 }"), "tasks.fast");
    }

    #[test]
    fn at_least_one_task_is_needed() {
        assert_eq!(
            field_of_error(r#"tasks = [{ name = "base" }, { name = "fast", set = { a = 3.0 } }]"#, "tasks = []"),
            "tasks"
        );
        assert_eq!(field_of_error(r#"name = "fast""#, r#"name = "base""#), "tasks");
    }

    #[test]
    fn dt_substeps_and_episode_steps_must_be_positive() {
        assert_eq!(field_of_error("dt = 0.1", "dt = 0.0"), "dt");
        assert_eq!(field_of_error("dt = 0.1", "dt = -0.1"), "dt");
        assert_eq!(field_of_error("substeps = 2", "substeps = 0"), "substeps");
        assert_eq!(field_of_error("episode_steps = 10", "episode_steps = 0"), "episode_steps");
    }

    #[test]
    fn names_must_be_identifiers_and_distinct() {
        assert_eq!(field_of_error(r#"action = ["u"]"#, r#"action = ["x"]"#), "state/action/parameters");
        assert_eq!(field_of_error(r#"action = ["u"]"#, r#"action = ["2u"]"#), "state/action/parameters");
        assert_eq!(field_of_error(r#"action = ["u"]"#, "action = []"), "action");
    }

    #[test]
    fn initial_state_must_match_dimension() {
        assert_eq!(field_of_error("state = [1.0]", "state = [1.0, 2.0]"), "initial.state");
        assert_eq!(field_of_error("noise = [0.1]", "noise = [-0.1]"), "initial.noise");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert_eq!(field_of_error("dt = 0.1", "dt = 0.1\nhorizon = 3.0"), "toml");
    }
}
