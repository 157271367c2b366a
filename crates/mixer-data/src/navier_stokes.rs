//! 2-D incompressible Navier–Stokes in vorticity form on the unit torus, as in the Fourier
//! neural operator benchmark (Li et al., "Fourier Neural Operator for Parametric Partial
//! Differential Equations", ICLR 2021):
//!
//! `dw/dt + u . grad w = nu Laplacian w + f`, `u = (d psi / dy, -d psi / dx)`, `-Laplacian psi = w`,
//! with `f(x, y) = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y)))` and initial vorticity drawn from a
//! zero-mean Gaussian random field. Pseudo-spectral: the stream function and velocity come from
//! the spectrum, the advection term is formed on the grid and dealiased by the 2/3 rule; each
//! step is Crank–Nicolson on the viscous term and Heun on advection plus forcing.

use indicatif::ProgressBar;
use mixer_core::{Rng, Seeds};
use ndarray::{Array2, ArrayViewMut4};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::fft::{Complex64, SpectralGrid};
use crate::field::{
    FieldDir, FieldParameter, FieldSet, check_fft_size, check_frame, check_pde_spec, check_values, pde_dir,
    pick_profile, simulate_runs, substeps,
};

/// The system's name (`mixer generate --system navier-stokes`).
pub const NAVIER_STOKES: &str = "navier-stokes";

/// One line saying what the Navier–Stokes dataset is.
pub const NAVIER_STOKES_DESCRIPTION: &str = "2-D incompressible Navier–Stokes, vorticity form on the unit torus, FNO forcing, pseudo-spectral (Li et al., 2021)";

/// Settings of the Navier–Stokes dataset (serde, deny_unknown_fields, all fields defaulted).
///
/// Run `r` of every split uses `viscosity[r % viscosity.len()]`; the manifest records the value
/// of each run as `train.viscosity`, `val.viscosity`, `test.viscosity`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NavierStokesSpec {
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
    /// Amplitude of the forcing `a (sin(2 pi (x + y)) + cos(2 pi (x + y)))` (FNO: 0.1).
    pub forcing: f64,
    /// Initial field: scale `sigma` of the square root of the spectrum (FNO: `7^{3/2}`).
    pub ic_sigma: f64,
    /// Initial field: shift `tau` of `(-Laplacian + tau^2)` (FNO: 7).
    pub ic_tau: f64,
    /// Initial field: exponent `alpha` of `(-Laplacian + tau^2)^{-alpha}` (FNO: 2.5).
    pub ic_alpha: f64,
    /// Training runs.
    pub train_runs: usize,
    /// Validation runs.
    pub val_runs: usize,
    /// Test runs.
    pub test_runs: usize,
}

impl Default for NavierStokesSpec {
    fn default() -> Self {
        Self::paper()
    }
}

impl NavierStokesSpec {
    /// The paper profile: 64 x 64, viscosities 1e-3 and 1e-4, 21 frames one time unit apart
    /// (T = 20), internal step 1e-3, 1000 / 100 / 100 runs.
    pub fn paper() -> Self {
        Self {
            size: 64,
            viscosity: vec![1e-3, 1e-4],
            frames: 21,
            record_dt: 1.0,
            time_step: 1e-3,
            forcing: 0.1,
            ic_sigma: 7f64.powf(1.5),
            ic_tau: 7.0,
            ic_alpha: 2.5,
            train_runs: 1000,
            val_runs: 100,
            test_runs: 100,
        }
    }

    /// The quick profile: 32 x 32, the same viscosities and forcing, 15 frames (T = 14: four
    /// input frames and a ten-step rollout), internal step 2e-3, 16 / 4 / 4 runs.
    pub fn quick() -> Self {
        Self { size: 32, frames: 15, time_step: 2e-3, train_runs: 16, val_runs: 4, test_runs: 4, ..Self::paper() }
    }

    /// The settings of profile `name` (`quick` or `paper`).
    pub fn profile(name: &str) -> Result<Self, DataError> {
        pick_profile(NAVIER_STOKES, name, Self::quick, Self::paper)
    }

