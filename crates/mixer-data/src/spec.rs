//! System definitions as data: the TOML schema of a system file and of a family collection.

use mixer_ode::ReferenceMethod;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// One system: equations, parameters, initial conditions, time grid and environment rules.
///
/// A system file is TOML; see `crates/mixer-data/systems/*.toml` for the shipped ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    /// Unique name (`lotka-volterra`, `odebench-24`, ...).
    pub name: String,
    /// One line saying what the system is.
    #[serde(default)]
    pub description: String,
    /// State variable names, in order; `[dim]` (per grid cell for reaction–diffusion systems).
    pub state: Vec<String>,
    /// Parameters with their reference values, in order.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Right-hand side of each state variable (exmex syntax; names from `state`, `parameters`, `t`).
    pub rhs: Vec<String>,
    /// Present for reaction–diffusion systems: `rhs` are then the reaction terms per cell.
    #[serde(default)]
    pub grid: Option<GridSpec>,
    /// How initial conditions are drawn.
    pub initial: InitialRule,
    /// End of the time window `[0, horizon)` (or `[0, horizon]` with `endpoint`).
    pub horizon: f64,
    /// Number of observation times.
    pub points: usize,
    /// Whether the last observation time is `horizon` itself.
    #[serde(default)]
    pub endpoint: bool,
    /// Reference solver method (`tsit45`, `bdf`, `esdirk34`).
    #[serde(default = "default_solver")]
    pub solver: ReferenceMethod,
    /// Suggested time subsampling for training (every k-th point); data is stored unsubsampled.
    #[serde(default = "one")]
    pub keep_every: usize,
    /// Observation noise of the training splits (`train`, `adapt_train`): Gaussian, with standard
    /// deviation `noise` times each state variable's standard deviation over its trajectory; the
    /// test splits stay clean, so scores measure the dynamics recovered, not the noise.
    #[serde(default)]
    pub noise: f64,
    /// Training and adaptation environments.
    pub environments: EnvironmentPlan,
    /// Trajectories per environment in each split.
    pub trajectories: TrajectoryCounts,
}

/// A named parameter with its reference value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Name used in the equations.
    pub name: String,
    /// Reference value.
    pub value: f64,
}

/// A periodic square grid for reaction–diffusion systems (5-point Laplacian).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSpec {
    /// Cells per side; the state has `size * size * species` entries, species-major.
    pub size: usize,
    /// Side length of the periodic domain.
    pub length: f64,
    /// Diffusion coefficient of each species (`[species]`).
    pub diffusion: Vec<f64>,
}

/// How initial conditions are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InitialRule {
    /// Independent uniform draws per component in `[low, high]` (per species on grids).
    Uniform {
        /// Lower bounds, `[dim]`.
        low: Vec<f64>,
        /// Upper bounds, `[dim]`.
        high: Vec<f64>,
    },
    /// ODEBench: the two reference states, then uniform draws in the box they span. The
    /// references lead the `train` and `adapt_train` splits; test splits draw only from the box.
    ReferenceBox {
        /// Two reference initial states, `[2][dim]`.
        reference: Vec<Vec<f64>>,
    },
}

/// Environment rules of the training and the adaptation environments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPlan {
    /// Environments of `train` and `test`.
    pub train: EnvRule,
    /// Environments of `adapt_train` and `adapt_test`.
    pub adapt: EnvRule,
}

/// How a list of environments (parameter vectors) is built from the reference values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EnvRule {
    /// Cartesian product of explicit values of some parameters (first listed varies slowest);
    /// the others keep their reference values; the first `limit` combinations are kept.
    Product {
        /// Values per varied parameter.
        values: Vec<ParamValues>,
        /// Keep at most this many combinations.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Every parameter on `linspace(low * ref, high * ref, n)`, Cartesian product (first
    /// parameter slowest), first `limit` combinations (the MixER paper (Nzoyem et al., 2025), §6, ODEBench).
    Relative {
        /// Lower factor.
        low: f64,
        /// Upper factor.
        high: f64,
        /// Points per parameter.
        n: usize,
        /// Keep at most this many combinations.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// All parameters scaled together by each factor of `linspace(low, high, n)`.
    Scale {
        /// Lower factor.
        low: f64,
        /// Upper factor.
        high: f64,
        /// Number of environments.
        n: usize,
    },
}

/// Values of one varied parameter: explicit values followed by linspace segments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamValues {
    /// Parameter name.
    pub name: String,
    /// Explicit values.
    #[serde(default)]
    pub values: Vec<f64>,
    /// Segments `(start, stop, n)` of `linspace(start, stop, n)`, appended after `values`.
    #[serde(default)]
    pub linspace: Vec<(f64, f64, usize)>,
}

