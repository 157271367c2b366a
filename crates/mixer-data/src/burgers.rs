//! 2-D viscous Burgers equation for the velocity `(u, v)` on the unit torus,
//!
//! `du/dt + u du/dx + v du/dy = nu Laplacian u`, `dv/dt + u dv/dx + v dv/dy = nu Laplacian v`,
//!
//! started from smooth random fields. Pseudo-spectral like [`crate::NavierStokes2d`]: products
//! formed on the grid and dealiased by the 2/3 rule, Crank–Nicolson on viscosity, Heun on
//! advection.

use indicatif::ProgressBar;
use mixer_core::{Rng, Seeds};
use ndarray::{Array2, ArrayViewMut4, Axis};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::fft::{Complex64, SpectralGrid};
use crate::field::{
    FieldDir, FieldParameter, FieldSet, check_fft_size, check_frame, check_pde_spec, check_values, pde_dir,
    pick_profile, simulate_runs, substeps,
};
use crate::navier_stokes::gaussian_random_field;

/// The system's name (`mixer generate --system burgers`).
pub const BURGERS: &str = "burgers";

/// One line saying what the Burgers dataset is.
pub const BURGERS_DESCRIPTION: &str =
    "2-D viscous Burgers (u, v) on the unit torus, smooth random initial velocity, pseudo-spectral";

/// Smallest `viscosity * size / amplitude` accepted. Below it shocks are thinner than the
/// dealiased grid resolves and the spectral solution rings: on 32- and 64-point grids, 0.16 to
/// 0.22 gave rows spurious extrema, 0.32 and above stayed clean.
pub const BURGERS_RESOLUTION: f64 = 0.3;

/// Settings of the Burgers dataset (serde, deny_unknown_fields, all fields defaulted).
///
/// Run `r` of every split uses `viscosity[r % viscosity.len()]`; the manifest records the value
/// of each run as `train.viscosity`, `val.viscosity`, `test.viscosity`. Channels: `u`, `v`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BurgersSpec {
    /// Cells per side of the square grid (a power of two).
    pub size: usize,
    /// Viscosities `nu`, assigned to runs in turn.
    pub viscosity: Vec<f64>,
    /// Frames per run: the initial field plus `frames - 1` recorded states.
    pub frames: usize,
    /// Time between frames.
    pub record_dt: f64,
    /// Largest internal time step (the step used divides `record_dt` evenly).
    pub time_step: f64,
    /// Largest initial speed `max |(u, v)|` of every run.
    pub amplitude: f64,
    /// Initial field: shift `tau` of the spectrum `(4 pi^2 |k|^2 + tau^2)^{-alpha}`.
    pub ic_tau: f64,
    /// Initial field: exponent `alpha` of the spectrum (larger is smoother).
    pub ic_alpha: f64,
    /// Training runs.
    pub train_runs: usize,
    /// Validation runs.
    pub val_runs: usize,
    /// Test runs.
    pub test_runs: usize,
}

impl Default for BurgersSpec {
    fn default() -> Self {
        Self::paper()
    }
}

impl BurgersSpec {
    /// The paper profile: 64 x 64, viscosities 1e-2 and 1e-3 at largest initial speed 0.1
    /// (Reynolds numbers `U L / nu` of 10 and 100), 21 frames 0.5 apart (T = 10, one transit
    /// time `L / U`), internal step 5e-3, 1000 / 100 / 100 runs.
    pub fn paper() -> Self {
        Self {
            size: 64,
            viscosity: vec![1e-2, 1e-3],
            frames: 21,
            record_dt: 0.5,
            time_step: 5e-3,
            amplitude: 0.1,
            ic_tau: 5.0,
            ic_alpha: 3.0,
            train_runs: 1000,
            val_runs: 100,
            test_runs: 100,
        }
    }

    /// The quick profile: 32 x 32, the same physics and frames, internal step 1e-2,
    /// 32 / 8 / 8 runs.
    pub fn quick() -> Self {
        Self { size: 32, time_step: 1e-2, train_runs: 32, val_runs: 8, test_runs: 8, ..Self::paper() }
    }

    /// The settings of profile `name` (`quick` or `paper`).
    pub fn profile(name: &str) -> Result<Self, DataError> {
        pick_profile(BURGERS, name, Self::quick, Self::paper)
    }

    /// Internal steps per frame: the fewest whose step is at most `time_step`.
    pub fn substeps(&self) -> usize {
        substeps(self.record_dt, self.time_step)
    }

