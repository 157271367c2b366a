//! Right-hand sides parsed from text with exmex, with exact partial derivatives for the
//! Jacobian action that stiff solvers need; the same compiled expressions serve the controlled
//! systems of [`control`](crate::control) (which also read actions).

use exmex::prelude::*;
use exmex::{Differentiate, FlatEx};

use crate::DataError;
use crate::spec::SystemSpec;

/// Where an expression variable takes its value from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    State(usize),
    Action(usize),
    Param(usize),
    Time,
}

/// The names an expression may read: state, action and parameter names, and whether `t` is time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Names<'a> {
    /// State variable names, `[dim]`.
    pub state: &'a [String],
    /// Action (control input) names, `[actions]`; empty for autonomous systems.
    pub action: &'a [String],
    /// Parameter names, `[params]`.
    pub params: &'a [String],
    /// Whether `t` names the time.
    pub time: bool,
}

impl Names<'_> {
    fn source(&self, v: &str) -> Option<Source> {
        let find = |names: &[String]| names.iter().position(|s| s == v);
        find(self.state)
            .map(Source::State)
            .or_else(|| find(self.action).map(Source::Action))
            .or_else(|| find(self.params).map(Source::Param))
            .or_else(|| (self.time && v == "t").then_some(Source::Time))
    }

    fn unknown(&self, v: &str) -> String {
        let mut known = format!("state: [{}]", self.state.join(", "));
        if !self.action.is_empty() {
            known += &format!(", actions: [{}]", self.action.join(", "));
        }
        known += &format!(", parameters: [{}]", self.params.join(", "));
        if self.time {
            known += ", time: t";
        }
        format!("unknown name `{v}`; {known}")
    }
}

/// The values an expression is evaluated at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point<'a> {
    /// Time.
    pub t: f64,
    /// State, `[dim]`.
    pub x: &'a [f64],
    /// Action, `[actions]`.
    pub u: &'a [f64],
    /// Parameters, `[params]`.
    pub p: &'a [f64],
}

/// One parsed expression and the source of each of its (alphabetically ordered) variables.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    ex: FlatEx<f64>,
    sources: Vec<Source>,
}

impl Compiled {
    /// Parses `text` (exmex syntax, unary minus as in mathematics) over `names`.
    pub fn parse(text: &str, names: &Names<'_>) -> Result<Self, String> {
        let ex = exmex::parse::<f64>(&unary_minus_as_product(text)).map_err(|e| e.to_string())?;
        Self::new(ex, names)
    }

    fn new(ex: FlatEx<f64>, names: &Names<'_>) -> Result<Self, String> {
        let sources =
            ex.var_names().iter().map(|v| names.source(v).ok_or_else(|| names.unknown(v))).collect::<Result<_, _>>()?;
        Ok(Self { ex, sources })
    }

    /// The value at `at`, using `buf` as scratch; NaN where exmex cannot evaluate.
    pub fn eval(&self, at: &Point<'_>, buf: &mut Vec<f64>) -> f64 {
        buf.clear();
        buf.extend(self.sources.iter().map(|s| match *s {
            Source::State(i) => at.x[i],
            Source::Action(i) => at.u[i],
            Source::Param(i) => at.p[i],
            Source::Time => at.t,
        }));
        self.ex.eval(buf).unwrap_or(f64::NAN)
    }
}

/// Rewrites each unary minus as `(-1)*` so that `-x^2` means `-(x^2)` as in mathematics (exmex
/// binds a unary minus tighter than `^`). A minus right after `*`, `/` or `^` is left to exmex
/// (`a/-b`, `2^-x` work; write `a*-(x^2)` rather than `a*-x^2`).
fn unary_minus_as_product(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev: Option<char> = None;
    for ch in text.chars() {
        if ch == '-' && matches!(prev, None | Some('(' | ',' | '+' | '-')) {
            out.push_str("(-1)*");
        } else {
            out.push(ch);
        }
        if !ch.is_whitespace() {
            prev = Some(ch);
        }
    }
    out
}