/// Trajectories per environment in each split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryCounts {
    /// Per training environment.
    pub train: usize,
    /// Per training environment, new initial conditions.
    pub test: usize,
    /// Per adaptation environment.
    pub adapt_train: usize,
    /// Per adaptation environment, new initial conditions.
    pub adapt_test: usize,
}

/// Several built-in systems generated together as families (`X: [families, envs, ...]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    /// Dataset name (`odebench-2d`).
    pub name: String,
    /// One line saying what the collection is.
    #[serde(default)]
    pub description: String,
    /// Built-in system names, one per family; all share the state dimension.
    pub families: Vec<String>,
    /// Observation times per family (overrides each system's `points`).
    pub points: usize,
    /// Suggested time subsampling for training.
    #[serde(default = "one")]
    pub keep_every: usize,
    /// Environment rules applied to every family (absent: each family keeps its own).
    #[serde(default)]
    pub environments: Option<EnvironmentPlan>,
    /// Trajectories per environment in each split.
    pub trajectories: TrajectoryCounts,
}

fn default_solver() -> ReferenceMethod {
    ReferenceMethod::Tsit45
}

fn one() -> usize {
    1
}

/// `n` evenly spaced values from `a` to `b` inclusive (numpy's `linspace`).
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![a],
        _ => (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect(),
    }
}

