//! Long-term metrics of dynamical-system reconstruction, for free-running predictions that are
//! judged by their geometry and their time scales rather than point by point:
//!
//! - [`state_space_divergence`] (`D_stsp`, Koppe et al. 2019; Brenner et al. 2022): the
//!   Kullback–Leibler divergence `KL(p_true || p_gen)` between the occupation measures of the
//!   two trajectories in state space, by binning in low dimension and by Gaussian mixtures placed
//!   on the points in higher dimension;
//! - [`hellinger_spectrum`] (`D_H`, Mikhaeil et al. 2022): the Hellinger distance between the
//!   smoothed power spectra of the two trajectories, averaged over dimensions;
//! - [`mase`] (Hyndman & Koehler 2006): mean absolute error scaled by the mean absolute change of
//!   the true series (the in-sample error of the naive one-step forecast).
//!
//! Inputs are one trajectory each, `[steps, dim]`, predicted and true. Both are standardised by
//! the true trajectory's per-dimension mean and standard deviation first, so the metrics do not
//! depend on the units of the state.

use mixer_data::fft::{Complex64, fft};
use ndarray::{Array2, ArrayView2, Axis};

/// How [`state_space_divergence`] estimates the occupation measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Occupation {
    /// Histograms with `bins` per dimension over the true trajectory's range widened by 10 % on
    /// each side; points outside fall into the edge bins; `smoothing` is the pseudo-count added
    /// to every bin of both histograms (so empty bins do not make the divergence infinite).
    Bins {
        /// Bins per dimension.
        bins: usize,
        /// Pseudo-count per bin of the predicted histogram.
        smoothing: f64,
    },
    /// An isotropic Gaussian of standard deviation `sigma` (in standardised units) on each of at
    /// most `max_points` evenly strided points of each trajectory; the divergence is the Monte
    /// Carlo mean of `log p_true(x) - log p_gen(x)` over `max_points` seeded draws from the true
    /// mixture.
    Gaussians {
        /// Kernel width in standard deviations of the true trajectory.
        sigma: f64,
        /// Points used of each trajectory.
        max_points: usize,
    },
}

impl Occupation {
    /// The choice for `points` states of `dim` variables: 30 bins per dimension where there are
    /// at least ten points per bin on average (up to three dimensions), Gaussians of width 1 on at
    /// most 1000 points otherwise (short or high-dimensional data, where bins would be empty).
    pub fn for_data(dim: usize, points: usize) -> Self {
        const BINS: usize = 30;
        let cells = (dim <= 3).then(|| BINS.pow(dim as u32));
        match cells {
            Some(cells) if points >= 10 * cells => Occupation::Bins { bins: BINS, smoothing: 1e-4 },
            _ => Occupation::Gaussians { sigma: 1.0, max_points: 1000 },
        }
    }
}

