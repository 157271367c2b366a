//! Systems declared as data: variables, parameters, right-hand sides as expression text.

use exmex::{Express, FlatEx};
use serde::{Deserialize, Serialize};

use mixer_ode::OdeSystem;

use crate::DataError;

/// A named parameter with its reference value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Name used in the expressions.
    pub name: String,
    /// Reference value.
    pub value: f64,
}

/// How initial conditions are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InitialConditions {
    /// Uniform in the box `[low, high]`.
    Box {
        /// Lower corner.
        low: Vec<f64>,
        /// Upper corner.
        high: Vec<f64>,
    },
    /// The reference initial conditions first, then uniform draws in the box they span.
    ReferenceBox {
        /// Reference initial conditions, `[n][dim]`.
        reference: Vec<Vec<f64>>,
    },
}

/// One ODE family: the right-hand side as expressions of its variables and parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    /// Display name.
    pub name: String,
    /// ODEBench identifier, when the family comes from ODEBench.
    #[serde(default)]
    pub odebench_id: Option<u32>,
    /// State variable names, in state order.
    pub variables: Vec<String>,
    /// Parameters with reference values.
    pub parameters: Vec<Parameter>,
    /// One expression per variable (exmex syntax: `^` for powers, `sin`, `cos`, `exp`, ...).
    pub rhs: Vec<String>,
    /// Time horizon `T`; observations lie on `[0, T)`.
    pub horizon: f64,
    /// Initial-condition rule.
    pub initial_conditions: InitialConditions,
}

/// A family with parsed expressions, evaluable at given parameter values.
#[derive(Clone, Debug)]
pub struct CompiledFamily {
    /// The declaration.
    pub spec: FamilySpec,
    /// Parsed expressions and, per expression, where each of its variables comes from.
    exprs: Vec<(FlatEx<f64>, Vec<Source>)>,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    State(usize),
    Param(usize),
}

impl CompiledFamily {
    /// Parses and checks a family declaration.
    pub fn new(spec: FamilySpec) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::System { name: spec.name.clone(), reason };
        if spec.variables.is_empty() || spec.rhs.len() != spec.variables.len() {
            return Err(bad(format!("{} variables but {} right-hand sides", spec.variables.len(), spec.rhs.len())));
        }
        if !(spec.horizon > 0.0 && spec.horizon.is_finite()) {
            return Err(bad(format!("horizon must be > 0, got {}", spec.horizon)));
        }
        let mut exprs = Vec::new();
        for (i, text) in spec.rhs.iter().enumerate() {
            let ex = exmex::parse::<f64>(text).map_err(|e| bad(format!("rhs[{i}] `{text}`: {e}")))?;
            let sources = ex
                .var_names()
                .iter()
                .map(|v| {
                    if let Some(j) = spec.variables.iter().position(|n| n == v) {
                        Ok(Source::State(j))
                    } else if let Some(j) = spec.parameters.iter().position(|p| &p.name == v) {
                        Ok(Source::Param(j))
                    } else {
                        Err(bad(format!("rhs[{i}] uses `{v}`, which is neither a variable nor a parameter")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            exprs.push((ex, sources));
        }
        let dim = spec.variables.len();
        match &spec.initial_conditions {
            InitialConditions::Box { low, high } if low.len() != dim || high.len() != dim => {
                return Err(bad(format!("initial-condition box must have {dim} entries per corner")));
            }
            InitialConditions::ReferenceBox { reference } if reference.is_empty() || reference.iter().any(|r| r.len() != dim) => {
                return Err(bad(format!("reference initial conditions must be non-empty rows of {dim} values")));
            }
            _ => {}
        }
        Ok(Self { spec, exprs })
    }

    /// State dimension.
    pub fn dim(&self) -> usize {
        self.spec.variables.len()
    }

    /// Reference parameter values.
    pub fn reference(&self) -> Vec<f64> {
        self.spec.parameters.iter().map(|p| p.value).collect()
    }

    /// The family at parameter values `params` as an [`OdeSystem`].
    pub fn at<'a>(&'a self, params: &'a [f64]) -> Instance<'a> {
        Instance { family: self, params }
    }

    fn eval(&self, x: &[f64], params: &[f64], dx: &mut [f64]) {
        let mut buf = [0.0; 16];
        for (k, (ex, sources)) in self.exprs.iter().enumerate() {
            let mut heap;
            let vals: &mut [f64] = if sources.len() <= buf.len() {
                &mut buf[..sources.len()]
            } else {
                heap = vec![0.0; sources.len()];
                &mut heap
            };
            for (v, s) in vals.iter_mut().zip(sources) {
                *v = match *s {
                    Source::State(j) => x[j],
                    Source::Param(j) => params[j],
                };
            }
            dx[k] = ex.eval(vals).unwrap_or(f64::NAN);
        }
    }
}

/// A family at fixed parameter values.
pub struct Instance<'a> {
    family: &'a CompiledFamily,
    params: &'a [f64],
}

impl OdeSystem for Instance<'_> {
    fn dim(&self) -> usize {
        self.family.dim()
    }

    fn rhs(&self, _t: f64, x: &[f64], dx: &mut [f64]) {
        self.family.eval(x, self.params, dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv() -> FamilySpec {
        FamilySpec {
            name: "lv".into(),
            odebench_id: None,
            variables: vec!["x".into(), "y".into()],
            parameters: vec![Parameter { name: "a".into(), value: 0.5 }, Parameter { name: "b".into(), value: 0.75 }],
            rhs: vec!["a*x - b*x*y".into(), "b*x*y - a*y".into()],
            horizon: 10.0,
            initial_conditions: InitialConditions::Box { low: vec![1.0, 1.0], high: vec![2.0, 2.0] },
        }
    }

    #[test]
    fn evaluates_expressions_with_parameters() {
        let f = CompiledFamily::new(lv()).unwrap();
        let p = [0.5, 0.75];
        let mut dx = [0.0; 2];
        f.at(&p).rhs(0.0, &[1.5, 2.0], &mut dx);
        assert!((dx[0] - (0.5 * 1.5 - 0.75 * 3.0)).abs() < 1e-15);
        assert!((dx[1] - (0.75 * 3.0 - 1.0)).abs() < 1e-15);
    }

    #[test]
    fn bad_declarations_are_errors() {
        let mut s = lv();
        s.rhs.pop();
        assert!(CompiledFamily::new(s).is_err());
        let mut s = lv();
        s.rhs[0] = "a*x - q*y".into();
        assert!(matches!(CompiledFamily::new(s), Err(DataError::System { reason, .. }) if reason.contains("`q`")));
        let mut s = lv();
        s.rhs[0] = "a*x -* (".into();
        assert!(CompiledFamily::new(s).is_err());
        let mut s = lv();
        s.horizon = 0.0;
        assert!(CompiledFamily::new(s).is_err());
        let mut s = lv();
        s.initial_conditions = InitialConditions::Box { low: vec![1.0], high: vec![2.0, 2.0] };
        assert!(CompiledFamily::new(s).is_err());
    }
}
