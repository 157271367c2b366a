//! The 2-D diffusion–reaction system of PDEBench (Takamoto et al., "PDEBench: An Extensive
//! Benchmark for Scientific Machine Learning", NeurIPS 2022 Datasets and Benchmarks): two
//! species with FitzHugh–Nagumo kinetics on `[-1, 1]^2` with no-flux boundaries,
//!
//! `du/dt = D_u Laplacian u + u - u^3 - k - v`, `dv/dt = D_v Laplacian v + u - v`,
//!
//! started from i.i.d. standard normal cell values. Cell-centred finite differences (5-point
//! Laplacian, mirrored ghost cells for the zero normal derivative, which conserve each species'
//! total under pure diffusion) and classical RK4 in time.

use indicatif::ProgressBar;
use mixer_core::{Rng, Seeds};
use ndarray::{Array2, ArrayViewMut4, Axis};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::field::{
    FieldDir, FieldParameter, FieldSet, check_frame, check_pde_spec, check_values, pde_dir, pick_profile,
    simulate_runs, substeps,
};

/// The system's name (`mixer generate --system diffusion-reaction`).
pub const DIFFUSION_REACTION: &str = "diffusion-reaction";

/// One line saying what the diffusion–reaction dataset is.
pub const DIFFUSION_REACTION_DESCRIPTION: &str = "2-D FitzHugh–Nagumo diffusion–reaction (u, v) on [-1, 1]^2, no-flux \
     boundary, finite differences and RK4 (PDEBench, Takamoto et al., 2022)";

/// Largest `time_step * 8 D / dx^2` allowed: RK4's stability interval on the negative real axis
/// is about 2.79; the margin leaves room for the reaction's own rates.
const DIFFUSION_STABILITY: f64 = 2.0;

/// Settings of the diffusion–reaction dataset (serde, deny_unknown_fields, all fields defaulted).
///
/// Run `r` of every split uses `k[r % k.len()]`; the manifest records the value of each run as
/// `train.k`, `val.k`, `test.k`. Channels: `u`, `v`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionReactionSpec {
    /// Cells per side of the square grid on `[-1, 1]^2`.
    pub size: usize,
    /// Diffusion coefficient of `u` (PDEBench: 1e-3).
    pub du: f64,
    /// Diffusion coefficient of `v` (PDEBench: 5e-3).
    pub dv: f64,
    /// Reaction constants `k`, assigned to runs in turn (PDEBench: 5e-3).
    pub k: Vec<f64>,
    /// Frames per run: the initial field plus `frames - 1` recorded states.
    pub frames: usize,
    /// Time between frames.
    pub record_dt: f64,
    /// Largest internal time step (the step used divides `record_dt` evenly).
    pub time_step: f64,
    /// Training runs.
    pub train_runs: usize,
    /// Validation runs.
    pub val_runs: usize,
    /// Test runs.
    pub test_runs: usize,
}

impl Default for DiffusionReactionSpec {
    fn default() -> Self {
        Self::paper()
    }
}

impl DiffusionReactionSpec {
    /// The paper profile: 64 x 64, `D_u = 1e-3`, `D_v = 5e-3`, `k` in {5e-3, 5e-2}, 101 frames
    /// 0.05 apart (T = 5, as PDEBench), internal step 5e-3, 1000 / 100 / 100 runs.
    pub fn paper() -> Self {
        Self {
            size: 64,
            du: 1e-3,
            dv: 5e-3,
            k: vec![5e-3, 5e-2],
            frames: 101,
            record_dt: 0.05,
            time_step: 5e-3,
            train_runs: 1000,
            val_runs: 100,
            test_runs: 100,
        }
    }

    /// The quick profile: 32 x 32, the same physics and frames, internal step 1e-2, 32 / 8 / 8 runs.
    pub fn quick() -> Self {
        Self { size: 32, time_step: 1e-2, train_runs: 32, val_runs: 8, test_runs: 8, ..Self::paper() }
    }

    /// The settings of profile `name` (`quick` or `paper`).
    pub fn profile(name: &str) -> Result<Self, DataError> {
        pick_profile(DIFFUSION_REACTION, name, Self::quick, Self::paper)
    }

    /// Internal steps per frame: the fewest whose step is at most `time_step`.
    pub fn substeps(&self) -> usize {
        substeps(self.record_dt, self.time_step)
    }