/// Per-dimension mean and standard deviation of `truth` (a constant dimension gets scale 1).
fn standardiser(truth: ArrayView2<f64>) -> (Vec<f64>, Vec<f64>) {
    let n = truth.nrows().max(1) as f64;
    let mean: Vec<f64> = truth.axis_iter(Axis(1)).map(|c| c.sum() / n).collect();
    let std = truth
        .axis_iter(Axis(1))
        .zip(&mean)
        .map(|(c, m)| {
            let s = (c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
            if s > 1e-12 { s } else { 1.0 }
        })
        .collect();
    (mean, std)
}

/// `x` standardised with `(mean, std)`.
fn standardise(x: ArrayView2<f64>, (mean, std): &(Vec<f64>, Vec<f64>)) -> Array2<f64> {
    Array2::from_shape_fn(x.dim(), |(t, d)| (x[[t, d]] - mean[d]) / std[d])
}

/// `D_stsp`: `KL(p_true || p_gen)` between the state-space occupation of `truth` and of `pred`
/// (both `[steps, dim]`), estimated as `how` says. Binned: non-negative. Gaussian mixtures:
/// non-negative in expectation (a Monte Carlo estimate, deterministic). Both 0 for identical
/// trajectories. A non-finite prediction gives infinity.
pub fn state_space_divergence(pred: ArrayView2<f64>, truth: ArrayView2<f64>, how: Occupation) -> f64 {
    assert_eq!(pred.ncols(), truth.ncols(), "one state size");
    if pred.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let scale = standardiser(truth);
    let (p, q) = (standardise(truth, &scale), standardise(pred, &scale));
    match how {
        Occupation::Bins { bins, smoothing } => binned_kl(&p, &q, bins.max(1), smoothing),
        Occupation::Gaussians { sigma, max_points } => gaussian_kl(&p, &q, sigma, max_points.max(1)),
    }
}

/// Flat histogram index of each row of `x` on the box `[lo, hi]^dim` with `bins` per dimension.
fn bin_of(x: &Array2<f64>, lo: &[f64], hi: &[f64], bins: usize) -> Vec<usize> {
    x.rows()
        .into_iter()
        .map(|row| {
            row.iter().enumerate().fold(0, |flat, (d, v)| {
                let u = ((v - lo[d]) / (hi[d] - lo[d]) * bins as f64).floor();
                flat * bins + u.clamp(0.0, (bins - 1) as f64) as usize
            })
        })
        .collect()
}

/// KL divergence of the histograms of `p` (true) and `q` (predicted), `q` smoothed.
fn binned_kl(p: &Array2<f64>, q: &Array2<f64>, bins: usize, smoothing: f64) -> f64 {
    let dim = p.ncols();
    let (mut lo, mut hi) = (vec![f64::INFINITY; dim], vec![f64::NEG_INFINITY; dim]);
    for row in p.rows() {
        for (d, v) in row.iter().enumerate() {
            lo[d] = lo[d].min(*v);
            hi[d] = hi[d].max(*v);
        }
    }
    for d in 0..dim {
        let margin = 0.1 * (hi[d] - lo[d]).max(1e-12);
        (lo[d], hi[d]) = (lo[d] - margin, hi[d] + margin);
    }
    let cells = bins.pow(dim as u32);
    let count = |x: &Array2<f64>| {
        let mut c = std::collections::HashMap::<usize, f64>::new();
        for b in bin_of(x, &lo, &hi, bins) {
            *c.entry(b).or_default() += 1.0;
        }
        c
    };
    let (cp, cq) = (count(p), count(q));
    // Both histograms get the pseudo-count, so identical trajectories score exactly 0.
    let (np, nq) = (p.nrows() as f64 + smoothing * cells as f64, q.nrows() as f64 + smoothing * cells as f64);
    let term = |c_p: f64, c_q: f64| {
        let (pt, pg) = ((c_p + smoothing) / np, (c_q + smoothing) / nq);
        match (pt > 0.0, pg > 0.0) {
            (false, _) => 0.0,
            (true, true) => pt * (pt / pg).ln(),
            (true, false) => f64::INFINITY,
        }
    };
    let seen: std::collections::HashSet<usize> = cp.keys().chain(cq.keys()).copied().collect();
    let occupied: f64 =
        seen.iter().map(|b| term(cp.get(b).copied().unwrap_or(0.0), cq.get(b).copied().unwrap_or(0.0))).sum();
    // Bins empty in both histograms hold the pseudo-count alone.
    occupied + (cells - seen.len()) as f64 * term(0.0, 0.0)
}

/// At most `max_points` rows of `x`, evenly strided.
fn strided(x: &Array2<f64>, max_points: usize) -> Array2<f64> {
    let step = x.nrows().div_ceil(max_points).max(1);
    let rows: Vec<usize> = (0..x.nrows()).step_by(step).collect();
    x.select(Axis(0), &rows)
}

/// `log (1/T) sum_t N(x; centres_t, sigma^2 I)` by log-sum-exp.
fn log_mixture(x: ndarray::ArrayView1<f64>, centres: &Array2<f64>, sigma: f64) -> f64 {
    let dim = x.len() as f64;
    let exps: Vec<f64> = centres
        .rows()
        .into_iter()
        .map(|c| -c.iter().zip(x.iter()).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (2.0 * sigma * sigma))
        .collect();
    let top = exps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = exps.iter().map(|e| (e - top).exp()).sum();
    top + (sum / exps.len() as f64).ln() - 0.5 * dim * (2.0 * std::f64::consts::PI * sigma * sigma).ln()
}

/// Monte Carlo KL divergence of the Gaussian mixtures on `p` (true) and `q` (predicted): the
/// mean of `log p(x) - log q(x)` over `max_points` draws `x` from the true mixture (a centre in
/// turn, plus seeded Gaussian noise), so that the estimate is non-negative in expectation and
/// exactly 0 for identical trajectories.
fn gaussian_kl(p: &Array2<f64>, q: &Array2<f64>, sigma: f64, max_points: usize) -> f64 {
    use rand_distr::{Distribution, StandardNormal};
    let (p, q) = (strided(p, max_points), strided(q, max_points));
    if p.nrows() == 0 {
        return 0.0;
    }
    let mut rng = mixer_core::Seeds::new(0).stream("state-space-divergence");
    let draws = max_points.max(p.nrows());
    let mut x = ndarray::Array1::<f64>::zeros(p.ncols());
    let mut total = 0.0;
    for i in 0..draws {
        let centre = p.row(i % p.nrows());
        for (xd, c) in x.iter_mut().zip(centre) {
            let z: f64 = StandardNormal.sample(&mut rng);
            *xd = c + sigma * z;
        }
        total += log_mixture(x.view(), &p, sigma) - log_mixture(x.view(), &q, sigma);
    }
    total / draws as f64
}

/// `D_H`: the Hellinger distance `sqrt(1 - sum_f sqrt(P_f Q_f))` between the power spectra of
/// `pred` and `truth` (`[steps, dim]`), each dimension standardised by its own mean and standard
/// deviation, the one-sided spectrum without the mean term, smoothed by a Gaussian kernel of
/// `sigma` frequency bins (0: no smoothing) and normalised to sum 1; the mean over dimensions.
/// In `[0, 1]`: 0 for equal spectra, 1 for disjoint ones. Series are zero-padded to a power of
/// two; a constant or non-finite series gives 1 unless both are constant.
pub fn hellinger_spectrum(pred: ArrayView2<f64>, truth: ArrayView2<f64>, sigma: f64) -> f64 {
    assert_eq!(pred.dim(), truth.dim(), "one shape");
    let dims = truth.ncols().max(1) as f64;
    let distance = |d: usize| {
        let (p, q) = (power_spectrum(pred.column(d), sigma), power_spectrum(truth.column(d), sigma));
        match (p, q) {
            (Some(p), Some(q)) => {
                let overlap: f64 = p.iter().zip(&q).map(|(a, b)| (a * b).sqrt()).sum();
                (1.0 - overlap.min(1.0)).sqrt()
            }
            (None, None) => 0.0,
            _ => 1.0,
        }
    };
    (0..truth.ncols()).map(distance).sum::<f64>() / dims
}

/// Normalised, smoothed one-sided power spectrum of the standardised `x` (frequencies 1 to
/// `n / 2` of the padded length `n`), or `None` for a constant or non-finite series.
fn power_spectrum(x: ndarray::ArrayView1<f64>, sigma: f64) -> Option<Vec<f64>> {
    let len = x.len();
    if len < 2 || x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean = x.sum() / len as f64;
    let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64).sqrt();
    if std <= 1e-12 {
        return None;
    }
    let n = len.next_power_of_two();
    let mut data: Vec<Complex64> = x.iter().map(|v| Complex64::new((v - mean) / std, 0.0)).collect();
    data.resize(n, Complex64::new(0.0, 0.0));
    fft(&mut data).expect("a power-of-two length");
    let power: Vec<f64> = data[1..=n / 2].iter().map(|c| c.norm_sqr()).collect();
    let smoothed = if sigma > 0.0 { gaussian_smooth(&power, sigma) } else { power };
    let total: f64 = smoothed.iter().sum();
    (total > 0.0).then(|| smoothed.iter().map(|p| p / total).collect())
}

