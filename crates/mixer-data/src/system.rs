//! A parsed system and its instances at given parameter values, solvable by `mixer-ode`.

use mixer_ode::OdeSystem;

use crate::DataError;
use crate::equations::Equations;
use crate::spec::{GridSpec, SystemSpec};

/// A validated system definition with its parsed equations.
#[derive(Clone, Debug)]
pub struct System {
    spec: SystemSpec,
    equations: Equations,
}

impl System {
    /// Validates `spec` and parses its equations.
    pub fn from_spec(spec: SystemSpec) -> Result<Self, DataError> {
        spec.validate()?;
        let equations = Equations::parse(&spec)?;
        Ok(Self { spec, equations })
    }

    /// Parses a system file's TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DataError> {
        Self::from_spec(SystemSpec::from_toml(text)?)
    }

    /// The definition.
    pub fn spec(&self) -> &SystemSpec {
        &self.spec
    }

    /// The parsed equations (per cell for grid systems).
    pub fn equations(&self) -> &Equations {
        &self.equations
    }

    /// The system at parameter values `params` (`[params]`), ready for a solver.
    pub fn instance(&self, params: &[f64]) -> Result<Instance<'_>, DataError> {
        if params.len() != self.equations.num_params() {
            return Err(mixer_core::Error::shape(
                format!("parameters of `{}`", self.spec.name),
                self.equations.num_params(),
                params.len(),
            )
            .into());
        }
        mixer_core::ensure_finite("parameters", params)?;
        Ok(Instance { system: self, params: params.to_vec() })
    }
}

/// A system at fixed parameter values; implements [`OdeSystem`].
#[derive(Clone, Debug)]
pub struct Instance<'a> {
    system: &'a System,
    params: Vec<f64>,
}

impl Instance<'_> {
    /// The parameter values, `[params]`.
    pub fn params(&self) -> &[f64] {
        &self.params
    }
}

impl OdeSystem for Instance<'_> {
    fn dim(&self) -> usize {
        self.system.spec.dim()
    }

    fn rhs(&self, t: f64, x: &[f64], dx: &mut [f64]) {
        let eq = &self.system.equations;
        match &self.system.spec.grid {
            None => eq.eval(t, x, &self.params, dx),
            Some(g) => grid_rhs(eq, g, t, x, &self.params, dx),
        }
    }

    fn jac_vec(&self, t: f64, x: &[f64], v: &[f64], out: &mut [f64]) {
        let eq = &self.system.equations;
        match &self.system.spec.grid {
            None => eq.jac_vec(t, x, &self.params, v, out),
            Some(g) => grid_jac_vec(eq, g, t, x, &self.params, v, out),
        }
    }
}

/// Adds `coef * laplacian(u)` of one species field (`[n * n]`, periodic) to `out`.
fn add_laplacian(u: &[f64], n: usize, coef: f64, out: &mut [f64]) {
    for i in 0..n {
        let (up, down) = ((i + n - 1) % n, (i + 1) % n);
        for j in 0..n {
            let (left, right) = ((j + n - 1) % n, (j + 1) % n);
            let lap = u[up * n + j] + u[down * n + j] + u[i * n + left] + u[i * n + right] - 4.0 * u[i * n + j];
            out[i * n + j] += coef * lap;
        }
    }
}

fn grid_rhs(eq: &Equations, g: &GridSpec, t: f64, x: &[f64], p: &[f64], dx: &mut [f64]) {
    let (s, n) = (eq.dim(), g.size);
    let cells = n * n;
    let (mut local, mut f) = (vec![0.0; s], vec![0.0; s]);
    for c in 0..cells {
        for k in 0..s {
            local[k] = x[k * cells + c];
        }
        eq.eval(t, &local, p, &mut f);
        for k in 0..s {
            dx[k * cells + c] = f[k];
        }
    }
    let h = g.length / n as f64;
    for k in 0..s {
        add_laplacian(&x[k * cells..(k + 1) * cells], n, g.diffusion[k] / (h * h), &mut dx[k * cells..(k + 1) * cells]);
    }
}

