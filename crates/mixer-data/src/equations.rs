//! Right-hand sides parsed from text with exmex, with exact partial derivatives for the
//! Jacobian action that stiff solvers need.

use exmex::prelude::*;
use exmex::{Differentiate, FlatEx};

use crate::DataError;
use crate::spec::SystemSpec;

/// Where an expression variable takes its value from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    State(usize),
    Param(usize),
    Time,
}

/// One parsed expression and the source of each of its (alphabetically ordered) variables.
#[derive(Clone, Debug)]
struct Compiled {
    ex: FlatEx<f64>,
    sources: Vec<Source>,
}

impl Compiled {
    fn new(ex: FlatEx<f64>, state: &[String], params: &[String]) -> Result<Self, String> {
        let sources = ex
            .var_names()
            .iter()
            .map(|v| {
                if let Some(i) = state.iter().position(|s| s == v) {
                    Ok(Source::State(i))
                } else if let Some(i) = params.iter().position(|s| s == v) {
                    Ok(Source::Param(i))
                } else if v == "t" {
                    Ok(Source::Time)
                } else {
                    Err(format!(
                        "unknown name `{v}`; state: [{}], parameters: [{}], time: t",
                        state.join(", "),
                        params.join(", ")
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ex, sources })
    }

    fn eval(&self, t: f64, x: &[f64], p: &[f64], buf: &mut Vec<f64>) -> f64 {
        buf.clear();
        buf.extend(self.sources.iter().map(|s| match *s {
            Source::State(i) => x[i],
            Source::Param(i) => p[i],
            Source::Time => t,
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
        let mut rhs = Vec::with_capacity(spec.rhs.len());
        let mut partials = Vec::new();
        for (i, text) in spec.rhs.iter().enumerate() {
            let bad = |reason: String| DataError::BadExpression {
                system: spec.name.clone(),
                index: i,
                expr: text.clone(),
                reason,
            };
            let ex = exmex::parse::<f64>(&unary_minus_as_product(text)).map_err(|e| bad(e.to_string()))?;
            let compiled = Compiled::new(ex.clone(), &spec.state, &params).map_err(bad)?;
            for (var_idx, src) in compiled.sources.iter().enumerate() {
                if let Source::State(j) = *src {
                    let d = ex.clone().partial(var_idx).map_err(|e| bad(format!("cannot differentiate: {e}")))?;
                    partials.push((i, j, Compiled::new(d, &spec.state, &params).map_err(bad)?));
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
        let mut buf = Vec::with_capacity(8);
        for (out, e) in dx.iter_mut().zip(&self.rhs) {
            *out = e.eval(t, x, p, &mut buf);
        }
    }

    /// Writes the Jacobian-vector product `(df/dx)(t, x; p) v` into `out`.
    pub fn jac_vec(&self, t: f64, x: &[f64], p: &[f64], v: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let mut buf = Vec::with_capacity(8);
        for (i, j, d) in &self.partials {
            if v[*j] != 0.0 {
                out[*i] += d.eval(t, x, p, &mut buf) * v[*j];
            }
        }
    }

    /// The dense Jacobian `[dim][dim]` (row `i`, column `j` is `df_i/dx_j`).
    pub fn jacobian(&self, t: f64, x: &[f64], p: &[f64]) -> Vec<Vec<f64>> {
        let n = self.dim();
        let mut jac = vec![vec![0.0; n]; n];
        let mut buf = Vec::with_capacity(8);
        for (i, j, d) in &self.partials {
            jac[*i][*j] += d.eval(t, x, p, &mut buf);
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