/// The parsed equations of a system: `f_i(t, x, p)` and the nonzero partials `df_i/dx_j`.
#[derive(Clone, Debug)]
pub struct Equations {
    rhs: Vec<Compiled>,
    /// `(i, j, df_i/dx_j)` for every state `x_j` that `f_i` reads.
    partials: Vec<(usize, usize, Compiled)>,
    params: usize,
}

impl Equations {
    /// Parses `spec.rhs` over `spec.state`, `spec.parameters` and `t`.
    pub fn parse(spec: &SystemSpec) -> Result<Self, DataError> {
        let params = spec.parameter_names();
        let names = Names { state: &spec.state, action: &[], params: &params, time: true };
        let mut rhs = Vec::with_capacity(spec.rhs.len());
        let mut partials = Vec::new();
        for (i, text) in spec.rhs.iter().enumerate() {
            let bad = |reason: String| DataError::BadExpression {
                system: spec.name.clone(),
                index: i,
                expr: text.clone(),
                reason,
            };
            let compiled = Compiled::parse(text, &names).map_err(bad)?;
            for (var_idx, src) in compiled.sources.iter().enumerate() {
                if let Source::State(j) = *src {
                    let d =
                        compiled.ex.clone().partial(var_idx).map_err(|e| bad(format!("cannot differentiate: {e}")))?;
                    partials.push((i, j, Compiled::new(d, &names).map_err(bad)?));
                }
            }
            rhs.push(compiled);
        }
        Ok(Self { rhs, partials, params: params.len() })
    }

    /// Number of equations (state dimension of one cell).
    pub fn dim(&self) -> usize {
        self.rhs.len()
    }

    /// Number of parameters the equations expect.
    pub fn num_params(&self) -> usize {
        self.params
    }

    /// Writes `f(t, x; p)` into `dx` (`x, dx: [dim]`, `p: [params]`).
    pub fn eval(&self, t: f64, x: &[f64], p: &[f64], dx: &mut [f64]) {
        let (mut buf, at) = (Vec::with_capacity(8), Point { t, x, u: &[], p });
        for (out, e) in dx.iter_mut().zip(&self.rhs) {
            *out = e.eval(&at, &mut buf);
        }
    }

    /// Writes the Jacobian-vector product `(df/dx)(t, x; p) v` into `out`.
    pub fn jac_vec(&self, t: f64, x: &[f64], p: &[f64], v: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let (mut buf, at) = (Vec::with_capacity(8), Point { t, x, u: &[], p });
        for (i, j, d) in &self.partials {
            if v[*j] != 0.0 {
                out[*i] += d.eval(&at, &mut buf) * v[*j];
            }
        }
    }

    /// The dense Jacobian `[dim][dim]` (row `i`, column `j` is `df_i/dx_j`).
    pub fn jacobian(&self, t: f64, x: &[f64], p: &[f64]) -> Vec<Vec<f64>> {
        let n = self.dim();
        let mut jac = vec![vec![0.0; n]; n];
        let (mut buf, at) = (Vec::with_capacity(8), Point { t, x, u: &[], p });
        for (i, j, d) in &self.partials {
            jac[*i][*j] += d.eval(&at, &mut buf);
        }
        jac
    }
}

#[cfg(test)]
mod tests {
    use super::unary_minus_as_product;

    #[test]
    fn unary_minus_rewrite_keeps_binary_minus_and_exponents() {
        assert_eq!(unary_minus_as_product("-x^2 + y - 1e-3"), "(-1)*x^2 + y - 1e-3");
        assert_eq!(unary_minus_as_product("a*(-x)^3/-b"), "a*((-1)*x)^3/-b");
        assert_eq!(unary_minus_as_product("2^-x"), "2^-x");
        let v = exmex::eval_str::<f64>(&unary_minus_as_product("-3^2 - -2")).unwrap();
        assert_eq!(v, -7.0);
    }
}