impl SystemSpec {
    /// Parses a system file's text.
    pub fn from_toml(text: &str) -> Result<Self, DataError> {
        let spec: SystemSpec =
            toml::from_str(text).map_err(|e| DataError::spec("<system file>", "toml", e.message().to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// State dimension of the solved system (`state.len()`, times `size^2` on grids).
    pub fn dim(&self) -> usize {
        match &self.grid {
            Some(g) => self.state.len() * g.size * g.size,
            None => self.state.len(),
        }
    }

    /// Reference parameter values, `[params]`.
    pub fn reference_values(&self) -> Vec<f64> {
        self.parameters.iter().map(|p| p.value).collect()
    }

    /// Parameter names, in order.
    pub fn parameter_names(&self) -> Vec<String> {
        self.parameters.iter().map(|p| p.name.clone()).collect()
    }

    /// The observation times, `[points]`.
    pub fn times(&self) -> Vec<f64> {
        let denom = if self.endpoint { self.points.saturating_sub(1).max(1) } else { self.points };
        (0..self.points).map(|k| self.horizon * k as f64 / denom as f64).collect()
    }

    /// Checks every field; the one place a system file is validated.
    pub fn validate(&self) -> Result<(), DataError> {
        let err = |field: &str, reason: String| Err(DataError::spec(&self.name, field, reason));
        if self.name.trim().is_empty() {
            return err("name", "must not be empty".into());
        }
        if self.state.is_empty() {
            return err("state", "needs at least one state variable".into());
        }
        if self.rhs.len() != self.state.len() {
            return err("rhs", format!("has {} equations for {} state variables", self.rhs.len(), self.state.len()));
        }
        let mut names: Vec<&str> = self.state.iter().map(String::as_str).collect();
        names.extend(self.parameters.iter().map(|p| p.name.as_str()));
        for (i, n) in names.iter().enumerate() {
            if !is_identifier(n) {
                return err(
                    "state/parameters",
                    format!("`{n}` is not a name (letters, digits, `_`, not a digit first)"),
                );
            }
            if names[..i].contains(n) || *n == "t" {
                return err("state/parameters", format!("name `{n}` is used twice (or is the time `t`)"));
            }
        }
        if let Some(p) = self.parameters.iter().find(|p| !p.value.is_finite()) {
            return err("parameters", format!("value of `{}` is not finite", p.name));
        }
        if !(self.horizon > 0.0 && self.horizon.is_finite()) {
            return err("horizon", format!("must be a positive number, got {}", self.horizon));
        }
        if self.points < 2 {
            return err("points", format!("needs at least 2 observation times, got {}", self.points));
        }
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            return err("noise", format!("must be a finite number >= 0, got {}", self.noise));
        }
        if self.keep_every == 0 || self.keep_every > self.points {
            return err("keep_every", format!("must be in 1..={}, got {}", self.points, self.keep_every));
        }
        let d = self.state.len();
        match &self.initial {
            InitialRule::Uniform { low, high } => {
                if low.len() != d || high.len() != d {
                    return err("initial", format!("low/high need {d} entries, got {}/{}", low.len(), high.len()));
                }
                if low.iter().zip(high).any(|(l, h)| l > h || !l.is_finite() || !h.is_finite()) {
                    return err("initial", "needs finite bounds with low <= high".into());
                }
            }
            InitialRule::ReferenceBox { reference } => {
                if reference.len() != 2 || reference.iter().any(|r| r.len() != d) {
                    return err("initial", format!("reference needs two states of {d} entries"));
                }
                if reference.iter().flatten().any(|v| !v.is_finite()) {
                    return err("initial", "reference states must be finite".into());
                }
            }
        }
        if let Some(g) = &self.grid {
            if g.size < 3 {
                return err("grid.size", format!("needs at least 3 cells per side, got {}", g.size));
            }
            if !(g.length > 0.0 && g.length.is_finite()) {
                return err("grid.length", format!("must be positive, got {}", g.length));
            }
            if g.diffusion.len() != d || g.diffusion.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
                return err("grid.diffusion", format!("needs {d} non-negative coefficients"));
            }
        }
        for (which, rule) in
            [("environments.train", &self.environments.train), ("environments.adapt", &self.environments.adapt)]
        {
            validate_rule(&self.name, which, rule, &self.parameters)?;
        }
        Ok(())
    }
}

fn validate_rule(system: &str, field: &str, rule: &EnvRule, params: &[Parameter]) -> Result<(), DataError> {
    let err = |reason: String| Err(DataError::spec(system, field, reason));
    match rule {
        EnvRule::Product { values, limit } => {
            if values.is_empty() {
                return err("needs at least one parameter under `values`".into());
            }
            for v in values {
                if !params.iter().any(|p| p.name == v.name) {
                    return err(format!("`{}` is not a parameter of the system", v.name));
                }
                if v.values.is_empty() && v.linspace.is_empty() {
                    return err(format!("`{}` has no values", v.name));
                }
                if v.values.iter().any(|x| !x.is_finite()) {
                    return err(format!("`{}` has a non-finite value", v.name));
                }
            }
            if *limit == Some(0) {
                return err("limit must be at least 1".into());
            }
        }
        EnvRule::Relative { low, high, n, limit } => {
            if *n == 0 || *limit == Some(0) || !low.is_finite() || !high.is_finite() {
                return err("needs n >= 1, limit >= 1 and finite factors".into());
            }
        }
        EnvRule::Scale { low, high, n } => {
            if *n == 0 || !low.is_finite() || !high.is_finite() {
                return err("needs n >= 1 and finite factors".into());
            }
        }
    }
    Ok(())
}

/// Whether `s` is a name the equations can use (letters, digits, `_`, not a digit first).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl EnvRule {
    /// The parameter vectors of the environments, `[envs][params]`.
    pub fn environments(&self, params: &[Parameter]) -> Vec<Vec<f64>> {
        let reference: Vec<f64> = params.iter().map(|p| p.value).collect();
        match self {
            EnvRule::Product { values, limit } => {
                let axes: Vec<(usize, Vec<f64>)> = values
                    .iter()
                    .filter_map(|v| {
                        let idx = params.iter().position(|p| p.name == v.name)?;
                        let mut vals = v.values.clone();
                        for &(a, b, n) in &v.linspace {
                            vals.extend(linspace(a, b, n));
                        }
                        Some((idx, vals))
                    })
                    .collect();
                product(&reference, &axes, limit.unwrap_or(usize::MAX))
            }
            EnvRule::Relative { low, high, n, limit } => {
                let axes: Vec<(usize, Vec<f64>)> =
                    reference.iter().enumerate().map(|(i, &r)| (i, linspace(low * r, high * r, *n))).collect();
                product(&reference, &axes, limit.unwrap_or(usize::MAX))
            }
            EnvRule::Scale { low, high, n } => {
                linspace(*low, *high, *n).into_iter().map(|s| reference.iter().map(|r| r * s).collect()).collect()
            }
        }
    }
}

/// Cartesian product over `axes` (first slowest) applied on top of `reference`, at most `limit`.
fn product(reference: &[f64], axes: &[(usize, Vec<f64>)], limit: usize) -> Vec<Vec<f64>> {
    let total: usize = axes.iter().map(|(_, v)| v.len()).product();
    let mut out = Vec::new();
    for flat in 0..total.min(limit) {
        let mut env = reference.to_vec();
        let mut rest = flat;
        for (idx, vals) in axes.iter().rev() {
            env[*idx] = vals[rest % vals.len()];
            rest /= vals.len();
        }
        out.push(env);
    }
    out
}