/// `x` convolved with a Gaussian of `sigma` samples (truncated at 4 sigma, edges renormalised).
fn gaussian_smooth(x: &[f64], sigma: f64) -> Vec<f64> {
    let reach = (4.0 * sigma).ceil() as isize;
    let n = x.len() as isize;
    (0..n)
        .map(|i| {
            let (mut sum, mut weight) = (0.0, 0.0);
            for j in (i - reach).max(0)..=(i + reach).min(n - 1) {
                let w = (-((i - j) as f64).powi(2) / (2.0 * sigma * sigma)).exp();
                sum += w * x[j as usize];
                weight += w;
            }
            sum / weight
        })
        .collect()
}

/// MASE: `mean |pred - truth| / mean |truth_t - truth_{t-1}|` over steps and dimensions; the
/// denominator is the error of predicting each true state by the one before it. A constant true
/// series leaves the ratio undefined: the unscaled mean absolute error is returned.
pub fn mase(pred: ArrayView2<f64>, truth: ArrayView2<f64>) -> f64 {
    assert_eq!(pred.dim(), truth.dim(), "one shape");
    let err = pred.iter().zip(truth.iter()).map(|(p, t)| (p - t).abs()).sum::<f64>() / pred.len().max(1) as f64;
    let steps = truth.nrows();
    let naive = if steps < 2 {
        0.0
    } else {
        let diff = &truth.slice(ndarray::s![1.., ..]) - &truth.slice(ndarray::s![..steps - 1, ..]);
        diff.iter().map(|v| v.abs()).sum::<f64>() / diff.len() as f64
    };
    if naive > 0.0 { err / naive } else { err }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, array};

    use super::*;

    /// `n` evenly spaced quantiles of N(mu, 1) (a deterministic normal sample).
    fn normal_quantiles(n: usize, mu: f64) -> Array2<f64> {
        let inv = |p: f64| {
            // Bisection on the normal CDF.
            let (mut lo, mut hi) = (-10.0f64, 10.0f64);
            for _ in 0..80 {
                let mid = 0.5 * (lo + hi);
                let cdf = 0.5 * erfc(-mid / std::f64::consts::SQRT_2);
                if cdf < p { lo = mid } else { hi = mid }
            }
            0.5 * (lo + hi)
        };
        Array2::from_shape_fn((n, 1), |(i, _)| mu + inv((i as f64 + 0.5) / n as f64))
    }

    /// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let poly = -z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
        let r = t * poly.exp();
        if x >= 0.0 { r } else { 2.0 - r }
    }

    #[test]
    fn binned_divergence_matches_a_hand_computed_histogram_pair() {
        // Two bins split at 0.5 of the widened range [-0.1, 1.1]: p = (1/2, 1/2), q = (1/4, 3/4).
        let truth = array![[0.0], [0.0], [1.0], [1.0]];
        let pred = array![[0.0], [1.0], [1.0], [1.0]];
        let d = state_space_divergence(pred.view(), truth.view(), Occupation::Bins { bins: 2, smoothing: 0.0 });
        let expected = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert!((d - expected).abs() < 1e-12, "{d} vs {expected}");
        assert_eq!(state_space_divergence(truth.view(), truth.view(), Occupation::for_data(1, 4000)), 0.0);
    }

    #[test]
    fn divergence_of_shifted_normals_approaches_the_closed_form() {
        // KL(N(0,1) || N(mu,1)) = mu^2 / 2; Gaussian kernels of width s widen both to variance
        // 1 + s^2, giving mu^2 / (2 (1 + s^2)).
        let (mu, s) = (0.8, 0.2);
        let truth = normal_quantiles(2000, 0.0);
        let pred = normal_quantiles(2000, mu);
        let gmm =
            state_space_divergence(pred.view(), truth.view(), Occupation::Gaussians { sigma: s, max_points: 2000 });
        let exact = mu * mu / (2.0 * (1.0 + s * s));
        assert!((gmm - exact).abs() < 0.03 * exact, "{gmm} vs {exact}");
        let binned = state_space_divergence(pred.view(), truth.view(), Occupation::for_data(1, 4000));
        assert!((binned - mu * mu / 2.0).abs() < 0.15 * mu * mu / 2.0, "{binned} vs {}", mu * mu / 2.0);
        // identical trajectories give 0; a prediction that dwells where the truth is densest
        // (the centre of a normal sample) is penalised, not rewarded
        assert_eq!(
            state_space_divergence(truth.view(), truth.view(), Occupation::Gaussians { sigma: s, max_points: 500 }),
            0.0
        );
        let centre = normal_quantiles(2000, 0.0).mapv(|v| 0.3 * v);
        let dwelling =
            state_space_divergence(centre.view(), truth.view(), Occupation::Gaussians { sigma: s, max_points: 2000 });
        assert!(dwelling > 0.05, "{dwelling}");
        let nan = Array2::from_elem((4, 1), f64::NAN);
        assert_eq!(state_space_divergence(nan.view(), truth.view(), Occupation::for_data(1, 4000)), f64::INFINITY);
    }

    #[test]
    fn hellinger_distance_of_known_spectra() {
        let n = 64;
        let wave = |cycles: f64| (0..n).map(move |t| (2.0 * std::f64::consts::PI * cycles * t as f64 / n as f64).cos());
        let one = Array2::from_shape_vec((n, 1), wave(4.0).collect()).unwrap();
        let far = Array2::from_shape_vec((n, 1), wave(20.0).collect()).unwrap();
        let both = Array2::from_shape_vec((n, 1), wave(4.0).zip(wave(9.0)).map(|(a, b)| a + b).collect()).unwrap();
        assert!(hellinger_spectrum(one.view(), one.view(), 1.0).abs() < 1e-7);
        assert!((hellinger_spectrum(far.view(), one.view(), 0.0) - 1.0).abs() < 1e-12);
        // Half the power at the shared frequency: overlap sqrt(1/2), distance sqrt(1 - sqrt(1/2)).
        let expected = (1.0 - 0.5f64.sqrt()).sqrt();
        assert!((hellinger_spectrum(both.view(), one.view(), 0.0) - expected).abs() < 1e-12);
        // Smoothing blurs far-apart peaks less than near ones: the distance stays near 1.
        assert!(hellinger_spectrum(far.view(), one.view(), 1.0) > 0.99);
    }

    #[test]
    fn mase_of_a_hand_computed_series() {
        // Naive changes |1|, |2|, |1| -> 4/3; errors 0, 1, 0, 1 -> 1/2; MASE 3/8.
        let truth = array![[0.0], [1.0], [3.0], [2.0]];
        let pred = array![[0.0], [2.0], [3.0], [3.0]];
        assert!((mase(pred.view(), truth.view()) - 0.375).abs() < 1e-12);
        assert_eq!(mase(truth.view(), truth.view()), 0.0);
        let flat = Array2::zeros((3, 1));
        assert_eq!(mase(truth.slice(ndarray::s![..3, ..]).view(), flat.view()), 4.0 / 3.0);
    }
}