    /// Internal steps per frame: the fewest whose step is at most `time_step`.
    pub fn substeps(&self) -> usize {
        substeps(self.record_dt, self.time_step)
    }

    /// Checks every setting.
    pub fn check(&self) -> Result<(), DataError> {
        check_fft_size(NAVIER_STOKES, self.size)?;
        check_values(NAVIER_STOKES, "viscosity", &self.viscosity, true)?;
        if !self.forcing.is_finite() {
            return Err(DataError::spec(NAVIER_STOKES, "forcing", format!("{} is not finite", self.forcing)));
        }
        let runs = [self.train_runs, self.val_runs, self.test_runs];
        let non_negative = [("ic_sigma", self.ic_sigma), ("ic_tau", self.ic_tau), ("ic_alpha", self.ic_alpha)];
        check_pde_spec(NAVIER_STOKES, self.frames, (self.record_dt, self.time_step), &[], &non_negative, runs)
    }
}

/// A zero-mean Gaussian random field on the unit torus, sampled on `grid`: Fourier mode `k != 0`
/// has `E |c_k|^2 = 2 sigma^2 (4 pi^2 |k|^2 + tau^2)^{-alpha}` (complex Gaussian, real field),
/// `c_0 = 0`.
///
/// With `sigma = 7^{3/2}`, `tau = 7`, `alpha = 2.5` this is the amplitude of the FNO data
/// generator, which scales the square root of the spectrum of `(-Laplacian + 49 I)^{-2.5}` by
/// `7^{3/2}` and draws both parts of each coefficient from `N(0, 1)` before taking the real part.
pub fn gaussian_random_field(
    grid: &SpectralGrid,
    sigma: f64,
    tau: f64,
    alpha: f64,
    rng: &mut Rng,
) -> Result<Array2<f64>, DataError> {
    let n = grid.n;
    let mut c = Array2::<Complex64>::zeros((n, n));
    let normal = |rng: &mut Rng| -> f64 { StandardNormal.sample(rng) };
    for p in 0..n {
        for q in 0..n {
            let (pc, qc) = ((n - p) % n, (n - q) % n);
            if (p, q) == (0, 0) || (pc, qc) < (p, q) {
                continue;
            }
            let amplitude = sigma * (grid.laplacian[p * n + q] + tau * tau).powf(-alpha / 2.0);
            if (pc, qc) == (p, q) {
                c[[p, q]] = Complex64::new(amplitude * std::f64::consts::SQRT_2 * normal(rng), 0.0);
            } else {
                let v = Complex64::new(amplitude * normal(rng), amplitude * normal(rng));
                c[[p, q]] = v;
                c[[pc, qc]] = v.conj();
            }
        }
    }
    // field = sum_k c_k exp(2 pi i k . x): the unscaled inverse transform
    let scale = (n * n) as f64;
    Ok(grid.field(&c)?.mapv(|v| v * scale))
}

/// A pseudo-spectral Navier–Stokes solver (vorticity form, unit torus) with its work buffers.
///
/// The state is the spectrum of the vorticity, `[n, n]` (unscaled forward transform of a real
/// field whose axis 0 is `x` and axis 1 is `y`).
#[derive(Clone, Debug)]
pub struct NavierStokes2d {
    grid: SpectralGrid,
    viscosity: f64,
    time_step: f64,
    forcing_hat: Vec<Complex64>,
    /// `1 - dt nu |k|^2 / 2` and `1 / (1 + dt nu |k|^2 / 2)` per mode.
    explicit: Vec<f64>,
    implicit: Vec<f64>,
    velocity: Vec<Complex64>,
    gradient: Vec<Complex64>,
    rate0: Vec<Complex64>,
    rate1: Vec<Complex64>,
    stage: Vec<Complex64>,
}