    /// Checks every setting.
    pub fn check(&self) -> Result<(), DataError> {
        check_fft_size(BURGERS, self.size)?;
        check_values(BURGERS, "viscosity", &self.viscosity, true)?;
        let runs = [self.train_runs, self.val_runs, self.test_runs];
        let positive = [("amplitude", self.amplitude)];
        let non_negative = [("ic_tau", self.ic_tau), ("ic_alpha", self.ic_alpha)];
        check_pde_spec(BURGERS, self.frames, (self.record_dt, self.time_step), &positive, &non_negative, runs)?;
        let smallest = BURGERS_RESOLUTION * self.amplitude / self.size as f64;
        if let Some(nu) = self.viscosity.iter().find(|nu| **nu < smallest) {
            return Err(DataError::spec(
                BURGERS,
                "viscosity",
                format!(
                    "{nu} is below {smallest:.3e} = {BURGERS_RESOLUTION} amplitude / size: the shocks of speed-{} flow \
                     would be thinner than a {}-point grid resolves; raise size or viscosity, or lower amplitude",
                    self.amplitude, self.size
                ),
            ));
        }
        Ok(())
    }
}

/// A pseudo-spectral 2-D Burgers solver (unit torus) with its work buffers. The state is the
/// pair of velocity spectra `(u_hat, v_hat)`, `[n, n]` each (axis 0 is `x`, axis 1 is `y`).
#[derive(Clone, Debug)]
pub struct Burgers2d {
    grid: SpectralGrid,
    viscosity: f64,
    time_step: f64,
    /// `1 - dt nu |k|^2 / 2` and `1 / (1 + dt nu |k|^2 / 2)` per mode.
    explicit: Vec<f64>,
    implicit: Vec<f64>,
    /// Work buffers: velocity, gradients of `u` and `v` on the grid.
    work: [Vec<Complex64>; 3],
    /// Rates and the Heun stage, `[u, v]` each.
    rate0: [Vec<Complex64>; 2],
    rate1: [Vec<Complex64>; 2],
    stage: [Vec<Complex64>; 2],
}

impl Burgers2d {
    /// A solver on an `n x n` grid with viscosity `viscosity` and time step `time_step`; an
    /// error for a grid that is not a power of two or a non-positive viscosity or step.
    pub fn new(n: usize, viscosity: f64, time_step: f64) -> Result<Self, DataError> {
        let grid = SpectralGrid::new(n)?;
        if !(viscosity.is_finite() && viscosity > 0.0) {
            return Err(DataError::spec(BURGERS, "viscosity", format!("{viscosity} is not positive")));
        }
        if !(time_step.is_finite() && time_step > 0.0) {
            return Err(DataError::spec(BURGERS, "time_step", format!("{time_step} is not positive")));
        }
        let half = 0.5 * time_step * viscosity;
        let explicit = grid.laplacian.iter().map(|l| 1.0 - half * l).collect();
        let implicit = grid.laplacian.iter().map(|l| 1.0 / (1.0 + half * l)).collect();
        let z = vec![Complex64::new(0.0, 0.0); n * n];
        let pair = || [z.clone(), z.clone()];
        Ok(Self {
            grid,
            viscosity,
            time_step,
            explicit,
            implicit,
            work: [z.clone(), z.clone(), z.clone()],
            rate0: pair(),
            rate1: pair(),
            stage: pair(),
        })
    }

    /// The wavenumbers and transforms of the grid.
    pub fn grid(&self) -> &SpectralGrid {
        &self.grid
    }

    /// The viscosity `nu`.
    pub fn viscosity(&self) -> f64 {
        self.viscosity
    }