    /// Checks every setting, the time step against the explicit diffusion limit included.
    pub fn check(&self) -> Result<(), DataError> {
        if self.size < 3 {
            return Err(DataError::GridTooSmall { rows: self.size, cols: self.size });
        }
        check_values(DIFFUSION_REACTION, "k", &self.k, false)?;
        let runs = [self.train_runs, self.val_runs, self.test_runs];
        let non_negative = [("du", self.du), ("dv", self.dv)];
        let timing = (self.record_dt, self.time_step);
        check_pde_spec(DIFFUSION_REACTION, self.frames, timing, &[], &non_negative, runs)?;
        let dx = 2.0 / self.size as f64;
        let step = self.record_dt / self.substeps() as f64;
        let rate = 8.0 * self.du.max(self.dv) / (dx * dx);
        if step * rate > DIFFUSION_STABILITY {
            return Err(DataError::spec(
                DIFFUSION_REACTION,
                "time_step",
                format!(
                    "{step} exceeds the explicit diffusion limit {:.3e} of a {}-cell grid (RK4, 8 D / dx^2 = {rate:.3e})",
                    DIFFUSION_STABILITY / rate,
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

/// The diffusion–reaction right-hand side on an `n x n` cell-centred grid of `[-1, 1]^2` with its
/// RK4 stepper and work buffers. The state is `[2, n, n]` flattened: `u` then `v`, row-major.
#[derive(Clone, Debug)]
pub struct DiffusionReaction2d {
    n: usize,
    du: f64,
    dv: f64,
    k: f64,
    reaction: bool,
    time_step: f64,
    stages: [Vec<f64>; 4],
    tmp: Vec<f64>,
}

impl DiffusionReaction2d {
    /// A stepper for diffusion `(du, dv)`, reaction constant `k` and time step `time_step` on an
    /// `n x n` grid; an error for a grid under 3 cells a side or a non-positive step.
    pub fn new(n: usize, du: f64, dv: f64, k: f64, time_step: f64) -> Result<Self, DataError> {
        if n < 3 {
            return Err(DataError::GridTooSmall { rows: n, cols: n });
        }
        if !(time_step.is_finite() && time_step > 0.0) {
            return Err(DataError::spec(DIFFUSION_REACTION, "time_step", format!("{time_step} is not positive")));
        }
        let zeros = vec![0.0; 2 * n * n];
        Ok(Self {
            n,
            du,
            dv,
            k,
            reaction: true,
            time_step,
            stages: [zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()],
            tmp: zeros,
        })
    }

    /// The same stepper with the reaction terms switched off (pure diffusion, for checks).
    pub fn without_reaction(mut self) -> Self {
        self.reaction = false;
        self
    }

    /// Cell width `2 / n`.
    pub fn dx(&self) -> f64 {
        2.0 / self.n as f64
    }

    /// Cell centre coordinate of index `i`: `-1 + (i + 1/2) dx`.
    pub fn coordinate(&self, i: usize) -> f64 {
        -1.0 + (i as f64 + 0.5) * self.dx()
    }

    /// Time derivative of the flat state `y` (`[2, n, n]`) into `out`.
    fn rhs(&self, y: &[f64], out: &mut [f64]) {
        let n = self.n;
        let cells = n * n;
        let inv_dx2 = 1.0 / (self.dx() * self.dx());
        let (u, v) = y.split_at(cells);
        let (fu, fv) = out.split_at_mut(cells);
        for (field, coef, dst) in [(u, self.du, &mut *fu), (v, self.dv, &mut *fv)] {
            for i in 0..n {
                let up = if i > 0 { i - 1 } else { i };
                let down = if i + 1 < n { i + 1 } else { i };
                for j in 0..n {
                    let left = if j > 0 { j - 1 } else { j };
                    let right = if j + 1 < n { j + 1 } else { j };
                    let c = field[i * n + j];
                    let sum = field[up * n + j] + field[down * n + j] + field[i * n + left] + field[i * n + right];
                    dst[i * n + j] = coef * (sum - 4.0 * c) * inv_dx2;
                }
            }
        }
        if self.reaction {
            for idx in 0..cells {
                let (a, b) = (u[idx], v[idx]);
                fu[idx] += a - a * a * a - self.k - b;
                fv[idx] += a - b;
            }
        }
    }

    /// One classical RK4 step of the flat state.
    fn step_slice(&mut self, y: &mut [f64]) {
        let h = self.time_step;
        let [mut k1, mut k2, mut k3, mut k4] = std::mem::take(&mut self.stages);
        let mut tmp = std::mem::take(&mut self.tmp);
        self.rhs(y, &mut k1);
        tmp.iter_mut().zip(y.iter().zip(&k1)).for_each(|(t, (a, b))| *t = a + 0.5 * h * b);
        self.rhs(&tmp, &mut k2);
        tmp.iter_mut().zip(y.iter().zip(&k2)).for_each(|(t, (a, b))| *t = a + 0.5 * h * b);
        self.rhs(&tmp, &mut k3);
        tmp.iter_mut().zip(y.iter().zip(&k3)).for_each(|(t, (a, b))| *t = a + h * b);
        self.rhs(&tmp, &mut k4);
        for (idx, v) in y.iter_mut().enumerate() {
            *v += h / 6.0 * (k1[idx] + 2.0 * (k2[idx] + k3[idx]) + k4[idx]);
        }
        self.stages = [k1, k2, k3, k4];
        self.tmp = tmp;
    }

    /// Advances `u` and `v` (`[n, n]` each) by `steps` RK4 steps.
    pub fn advance(&mut self, u: &mut Array2<f64>, v: &mut Array2<f64>, steps: usize) -> Result<(), DataError> {
        let n = self.n;
        for (what, a) in [("u", &*u), ("v", &*v)] {
            if a.dim() != (n, n) {
                return Err(
                    mixer_core::Error::shape(format!("diffusion–reaction field `{what}`"), (n, n), a.dim()).into()
                );
            }
        }
        let mut y: Vec<f64> = u.iter().chain(v.iter()).copied().collect();
        for _ in 0..steps {
            self.step_slice(&mut y);
        }
        let (a, b) = y.split_at(n * n);
        u.iter_mut().zip(a).for_each(|(d, s)| *d = *s);
        v.iter_mut().zip(b).for_each(|(d, s)| *d = *s);
        Ok(())
    }
}

/// Simulates one run into `out` (`[frames, n, n, 2]`).
fn simulate_run(
    spec: &DiffusionReactionSpec,
    k: f64,
    rng: &mut Rng,
    mut out: ArrayViewMut4<f32>,
    (split, run): (&str, usize),
) -> Result<(), DataError> {
    let n = spec.size;
    let substeps = spec.substeps();
    let mut solver = DiffusionReaction2d::new(n, spec.du, spec.dv, k, spec.record_dt / substeps as f64)?;
    let mut y: Vec<f64> = (0..2 * n * n).map(|_| StandardNormal.sample(rng)).collect();
    for f in 0..spec.frames {
        if f > 0 {
            for _ in 0..substeps {
                solver.step_slice(&mut y);
            }
        }
        check_frame(DIFFUSION_REACTION, split, run, f as f64 * spec.record_dt, "time_step", y.iter())?;
        let (u, v) = y.split_at(n * n);
        let mut frame = out.index_axis_mut(Axis(0), f);
        for ((i, j, c), dst) in frame.indexed_iter_mut() {
            *dst = if c == 0 { u[i * n + j] } else { v[i * n + j] } as f32;
        }
    }
    Ok(())
}

/// Generates the three splits (`[runs, frames, size, size, 2]`, channels `u`, `v`) for `spec`
/// and `seed`: run `r` of split `s` draws its initial cells from stream
/// `diffusion-reaction/<s>/<r>` and uses `spec.k[r % len]`; same spec and seed, same values.
/// `progress` ticks once per run. A run that blows up is an error naming it.
pub fn generate_diffusion_reaction(
    spec: &DiffusionReactionSpec,
    seed: u64,
    progress: &ProgressBar,
) -> Result<FieldDir, DataError> {
    spec.check()?;
    let seeds = Seeds::new(seed);
    let _span = tracing::info_span!("diffusion-reaction", seed).entered();
    let n = spec.size;
    progress.set_length((spec.train_runs + spec.val_runs + spec.test_runs) as u64);
    let split = |name: &str, runs: usize| -> Result<FieldSet, DataError> {
        tracing::info!(split = name, runs, substeps = spec.substeps(), "generating split");
        let fields = simulate_runs(runs, spec.frames, (n, n), 2, progress, |r, view| {
            let mut rng = seeds.stream(&format!("{DIFFUSION_REACTION}/{name}/{r}"));
            simulate_run(spec, spec.k[r % spec.k.len()], &mut rng, view, (name, r))
        })?;
        Ok(FieldSet { fields, dt: spec.record_dt })
    };
    let (train, val, test) =
        (split("train", spec.train_runs)?, split("val", spec.val_runs)?, split("test", spec.test_runs)?);
    let parameters = vec![
        FieldParameter { name: "k".into(), values: spec.k.clone() },
        FieldParameter { name: "du".into(), values: vec![spec.du] },
        FieldParameter { name: "dv".into(), values: vec![spec.dv] },
        FieldParameter { name: "time_step".into(), values: vec![spec.record_dt / spec.substeps() as f64] },
    ];
    let system = (DIFFUSION_REACTION, DIFFUSION_REACTION_DESCRIPTION);
    Ok(pde_dir(system, seed, parameters, ("k", &spec.k), [train, val, test]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn tiny() -> DiffusionReactionSpec {
        DiffusionReactionSpec {
            size: 8,
            frames: 4,
            train_runs: 3,
            val_runs: 1,
            test_runs: 2,
            ..DiffusionReactionSpec::quick()
        }
    }

    /// `cos(pi m (x + 1) / 2)` at the cell centres: a Neumann eigenfunction of `[-1, 1]`.
    fn cosine(solver: &DiffusionReaction2d, n: usize, (mx, my): (usize, usize)) -> Array2<f64> {
        Array2::from_shape_fn((n, n), |(i, j)| {
            let (x, y) = (solver.coordinate(i), solver.coordinate(j));
            (PI * mx as f64 * (x + 1.0) / 2.0).cos() * (PI * my as f64 * (y + 1.0) / 2.0).cos()
        })
    }

    #[test]
    fn without_reaction_a_cosine_mode_decays_at_the_neumann_rate_to_second_order() {
        // the discrete mode decays at D (4 / dx^2) (sin^2(theta_x / 2) + sin^2(theta_y / 2)),
        // theta = pi m / n; the PDE's rate is D pi^2 (mx^2 + my^2) / 4; the gap shrinks as dx^2
        let (du, dv, t) = (0.05, 0.02, 0.5);
        let (mu, mv) = ((1, 2), (3, 0));
        let mut gaps = Vec::new();
        for n in [8, 16, 32] {
            let steps = 50;
            let mut solver = DiffusionReaction2d::new(n, du, dv, 0.0, t / steps as f64).unwrap().without_reaction();
            let (u0, v0) = (cosine(&solver, n, mu), cosine(&solver, n, mv));
            let (mut u, mut v) = (u0.clone(), v0.clone());
            solver.advance(&mut u, &mut v, steps).unwrap();
            let dx = solver.dx();
            let discrete = |(mx, my): (usize, usize)| {
                let s = |m: usize| (PI * m as f64 / n as f64 / 2.0).sin().powi(2);
                4.0 / (dx * dx) * (s(mx) + s(my))
            };
            for (d, m, start, end) in [(du, mu, &u0, &u), (dv, mv, &v0, &v)] {
                let want = (-d * discrete(m) * t).exp();
                let err = end.iter().zip(start).map(|(a, b)| (a - b * want).abs()).fold(0.0, f64::max);
                assert!(err < 1e-9, "n = {n}: {err:e}");
            }
            // observed rate of u from the simulation against the PDE's rate
            let (i, j) = (0, 0);
            let rate = -(u[[i, j]] / u0[[i, j]]).ln() / t;
            let exact = du * PI * PI * ((mu.0 * mu.0 + mu.1 * mu.1) as f64) / 4.0;
            gaps.push((rate - exact).abs() / exact);
        }
        for pair in gaps.windows(2) {
            let order = (pair[0] / pair[1]).log2();
            assert!((order - 2.0).abs() < 0.1, "order {order} from {gaps:?}");
        }
    }

    #[test]
    fn pure_diffusion_conserves_each_species_total() {
        let n = 12;
        let mut rng = Seeds::new(3).stream("t");
        let mut u = Array2::from_shape_simple_fn((n, n), || StandardNormal.sample(&mut rng));
        let mut v = Array2::from_shape_simple_fn((n, n), || StandardNormal.sample(&mut rng));
        let (su, sv) = (u.sum(), v.sum());
        let mut solver = DiffusionReaction2d::new(n, 1e-3, 5e-3, 5e-3, 0.01).unwrap().without_reaction();
        solver.advance(&mut u, &mut v, 100).unwrap();
        assert!((u.sum() - su).abs() < 1e-11 && (v.sum() - sv).abs() < 1e-11, "{} {}", u.sum() - su, v.sum() - sv);
    }

    #[test]
    fn a_uniform_state_follows_the_fitzhugh_nagumo_kinetics() {
        // no-flux boundaries keep a uniform state uniform; it then solves the ODE, here against
        // RK4 with a 100 times smaller step
        let (n, k, t) = (6, 5e-3, 2.0f64);
        let mut solver = DiffusionReaction2d::new(n, 1e-3, 5e-3, k, 0.01).unwrap();
        let (mut u, mut v) = (Array2::from_elem((n, n), 0.8), Array2::from_elem((n, n), -0.3));
        solver.advance(&mut u, &mut v, 200).unwrap();
        let f = |a: f64, b: f64| (a - a * a * a - k - b, a - b);
        let (mut a, mut b, h) = (0.8, -0.3, 1e-4);
        for _ in 0..(t / h).round() as usize {
            let k1 = f(a, b);
            let k2 = f(a + 0.5 * h * k1.0, b + 0.5 * h * k1.1);
            let k3 = f(a + 0.5 * h * k2.0, b + 0.5 * h * k2.1);
            let k4 = f(a + h * k3.0, b + h * k3.1);
            a += h / 6.0 * (k1.0 + 2.0 * k2.0 + 2.0 * k3.0 + k4.0);
            b += h / 6.0 * (k1.1 + 2.0 * k2.1 + 2.0 * k3.1 + k4.1);
        }
        assert!(u.iter().all(|x| (x - a).abs() < 1e-8), "{} vs {a}", u[[0, 0]]);
        assert!(v.iter().all(|x| (x - b).abs() < 1e-8), "{} vs {b}", v[[0, 0]]);
        assert!((a - 0.8).abs() > 0.1, "the kinetics moved the state");
    }

    #[test]
    fn generation_is_deterministic_and_records_each_run_k() {
        let spec = tiny();
        let a = generate_diffusion_reaction(&spec, 4, &ProgressBar::hidden()).unwrap();
        assert_eq!(a, generate_diffusion_reaction(&spec, 4, &ProgressBar::hidden()).unwrap());
        assert_eq!(a.train.fields.dim(), (3, 4, 8, 8, 2));
        assert_eq!(a.manifest.run_values("train", "k"), Some(&[5e-3, 5e-2, 5e-3][..]));
        assert_eq!(a.manifest.run_values("test", "k"), Some(&[5e-3, 5e-2][..]));
        a.check().unwrap();
        // the initial cells are standard normal; diffusion and the cubic term then shrink the spread
        let f = &a.train.fields;
        let spread = |frame: usize| f.slice(ndarray::s![.., frame, .., .., ..]).iter().map(|x| x * x).sum::<f32>();
        assert!(spread(3) < spread(0));
        assert_ne!(a.train.fields, generate_diffusion_reaction(&spec, 5, &ProgressBar::hidden()).unwrap().train.fields);
    }

    #[test]
    fn bad_settings_are_errors() {
        let cases: [(&str, DiffusionReactionSpec); 7] = [
            ("du", DiffusionReactionSpec { du: -1.0, ..tiny() }),
            ("k", DiffusionReactionSpec { k: vec![], ..tiny() }),
            ("k", DiffusionReactionSpec { k: vec![f64::NAN], ..tiny() }),
            ("time_step", DiffusionReactionSpec { time_step: 0.0, ..tiny() }),
            // 8 D / dx^2 = 8 * 5e-3 * 256^2 / 4 = 655: a step of 1e-2 is far past the limit
            ("time_step", DiffusionReactionSpec { size: 256, ..tiny() }),
            ("record_dt", DiffusionReactionSpec { record_dt: -0.1, ..tiny() }),
            ("val_runs", DiffusionReactionSpec { val_runs: 0, ..tiny() }),
        ];
        for (field, spec) in cases {
            let err = spec.check().unwrap_err().to_string();
            assert!(err.contains(&format!("field `{field}`")), "{field}: {err}");
        }
        assert!(matches!(DiffusionReactionSpec { size: 2, ..tiny() }.check(), Err(DataError::GridTooSmall { .. })));
        assert!(matches!(DiffusionReactionSpec { frames: 1, ..tiny() }.check(), Err(DataError::TooFewFrames { .. })));
        assert!(DiffusionReactionSpec::profile("fast").is_err());
    }

    #[test]
    fn a_blow_up_is_an_error_naming_the_run() {
        // a step far past the cubic term's stability limit for standard normal starts
        let spec = DiffusionReactionSpec { time_step: 1.0, record_dt: 1.0, du: 0.0, dv: 0.0, ..tiny() };
        let err = generate_diffusion_reaction(&spec, 0, &ProgressBar::hidden()).unwrap_err().to_string();
        assert!(err.contains("blew up") && err.contains("time_step"), "{err}");
    }

    #[test]
    fn profiles() {
        let (q, p) = (DiffusionReactionSpec::quick(), DiffusionReactionSpec::paper());
        q.check().unwrap();
        p.check().unwrap();
        assert_eq!((q.size, p.size, q.frames), (32, 64, 101));
        assert_eq!((q.substeps(), p.substeps()), (5, 10));
    }
}