fn grid_jac_vec(eq: &Equations, g: &GridSpec, t: f64, x: &[f64], p: &[f64], v: &[f64], out: &mut [f64]) {
    let (s, n) = (eq.dim(), g.size);
    let cells = n * n;
    let (mut lx, mut lv, mut lo) = (vec![0.0; s], vec![0.0; s], vec![0.0; s]);
    for c in 0..cells {
        for k in 0..s {
            lx[k] = x[k * cells + c];
            lv[k] = v[k * cells + c];
        }
        if lv.iter().all(|a| *a == 0.0) {
            (0..s).for_each(|k| out[k * cells + c] = 0.0);
            continue;
        }
        eq.jac_vec(t, &lx, p, &lv, &mut lo);
        for k in 0..s {
            out[k * cells + c] = lo[k];
        }
    }
    let h = g.length / n as f64;
    for k in 0..s {
        add_laplacian(
            &v[k * cells..(k + 1) * cells],
            n,
            g.diffusion[k] / (h * h),
            &mut out[k * cells..(k + 1) * cells],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LV: &str = r#"
name = "lv"
state = ["x", "y"]
parameters = [{ name = "a", value = 0.5 }, { name = "b", value = 1.0 }]
rhs = ["a*x - b*x*y", "b*x*y - a*y^2 + sin(t)"]
initial = { rule = "uniform", low = [1, 1], high = [2, 2] }
horizon = 1.0
points = 5
environments.train = { rule = "scale", low = 0.9, high = 1.1, n = 3 }
environments.adapt = { rule = "scale", low = 0.8, high = 1.2, n = 2 }
trajectories = { train = 1, test = 1, adapt_train = 1, adapt_test = 1 }
"#;

    #[test]
    fn rhs_and_exact_jacobian_match_hand_computed_values() {
        let sys = System::from_toml(LV).unwrap();
        let inst = sys.instance(&[0.5, 1.5]).unwrap();
        let (x, t) = ([-1.3, 0.7], 0.4);
        let mut dx = [0.0; 2];
        inst.rhs(t, &x, &mut dx);
        assert!((dx[0] - (0.5 * -1.3 - 1.5 * -1.3 * 0.7)).abs() < 1e-14);
        assert!((dx[1] - (1.5 * -1.3 * 0.7 - 0.5 * 0.49 + 0.4f64.sin())).abs() < 1e-14);
        // J = [[a - b y, -b x], [b y, b x - 2 a y]] at negative x (checks that `^` differentiates there).
        let mut out = [0.0; 2];
        inst.jac_vec(t, &x, &[0.3, -2.0], &mut out);
        let j = [[0.5 - 1.5 * 0.7, 1.5 * 1.3], [1.5 * 0.7, 1.5 * -1.3 - 2.0 * 0.5 * 0.7]];
        assert!((out[0] - (j[0][0] * 0.3 - j[0][1] * 2.0)).abs() < 1e-13, "{out:?}");
        assert!((out[1] - (j[1][0] * 0.3 - j[1][1] * 2.0)).abs() < 1e-13, "{out:?}");
    }

    #[test]
    fn unary_minus_and_powers_follow_usual_precedence() {
        let text = LV.replace("a*x - b*x*y", "-x^2 + sin(y)^2");
        let sys = System::from_toml(&text).unwrap();
        let mut dx = [0.0; 2];
        sys.instance(&[0.5, 1.0]).unwrap().rhs(0.0, &[3.0, 0.5], &mut dx);
        assert!((dx[0] - (-9.0 + 0.5f64.sin().powi(2))).abs() < 1e-14, "{}", dx[0]);
    }

    #[test]
    fn unknown_names_and_bad_syntax_are_errors() {
        let e = System::from_toml(&LV.replace("a*x - b*x*y", "a*x - c*z")).unwrap_err();
        assert!(matches!(e, DataError::BadExpression { index: 0, .. }), "{e}");
        assert!(e.to_string().contains("unknown name"), "{e}");
        let e = System::from_toml(&LV.replace("a*x - b*x*y", "a*x - (b")).unwrap_err();
        assert!(matches!(e, DataError::BadExpression { index: 0, .. }), "{e}");
        let e = sys_err_params();
        assert!(matches!(e, DataError::Core(mixer_core::Error::ShapeMismatch { .. })), "{e}");
    }

    fn sys_err_params() -> DataError {
        let sys = System::from_toml(LV).unwrap();
        sys.instance(&[1.0]).unwrap_err()
    }

    #[test]
    fn grid_jacobian_matches_finite_differences() {
        let text = r#"
name = "rd"
state = ["u", "v"]
parameters = [{ name = "A", value = 1.0 }, { name = "B", value = 3.0 }]
rhs = ["A - (B + 1)*u + u^2*v", "B*u - u^2*v"]
grid = { size = 4, length = 4.0, diffusion = [1.0, 0.5] }
initial = { rule = "uniform", low = [0.5, 2.0], high = [1.5, 4.0] }
horizon = 1.0
points = 3
solver = "bdf"
environments.train = { rule = "scale", low = 0.9, high = 1.1, n = 2 }
environments.adapt = { rule = "scale", low = 0.8, high = 1.2, n = 2 }
trajectories = { train = 1, test = 1, adapt_train = 1, adapt_test = 1 }
"#;
        let sys = System::from_toml(text).unwrap();
        let inst = sys.instance(&[1.0, 3.0]).unwrap();
        let n = inst.dim();
        assert_eq!(n, 32);
        let x: Vec<f64> = (0..n).map(|i| 1.0 + 0.37 * ((i * 7) % 5) as f64).collect();
        let v: Vec<f64> = (0..n).map(|i| ((i * 3) % 4) as f64 - 1.5).collect();
        let mut jv = vec![0.0; n];
        inst.jac_vec(0.0, &x, &v, &mut jv);
        let eps = 1e-6;
        let (mut fp, mut fm) = (vec![0.0; n], vec![0.0; n]);
        let xp: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + eps * b).collect();
        let xm: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - eps * b).collect();
        inst.rhs(0.0, &xp, &mut fp);
        inst.rhs(0.0, &xm, &mut fm);
        let max_err = (0..n).map(|i| ((fp[i] - fm[i]) / (2.0 * eps) - jv[i]).abs()).fold(0.0, f64::max);
        assert!(max_err < 1e-7, "max |Jv - FD| = {max_err}");
        // A uniform state has zero Laplacian: the rhs equals the reaction term in every cell.
        let mut dx = vec![0.0; n];
        let uniform: Vec<f64> = (0..n).map(|i| if i < 16 { 1.2 } else { 2.5 }).collect();
        inst.rhs(0.0, &uniform, &mut dx);
        assert!((dx[3] - (1.0 - 4.0 * 1.2 + 1.44 * 2.5)).abs() < 1e-13);
        assert!((dx[20] - (3.0 * 1.2 - 1.44 * 2.5)).abs() < 1e-13);
    }
}