    /// `rate = -dealiased FFT((u . grad) u)` for the spectra `w = [u_hat, v_hat]`.
    fn rate(&mut self, w: &[Vec<Complex64>; 2], rate: &mut [Vec<Complex64>; 2]) {
        let n = self.grid.n;
        let d = &self.grid.derivative;
        let [vel, grad_u, grad_v] = &mut self.work;
        for p in 0..n {
            for q in 0..n {
                let idx = p * n + q;
                let (u, v) = (w[0][idx], w[1][idx]);
                // a_x + i a_y = (i kx - ky) a_hat for a real field a
                let g = Complex64::new(-d[q], d[p]);
                vel[idx] = u + Complex64::i() * v;
                grad_u[idx] = u * g;
                grad_v[idx] = v * g;
            }
        }
        for buf in [&mut *vel, &mut *grad_u, &mut *grad_v] {
            self.grid.inverse_slice(buf);
        }
        for idx in 0..n * n {
            let (u, v) = (vel[idx].re, vel[idx].im);
            let (gu, gv) = (grad_u[idx], grad_v[idx]);
            vel[idx] = Complex64::new(u * gu.re + v * gu.im, u * gv.re + v * gv.im);
        }
        self.grid.forward_slice(vel);
        // split the transform of (a + i b), a and b real: a_hat(k) = (Z(k) + conj Z(-k)) / 2,
        // b_hat(k) = (Z(k) - conj Z(-k)) / (2 i)
        for p in 0..n {
            for q in 0..n {
                let idx = p * n + q;
                if !self.grid.keep[idx] {
                    rate[0][idx] = Complex64::new(0.0, 0.0);
                    rate[1][idx] = Complex64::new(0.0, 0.0);
                    continue;
                }
                let (z, zc) = (vel[idx], vel[((n - p) % n) * n + (n - q) % n].conj());
                rate[0][idx] = -(z + zc) * 0.5;
                rate[1][idx] = -(z - zc) * Complex64::new(0.0, -0.5);
            }
        }
    }

    /// One step of the spectra: Heun on advection, Crank–Nicolson on viscosity.
    fn step_spectra(&mut self, w: &mut [Vec<Complex64>; 2]) {
        let dt = self.time_step;
        let mut rate0 = std::mem::take(&mut self.rate0);
        let mut rate1 = std::mem::take(&mut self.rate1);
        let mut stage = std::mem::take(&mut self.stage);
        self.rate(w, &mut rate0);
        for c in 0..2 {
            for idx in 0..w[c].len() {
                stage[c][idx] = (w[c][idx] * self.explicit[idx] + rate0[c][idx] * dt) * self.implicit[idx];
            }
        }
        self.rate(&stage, &mut rate1);
        for c in 0..2 {
            for idx in 0..w[c].len() {
                let r = (rate0[c][idx] + rate1[c][idx]) * (0.5 * dt);
                w[c][idx] = (w[c][idx] * self.explicit[idx] + r) * self.implicit[idx];
            }
        }
        (self.rate0, self.rate1, self.stage) = (rate0, rate1, stage);
    }

    /// Advances the velocity `(u, v)` (`[n, n]` each, on the grid) by `steps` time steps.
    pub fn advance(&mut self, u: &mut Array2<f64>, v: &mut Array2<f64>, steps: usize) -> Result<(), DataError> {
        let mut w = [self.flat_spectrum(u)?, self.flat_spectrum(v)?];
        for _ in 0..steps {
            self.step_spectra(&mut w);
        }
        let [wu, wv] = &mut w;
        for (field, spectrum) in [(u, wu), (v, wv)] {
            self.grid.inverse_slice(spectrum);
            field.iter_mut().zip(spectrum.iter()).for_each(|(d, s)| *d = s.re);
        }
        Ok(())
    }

    fn flat_spectrum(&self, a: &Array2<f64>) -> Result<Vec<Complex64>, DataError> {
        let n = self.grid.n;
        if a.dim() != (n, n) {
            return Err(mixer_core::Error::shape("Burgers velocity component", (n, n), a.dim()).into());
        }
        Ok(self.grid.spectrum(a)?.iter().copied().collect())
    }
}

/// Smooth random initial velocity for `spec`: two independent Gaussian random fields with
/// spectrum `(4 pi^2 |k|^2 + tau^2)^{-alpha}`, scaled together so that the largest speed is
/// `spec.amplitude`.
fn initial_velocity(spec: &BurgersSpec, grid: &SpectralGrid, rng: &mut Rng) -> Result<[Array2<f64>; 2], DataError> {
    let u = gaussian_random_field(grid, 1.0, spec.ic_tau, spec.ic_alpha, rng)?;
    let v = gaussian_random_field(grid, 1.0, spec.ic_tau, spec.ic_alpha, rng)?;
    let top = u.iter().zip(&v).map(|(a, b)| a.hypot(*b)).fold(0.0, f64::max);
    let scale = if top > 0.0 { spec.amplitude / top } else { 0.0 };
    Ok([u * scale, v * scale])
}