impl NavierStokes2d {
    /// A solver on an `n x n` grid with viscosity `viscosity`, forcing amplitude `forcing` (the
    /// FNO forcing shape) and time step `time_step`; an error for a grid that is not a power of
    /// two or a non-positive viscosity or step.
    pub fn new(n: usize, viscosity: f64, forcing: f64, time_step: f64) -> Result<Self, DataError> {
        let grid = SpectralGrid::new(n)?;
        if !(viscosity.is_finite() && viscosity > 0.0) {
            return Err(DataError::spec(NAVIER_STOKES, "viscosity", format!("{viscosity} is not positive")));
        }
        if !(time_step.is_finite() && time_step > 0.0) {
            return Err(DataError::spec(NAVIER_STOKES, "time_step", format!("{time_step} is not positive")));
        }
        let two_pi = 2.0 * std::f64::consts::PI;
        let f = Array2::from_shape_fn((n, n), |(i, j)| {
            let s = two_pi * (i + j) as f64 / n as f64;
            forcing * (s.sin() + s.cos())
        });
        let forcing_hat = grid.spectrum(&f)?.iter().copied().collect();
        let half = 0.5 * time_step * viscosity;
        let explicit = grid.laplacian.iter().map(|l| 1.0 - half * l).collect();
        let implicit = grid.laplacian.iter().map(|l| 1.0 / (1.0 + half * l)).collect();
        let zeros = vec![Complex64::new(0.0, 0.0); n * n];
        Ok(Self {
            grid,
            viscosity,
            time_step,
            forcing_hat,
            explicit,
            implicit,
            velocity: zeros.clone(),
            gradient: zeros.clone(),
            rate0: zeros.clone(),
            rate1: zeros.clone(),
            stage: zeros,
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

    /// The time step.
    pub fn time_step(&self) -> f64 {
        self.time_step
    }

    /// The velocity `(u, v) = (d psi / dy, -d psi / dx)` of a vorticity spectrum, with
    /// `-Laplacian psi = w` (the mean of `w` does not enter).
    pub fn velocity(&self, w_hat: &Array2<Complex64>) -> Result<(Array2<f64>, Array2<f64>), DataError> {
        let n = self.grid.n;
        self.check_shape(w_hat)?;
        let mut u = Array2::<Complex64>::zeros((n, n));
        let mut v = Array2::<Complex64>::zeros((n, n));
        for ((p, q), w) in w_hat.indexed_iter() {
            let l = self.grid.laplacian[p * n + q];
            let psi = if l > 0.0 { w / l } else { Complex64::new(0.0, 0.0) };
            u[[p, q]] = Complex64::new(0.0, self.grid.derivative[q]) * psi;
            v[[p, q]] = -Complex64::new(0.0, self.grid.derivative[p]) * psi;
        }
        Ok((self.grid.field(&u)?, self.grid.field(&v)?))
    }

    fn check_shape(&self, w_hat: &Array2<Complex64>) -> Result<(), DataError> {
        let n = self.grid.n;
        if w_hat.dim() != (n, n) {
            return Err(mixer_core::Error::shape("vorticity spectrum", (n, n), w_hat.dim()).into());
        }
        Ok(())
    }

    /// `rate = f_hat - dealiased FFT(u . grad w)` for the vorticity spectrum `w`.
    fn rate(&mut self, w: &[Complex64], rate: &mut [Complex64]) {
        let n = self.grid.n;
        let d = &self.grid.derivative;
        for p in 0..n {
            for q in 0..n {
                let idx = p * n + q;
                let l = self.grid.laplacian[idx];
                let psi = if l > 0.0 { w[idx] / l } else { Complex64::new(0.0, 0.0) };
                let (kx, ky) = (d[p], d[q]);
                // u_hat + i v_hat = i ky psi + kx psi; w_x_hat + i w_y_hat = i kx w - ky w
                self.velocity[idx] = psi * Complex64::new(kx, ky);
                self.gradient[idx] = w[idx] * Complex64::new(-ky, kx);
            }
        }
        self.grid.inverse_slice(&mut self.velocity);
        self.grid.inverse_slice(&mut self.gradient);
        for (a, g) in self.velocity.iter_mut().zip(&self.gradient) {
            *a = Complex64::new(a.re * g.re + a.im * g.im, 0.0);
        }
        self.grid.forward_slice(&mut self.velocity);
        for (idx, r) in rate.iter_mut().enumerate() {
            let advection = if self.grid.keep[idx] { self.velocity[idx] } else { Complex64::new(0.0, 0.0) };
            *r = self.forcing_hat[idx] - advection;
        }
    }

    /// One step of the flat spectrum `w` (row-major `[n, n]`): Heun on advection and forcing,
    /// Crank–Nicolson on viscosity.
    fn step_slice(&mut self, w: &mut [Complex64]) {
        let dt = self.time_step;
        let mut rate0 = std::mem::take(&mut self.rate0);
        let mut rate1 = std::mem::take(&mut self.rate1);
        let mut stage = std::mem::take(&mut self.stage);
        self.rate(w, &mut rate0);
        for idx in 0..w.len() {
            stage[idx] = (w[idx] * self.explicit[idx] + rate0[idx] * dt) * self.implicit[idx];
        }
        self.rate(&stage, &mut rate1);
        for idx in 0..w.len() {
            w[idx] = (w[idx] * self.explicit[idx] + (rate0[idx] + rate1[idx]) * (0.5 * dt)) * self.implicit[idx];
        }
        (self.rate0, self.rate1, self.stage) = (rate0, rate1, stage);
    }

    /// Advances the vorticity spectrum `w_hat` (`[n, n]`) by `steps` time steps.
    pub fn advance(&mut self, w_hat: &mut Array2<Complex64>, steps: usize) -> Result<(), DataError> {
        self.check_shape(w_hat)?;
        let mut flat: Vec<Complex64> = w_hat.iter().copied().collect();
        for _ in 0..steps {
            self.step_slice(&mut flat);
        }
        w_hat.iter_mut().zip(flat).for_each(|(d, s)| *d = s);
        Ok(())
    }
}

/// Simulates one run into `out` (`[frames, n, n, 1]`).
fn simulate_run(
    spec: &NavierStokesSpec,
    viscosity: f64,
    rng: &mut Rng,
    mut out: ArrayViewMut4<f32>,
    (split, run): (&str, usize),
) -> Result<(), DataError> {
    let substeps = spec.substeps();
    let mut solver = NavierStokes2d::new(spec.size, viscosity, spec.forcing, spec.record_dt / substeps as f64)?;
    let w0 = gaussian_random_field(&solver.grid, spec.ic_sigma, spec.ic_tau, spec.ic_alpha, rng)?;
    let mut w_hat = solver.grid.spectrum(&w0)?;
    for f in 0..spec.frames {
        if f > 0 {
            solver.advance(&mut w_hat, substeps)?;
        }
        let w = solver.grid.field(&w_hat)?;
        check_frame(NAVIER_STOKES, split, run, f as f64 * spec.record_dt, "time_step", w.iter())?;
        let mut frame = out.index_axis_mut(ndarray::Axis(0), f);
        for (dst, src) in frame.iter_mut().zip(&w) {
            *dst = *src as f32;
        }
    }
    Ok(())
}

/// Generates the three splits (`[runs, frames, size, size, 1]`, vorticity) for `spec` and `seed`:
/// run `r` of split `s` draws its initial field from stream `navier-stokes/<s>/<r>` and uses
/// viscosity `spec.viscosity[r % len]`; same spec and seed, same values. `progress` ticks once per
/// run. A run that blows up (non-finite or beyond 1e6) is an error naming it.
pub fn generate_navier_stokes(
    spec: &NavierStokesSpec,
    seed: u64,
    progress: &ProgressBar,
) -> Result<FieldDir, DataError> {
    spec.check()?;
    let seeds = Seeds::new(seed);
    let _span = tracing::info_span!("navier-stokes", seed).entered();
    let n = spec.size;
    progress.set_length((spec.train_runs + spec.val_runs + spec.test_runs) as u64);
    let split = |name: &str, runs: usize| -> Result<FieldSet, DataError> {
        tracing::info!(split = name, runs, substeps = spec.substeps(), "generating split");
        let fields = simulate_runs(runs, spec.frames, (n, n), 1, progress, |r, view| {
            let mut rng = seeds.stream(&format!("{NAVIER_STOKES}/{name}/{r}"));
            let nu = spec.viscosity[r % spec.viscosity.len()];
            simulate_run(spec, nu, &mut rng, view, (name, r))
        })?;
        Ok(FieldSet { fields, dt: spec.record_dt })
    };
    let (train, val, test) =
        (split("train", spec.train_runs)?, split("val", spec.val_runs)?, split("test", spec.test_runs)?);
    let parameters = vec![
        FieldParameter { name: "viscosity".into(), values: spec.viscosity.clone() },
        FieldParameter { name: "forcing".into(), values: vec![spec.forcing] },
        FieldParameter { name: "time_step".into(), values: vec![spec.record_dt / spec.substeps() as f64] },
        FieldParameter { name: "ic_sigma_tau_alpha".into(), values: vec![spec.ic_sigma, spec.ic_tau, spec.ic_alpha] },
    ];
    let system = (NAVIER_STOKES, NAVIER_STOKES_DESCRIPTION);
    Ok(pde_dir(system, seed, parameters, ("viscosity", &spec.viscosity), [train, val, test]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine_mode(n: usize, amplitude: f64) -> Array2<f64> {
        Array2::from_shape_fn((n, n), |(i, j)| {
            amplitude * (2.0 * PI * i as f64 / n as f64).sin() * (2.0 * PI * j as f64 / n as f64).sin()
        })
    }

    /// Spectral derivative along `axis` of a real field.
    fn derivative(grid: &SpectralGrid, f: &Array2<f64>, axis: usize) -> Array2<f64> {
        let mut s = grid.spectrum(f).unwrap();
        for ((p, q), v) in s.indexed_iter_mut() {
            let k = if axis == 0 { grid.derivative[p] } else { grid.derivative[q] };
            *v *= Complex64::new(0.0, k);
        }
        grid.field(&s).unwrap()
    }

    fn tiny() -> NavierStokesSpec {
        NavierStokesSpec {
            size: 8,
            frames: 3,
            record_dt: 0.1,
            time_step: 0.01,
            train_runs: 3,
            val_runs: 1,
            test_runs: 2,
            ..NavierStokesSpec::quick()
        }
    }

    #[test]
    fn an_euler_steady_mode_decays_at_the_viscous_rate() {
        // w = A sin(2 pi x) sin(2 pi y) is a Laplacian eigenfunction (eigenvalue -8 pi^2), so
        // u . grad w = 0 and, without forcing, w(t) = w(0) exp(-8 pi^2 nu t)
        let (n, nu, dt, steps, a) = (16, 1e-2, 1e-3, 400, 1.7);
        let mut solver = NavierStokes2d::new(n, nu, 0.0, dt).unwrap();
        let w0 = sine_mode(n, a);
        let mut w_hat = solver.grid().spectrum(&w0).unwrap();
        solver.advance(&mut w_hat, steps).unwrap();
        let w = solver.grid().field(&w_hat).unwrap();
        let decay = (-8.0 * PI * PI * nu * dt * steps as f64).exp();
        let err = w.iter().zip(&w0).map(|(x, y)| (x - y * decay).abs()).fold(0.0, f64::max);
        assert!(err < 1e-6 * a * decay, "max error {err:e} (decay {decay})");
        assert!(decay < 0.75);
    }

    #[test]
    fn advection_and_forcing_keep_the_mean() {
        let n = 16;
        let grid = SpectralGrid::new(n).unwrap();
        let mut rng = Seeds::new(1).stream("t");
        let w0 = gaussian_random_field(&grid, 7f64.powf(1.5) * 20.0, 7.0, 2.5, &mut rng).unwrap() + 0.3;
        let mut solver = NavierStokes2d::new(n, 1e-3, 0.1, 2e-3).unwrap();
        let mut w_hat = solver.grid().spectrum(&w0).unwrap();
        solver.advance(&mut w_hat, 200).unwrap();
        let w = solver.grid().field(&w_hat).unwrap();
        let mean = w.mean().unwrap();
        assert!((mean - 0.3).abs() < 1e-12, "mean {mean}");
        // the flow did something: the field changed by more than the forcing alone would
        let change = w.iter().zip(&w0).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(change > 0.1, "{change}");
    }

    #[test]
    fn velocity_is_divergence_free_and_its_curl_is_the_vorticity() {
        let n = 16;
        let grid = SpectralGrid::new(n).unwrap();
        let mut rng = Seeds::new(2).stream("t");
        let w = gaussian_random_field(&grid, 1.0, 3.0, 1.5, &mut rng).unwrap();
        // without its Nyquist modes (which carry no odd derivative on the grid), a field is the
        // curl of the velocity it induces; an added mean does not enter the velocity
        let mut s = grid.spectrum(&w).unwrap();
        for ((p, q), c) in s.indexed_iter_mut() {
            if 2 * p == n || 2 * q == n {
                *c = Complex64::new(0.0, 0.0);
            }
        }
        let w = grid.field(&s).unwrap();
        let solver = NavierStokes2d::new(n, 1e-3, 0.0, 1e-3).unwrap();
        let (u, v) = solver.velocity(&grid.spectrum(&(&w + 0.5)).unwrap()).unwrap();
        let div = derivative(&grid, &u, 0) + derivative(&grid, &v, 1);
        let curl = derivative(&grid, &v, 0) - derivative(&grid, &u, 1);
        let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(scale > 0.1);
        assert!(div.iter().all(|d| d.abs() < 1e-12 * scale), "divergence {div:?}");
        // curl u = d v / dx - d u / dy = -Laplacian psi = w
        let err = curl.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-12 * scale, "curl error {err:e}");
        // and the velocity is not trivially zero
        assert!(u.iter().any(|x| x.abs() > 1e-3 * scale));
    }

    #[test]
    fn random_field_has_the_requested_spectrum_and_no_mean() {
        let n = 32;
        let grid = SpectralGrid::new(n).unwrap();
        let (sigma, tau, alpha) = (2.0, 3.0, 1.0);
        let mut power = [0.0; 2];
        let draws = 200;
        for d in 0..draws {
            let w = gaussian_random_field(&grid, sigma, tau, alpha, &mut Seeds::new(d).stream("grf")).unwrap();
            assert!(w.mean().unwrap().abs() < 1e-13);
            let s = grid.spectrum(&w).unwrap();
            // |c_k|^2 = |s_k|^2 / n^4 for the modes (1, 0) and (2, 3)
            for (slot, (p, q)) in [(1, 0), (2, 3)].into_iter().enumerate() {
                power[slot] += s[[p, q]].norm_sqr() / (n as f64).powi(4) / draws as f64;
            }
        }
        for (slot, k2) in [1.0, 13.0].into_iter().enumerate() {
            let want = 2.0 * sigma * sigma * (4.0 * PI * PI * k2 + tau * tau).powf(-alpha);
            assert!((power[slot] / want - 1.0).abs() < 0.25, "mode {slot}: {} vs {want}", power[slot]);
        }
    }

    #[test]
    fn generation_is_deterministic_and_records_each_run_viscosity() {
        let spec = tiny();
        let a = generate_navier_stokes(&spec, 5, &ProgressBar::hidden()).unwrap();
        let b = generate_navier_stokes(&spec, 5, &ProgressBar::hidden()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.train.fields.dim(), (3, 3, 8, 8, 1));
        assert_eq!(a.test.fields.dim(), (2, 3, 8, 8, 1));
        assert_eq!(a.manifest.run_values("train", "viscosity"), Some(&[1e-3, 1e-4, 1e-3][..]));
        assert_eq!(a.manifest.run_values("val", "viscosity"), Some(&[1e-3][..]));
        a.check().unwrap();
        let c = generate_navier_stokes(&spec, 6, &ProgressBar::hidden()).unwrap();
        assert_ne!(a.train.fields, c.train.fields);
        // frames move, and runs differ from each other
        let f = &a.train.fields;
        assert!((0..64).any(|i| f[[0, 0, i / 8, i % 8, 0]] != f[[0, 2, i / 8, i % 8, 0]]));
        assert!((0..64).any(|i| f[[0, 0, i / 8, i % 8, 0]] != f[[1, 0, i / 8, i % 8, 0]]));
    }

    #[test]
    fn the_folder_round_trips_with_the_run_viscosities() {
        let dir = tempfile::tempdir().unwrap();
        let data = generate_navier_stokes(&tiny(), 1, &ProgressBar::hidden()).unwrap();
        data.write(dir.path()).unwrap();
        let back = crate::load_field_dir(dir.path()).unwrap();
        assert!(back.regions.is_none() && back.manifest.region_source.is_none());
        assert_eq!(back.manifest, data.manifest);
        assert_eq!(back.train, data.train);
        assert_eq!(back.manifest.run_values("test", "viscosity"), Some(&[1e-3, 1e-4][..]));
        assert_eq!(back.manifest.run_values("test", "k"), None);
    }

    #[test]
    fn bad_settings_are_errors() {
        let cases: [(&str, NavierStokesSpec); 8] = [
            ("size", NavierStokesSpec { size: 24, ..tiny() }),
            ("viscosity", NavierStokesSpec { viscosity: vec![1e-3, 0.0], ..tiny() }),
            ("viscosity", NavierStokesSpec { viscosity: vec![], ..tiny() }),
            ("time_step", NavierStokesSpec { time_step: -1.0, ..tiny() }),
            ("record_dt", NavierStokesSpec { record_dt: f64::NAN, ..tiny() }),
            ("train_runs", NavierStokesSpec { train_runs: 0, ..tiny() }),
            ("ic_alpha", NavierStokesSpec { ic_alpha: -1.0, ..tiny() }),
            ("forcing", NavierStokesSpec { forcing: f64::INFINITY, ..tiny() }),
        ];
        for (field, spec) in cases {
            let err = spec.check().unwrap_err().to_string();
            assert!(err.contains(&format!("field `{field}`")), "{field}: {err}");
        }
        assert!(matches!(NavierStokesSpec { frames: 1, ..tiny() }.check(), Err(DataError::TooFewFrames { .. })));
        assert!(NavierStokesSpec::profile("huge").is_err());
        assert!(NavierStokes2d::new(12, 1e-3, 0.0, 1e-3).unwrap_err().to_string().contains("power of two"));
    }

    #[test]
    fn a_blow_up_is_an_error_naming_the_run() {
        // a huge initial field and a step far past the advective limit
        let spec = NavierStokesSpec { ic_sigma: 1e5, time_step: 0.1, record_dt: 0.5, frames: 4, ..tiny() };
        let err = generate_navier_stokes(&spec, 0, &ProgressBar::hidden()).unwrap_err().to_string();
        assert!(err.contains("blew up") && err.contains("split `train`") && err.contains("time_step"), "{err}");
    }

    #[test]
    fn profiles() {
        let (q, p) = (NavierStokesSpec::quick(), NavierStokesSpec::paper());
        q.check().unwrap();
        p.check().unwrap();
        assert_eq!((q.size, p.size), (32, 64));
        assert_eq!(q.substeps(), 500);
        assert_eq!(p.substeps(), 1000);
        assert_eq!(NavierStokesSpec { record_dt: 1.0, time_step: 0.3, ..tiny() }.substeps(), 4);
    }
}