/// Simulates one run into `out` (`[frames, n, n, 2]`).
fn simulate_run(
    spec: &BurgersSpec,
    viscosity: f64,
    rng: &mut Rng,
    mut out: ArrayViewMut4<f32>,
    (split, run): (&str, usize),
) -> Result<(), DataError> {
    let substeps = spec.substeps();
    let mut solver = Burgers2d::new(spec.size, viscosity, spec.record_dt / substeps as f64)?;
    let [mut u, mut v] = initial_velocity(spec, &solver.grid, rng)?;
    for f in 0..spec.frames {
        if f > 0 {
            solver.advance(&mut u, &mut v, substeps)?;
        }
        check_frame(BURGERS, split, run, f as f64 * spec.record_dt, "time_step", u.iter().chain(v.iter()))?;
        let mut frame = out.index_axis_mut(Axis(0), f);
        for ((i, j, c), dst) in frame.indexed_iter_mut() {
            *dst = if c == 0 { u[[i, j]] } else { v[[i, j]] } as f32;
        }
    }
    Ok(())
}

/// Generates the three splits (`[runs, frames, size, size, 2]`, channels `u`, `v`) for `spec`
/// and `seed`: run `r` of split `s` draws its initial velocity from stream `burgers/<s>/<r>` and
/// uses viscosity `spec.viscosity[r % len]`; same spec and seed, same values. `progress` ticks
/// once per run. A run that blows up is an error naming it.
pub fn generate_burgers(spec: &BurgersSpec, seed: u64, progress: &ProgressBar) -> Result<FieldDir, DataError> {
    spec.check()?;
    let seeds = Seeds::new(seed);
    let _span = tracing::info_span!("burgers", seed).entered();
    let n = spec.size;
    progress.set_length((spec.train_runs + spec.val_runs + spec.test_runs) as u64);
    let split = |name: &str, runs: usize| -> Result<FieldSet, DataError> {
        tracing::info!(split = name, runs, substeps = spec.substeps(), "generating split");
        let fields = simulate_runs(runs, spec.frames, (n, n), 2, progress, |r, view| {
            let mut rng = seeds.stream(&format!("{BURGERS}/{name}/{r}"));
            simulate_run(spec, spec.viscosity[r % spec.viscosity.len()], &mut rng, view, (name, r))
        })?;
        Ok(FieldSet { fields, dt: spec.record_dt })
    };
    let (train, val, test) =
        (split("train", spec.train_runs)?, split("val", spec.val_runs)?, split("test", spec.test_runs)?);
    let parameters = vec![
        FieldParameter { name: "viscosity".into(), values: spec.viscosity.clone() },
        FieldParameter { name: "amplitude".into(), values: vec![spec.amplitude] },
        FieldParameter { name: "time_step".into(), values: vec![spec.record_dt / spec.substeps() as f64] },
        FieldParameter { name: "ic_tau_alpha".into(), values: vec![spec.ic_tau, spec.ic_alpha] },
    ];
    let system = (BURGERS, BURGERS_DESCRIPTION);
    Ok(pde_dir(system, seed, parameters, ("viscosity", &spec.viscosity), [train, val, test]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// The Cole–Hopf solution `(u, v) = -2 nu grad ln phi` with
    /// `phi = a + exp(-4 pi^2 nu t) (cos 2 pi x + cos 2 pi y)`, a solution of the heat equation.
    fn cole_hopf(n: usize, nu: f64, a: f64, t: f64) -> [Array2<f64>; 2] {
        let e = (-4.0 * PI * PI * nu * t).exp();
        let at = |i: usize, j: usize| {
            let (x, y) = (2.0 * PI * i as f64 / n as f64, 2.0 * PI * j as f64 / n as f64);
            let phi = a + e * (x.cos() + y.cos());
            (4.0 * PI * nu * e * x.sin() / phi, 4.0 * PI * nu * e * y.sin() / phi)
        };
        [Array2::from_shape_fn((n, n), |(i, j)| at(i, j).0), Array2::from_shape_fn((n, n), |(i, j)| at(i, j).1)]
    }

    fn error_at(n: usize, nu: f64, t: f64, steps: usize) -> f64 {
        let a = 4.0;
        let [mut u, mut v] = cole_hopf(n, nu, a, 0.0);
        let mut solver = Burgers2d::new(n, nu, t / steps as f64).unwrap();
        solver.advance(&mut u, &mut v, steps).unwrap();
        let [ue, ve] = cole_hopf(n, nu, a, t);
        let err = |x: &Array2<f64>, y: &Array2<f64>| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        err(&u, &ue).max(err(&v, &ve))
    }

    fn tiny() -> BurgersSpec {
        BurgersSpec {
            size: 8,
            viscosity: vec![2e-2, 5e-3],
            frames: 3,
            record_dt: 0.5,
            time_step: 5e-2,
            train_runs: 3,
            val_runs: 1,
            test_runs: 2,
            ..BurgersSpec::quick()
        }
    }

    #[test]
    fn matches_the_cole_hopf_solution_at_second_order_in_time() {
        let (n, nu, t) = (32, 0.05, 0.4);
        let errors: Vec<f64> = [20, 40, 80].into_iter().map(|steps| error_at(n, nu, t, steps)).collect();
        let speed = 4.0 * PI * nu;
        assert!(errors[2] < 2e-5 * speed, "{errors:?}");
        for pair in errors.windows(2) {
            let order = (pair[0] / pair[1]).log2();
            assert!((order - 2.0).abs() < 0.15, "order {order} from {errors:?}");
        }
    }

    #[test]
    fn generation_is_deterministic_and_records_each_run_viscosity() {
        let spec = tiny();
        let a = generate_burgers(&spec, 2, &ProgressBar::hidden()).unwrap();
        assert_eq!(a, generate_burgers(&spec, 2, &ProgressBar::hidden()).unwrap());
        assert_eq!(a.train.fields.dim(), (3, 3, 8, 8, 2));
        assert_eq!(a.manifest.run_values("train", "viscosity"), Some(&[2e-2, 5e-3, 2e-2][..]));
        a.check().unwrap();
        // every run starts at the requested largest speed
        for r in 0..3 {
            let f = &a.train.fields;
            let top = (0..64)
                .map(|c| f64::from(f[[r, 0, c / 8, c % 8, 0]]).hypot(f64::from(f[[r, 0, c / 8, c % 8, 1]])))
                .fold(0.0, f64::max);
            assert!((top - 0.1).abs() < 1e-7, "run {r}: {top}");
        }
        assert_ne!(a.train.fields, generate_burgers(&spec, 3, &ProgressBar::hidden()).unwrap().train.fields);
    }

    #[test]
    fn bad_settings_are_errors() {
        let cases: [(&str, BurgersSpec); 8] = [
            ("size", BurgersSpec { size: 10, ..tiny() }),
            ("viscosity", BurgersSpec { viscosity: vec![-1e-3], ..tiny() }),
            // 0.3 * 0.1 / 32 = 9.4e-4: 1e-3 is resolved on 32 cells, 7e-4 is not
            ("viscosity", BurgersSpec { viscosity: vec![1e-2, 7e-4], size: 32, ..tiny() }),
            ("viscosity", BurgersSpec { amplitude: 1.0, ..BurgersSpec::quick() }),
            ("amplitude", BurgersSpec { amplitude: 0.0, ..tiny() }),
            ("time_step", BurgersSpec { time_step: f64::NAN, ..tiny() }),
            ("ic_tau", BurgersSpec { ic_tau: -2.0, ..tiny() }),
            ("test_runs", BurgersSpec { test_runs: 0, ..tiny() }),
        ];
        for (field, spec) in cases {
            let err = spec.check().unwrap_err().to_string();
            assert!(err.contains(&format!("field `{field}`")), "{field}: {err}");
        }
        assert!(BurgersSpec::profile("x").is_err());
        BurgersSpec { viscosity: vec![1e-3], size: 32, ..tiny() }.check().unwrap();
        let err = BurgersSpec { amplitude: 1.0, ..BurgersSpec::quick() }.check().unwrap_err().to_string();
        assert!(err.contains("thinner than a 32-point grid resolves"), "{err}");
        assert!(Burgers2d::new(6, 1e-2, 1e-3).unwrap_err().to_string().contains("power of two"));
    }

    #[test]
    fn a_blow_up_is_an_error_naming_the_run() {
        // a step far past the advective limit (speed 10, 8 cells, step 0.5)
        let spec =
            BurgersSpec { amplitude: 10.0, viscosity: vec![1.0], time_step: 0.5, record_dt: 0.5, frames: 6, ..tiny() };
        let err = generate_burgers(&spec, 0, &ProgressBar::hidden()).unwrap_err().to_string();
        assert!(err.contains("blew up") && err.contains("time_step"), "{err}");
    }

    #[test]
    fn profiles() {
        let (q, p) = (BurgersSpec::quick(), BurgersSpec::paper());
        q.check().unwrap();
        p.check().unwrap();
        assert_eq!((q.size, p.size), (32, 64));
        assert_eq!((q.substeps(), p.substeps()), (50, 100));
    }
}
