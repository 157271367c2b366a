//! Synthetic control chart time series (Alcock & Manolopoulos, 1999; the UCI "Synthetic Control
//! Chart Time Series" data): six classes of 1-D process charts, the time-series benchmark of
//! MixER's hier-shPLRNN experiment (Nzoyem et al., 2025).
//!
//! Every series is `y(t) = m + r s + pattern(t)` for `t = 1..=steps`, with `m = 30`, `s = 2` and
//! a fresh `r ~ U(-3, 3)` at every time point; the class decides the pattern:
//! normal (none), cyclic `a sin(2 pi t / T)` with `a ~ U(10, 15)`, `T ~ U(10, 15)`, increasing or
//! decreasing trend `+- g t` with `g ~ U(0.2, 0.5)`, upward or downward shift `+- x [t >= t3]`
//! with `x ~ U(7.5, 20)`, `t3 ~ U(steps / 3, 2 steps / 3)`.
//!
//! Each series is one environment with one trajectory (`X: [envs, 1, steps, 1]`); its class is
//! the family label, so the split files carry the family axis
//! `[classes, per_class, 1, steps, 1]` and `dataset.toml` names the classes and records each
//! series' pattern parameters. `test` redraws the noise of the training series (same
//! environments, new trajectory); `adapt_train` / `adapt_test` hold new series likewise.

use std::f64::consts::PI;

use mixer_core::{Dataset, Error, Seeds, TimeGrid};
use ndarray::Array4;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::{DataError, DatasetDir, EnvInfo, FamilyInfo, Manifest, SplitInfo};

/// Dataset name of the control charts.
pub const CONTROL_CHARTS: &str = "control-charts";
/// One line describing the control charts dataset.
pub const CONTROL_CHARTS_DESCRIPTION: &str =
    "synthetic control chart time series (Alcock & Manolopoulos 1999), six classes, one series per environment";

/// Process mean `m` of every chart.
const MEAN: f64 = 30.0;
/// Noise scale `s` of every chart (`r s` with `r ~ U(-3, 3)`).
const NOISE: f64 = 2.0;

/// The six chart classes, in label order (the UCI file's row blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChartClass {
    /// Noise around the mean.
    Normal,
    /// A sine wave of random amplitude and period.
    Cyclic,
    /// A line of positive slope.
    IncreasingTrend,
    /// A line of negative slope.
    DecreasingTrend,
    /// A step up at a random time.
    UpwardShift,
    /// A step down at a random time.
    DownwardShift,
}

impl ChartClass {
    /// All classes; the index of a class here is its integer label.
    pub const ALL: [ChartClass; 6] = [
        ChartClass::Normal,
        ChartClass::Cyclic,
        ChartClass::IncreasingTrend,
        ChartClass::DecreasingTrend,
        ChartClass::UpwardShift,
        ChartClass::DownwardShift,
    ];

    /// The class name as written in manifests and reports.
    pub fn name(self) -> &'static str {
        match self {
            ChartClass::Normal => "normal",
            ChartClass::Cyclic => "cyclic",
            ChartClass::IncreasingTrend => "increasing-trend",
            ChartClass::DecreasingTrend => "decreasing-trend",
            ChartClass::UpwardShift => "upward-shift",
            ChartClass::DownwardShift => "downward-shift",
        }
    }

    /// The integer label of the class (0 to 5).
    pub fn label(self) -> usize {
        Self::ALL.iter().position(|&c| c == self).unwrap_or(0)
    }

    /// Names of the pattern parameters [`ChartClass::draw`] returns.
    pub fn parameter_names(self) -> Vec<String> {
        let names: &[&str] = match self {
            ChartClass::Normal => &[],
            ChartClass::Cyclic => &["a", "T"],
            ChartClass::IncreasingTrend | ChartClass::DecreasingTrend => &["g"],
            ChartClass::UpwardShift | ChartClass::DownwardShift => &["x", "t3"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Draws the pattern parameters of one series of `steps` points.
    pub fn draw(self, steps: usize, rng: &mut mixer_core::Rng) -> Vec<f64> {
        match self {
            ChartClass::Normal => vec![],
            ChartClass::Cyclic => vec![rng.random_range(10.0..15.0), rng.random_range(10.0..15.0)],
            ChartClass::IncreasingTrend | ChartClass::DecreasingTrend => vec![rng.random_range(0.2..0.5)],
            ChartClass::UpwardShift | ChartClass::DownwardShift => {
                let n = steps as f64;
                vec![rng.random_range(7.5..20.0), rng.random_range(n / 3.0..2.0 * n / 3.0)]
            }
        }
    }

    /// The noise-free pattern at time `t` for parameters from [`ChartClass::draw`].
    pub fn pattern(self, params: &[f64], t: f64) -> f64 {
        match self {
            ChartClass::Normal => 0.0,
            ChartClass::Cyclic => params[0] * (2.0 * PI * t / params[1]).sin(),
            ChartClass::IncreasingTrend => params[0] * t,
            ChartClass::DecreasingTrend => -params[0] * t,
            ChartClass::UpwardShift => {
                if t >= params[1] {
                    params[0]
                } else {
                    0.0
                }
            }
            ChartClass::DownwardShift => {
                if t >= params[1] {
                    -params[0]
                } else {
                    0.0
                }
            }
        }
    }
}

/// Sizes of a control charts dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlChartSpec {
    /// Training series per class (UCI: 100).
    pub per_class: usize,
    /// Adaptation series per class.
    pub adapt_per_class: usize,
    /// Points per series (UCI: 60).
    pub steps: usize,
}

impl ControlChartSpec {
    /// The published sizes: 100 series of 60 points per class, plus 10 adaptation series.
    pub fn paper() -> Self {
        Self { per_class: 100, adapt_per_class: 10, steps: 60 }
    }

    /// Checks that every count is at least 1 and a series has at least 6 points (so a shift
    /// time between a third and two thirds of the series exists).
    pub fn check(&self) -> Result<(), DataError> {
        let bad = |field: &str, reason: String| DataError::BadSpec {
            system: CONTROL_CHARTS.into(),
            field: field.into(),
            reason,
        };
        if self.per_class == 0 {
            return Err(bad("per_class", "must be at least 1".into()));
        }
        if self.adapt_per_class == 0 {
            return Err(bad("adapt_per_class", "must be at least 1".into()));
        }
        if self.steps < 6 {
            return Err(bad("steps", format!("must be at least 6, got {}", self.steps)));
        }
        Ok(())
    }
}

/// One series: pattern plus fresh noise at every point, `t = 1..=steps`.
fn series(class: ChartClass, params: &[f64], steps: usize, rng: &mut mixer_core::Rng) -> Vec<f64> {
    (1..=steps).map(|t| MEAN + NOISE * rng.random_range(-3.0..3.0) + class.pattern(params, t as f64)).collect()
}

/// Two datasets over the same environments (two noise draws) and their manifest entries.
fn environments(
    spec: &ControlChartSpec,
    per_class: usize,
    seeds: &Seeds,
    prefix: &str,
) -> Result<([Dataset; 2], Vec<EnvInfo>), DataError> {
    let envs = ChartClass::ALL.len() * per_class;
    let mut params_rng = seeds.stream(&format!("{prefix}-parameters"));
    let mut infos = Vec::with_capacity(envs);
    for class in ChartClass::ALL {
        for _ in 0..per_class {
            infos.push(EnvInfo { family: class.label(), parameters: class.draw(spec.steps, &mut params_rng) });
        }
    }
    let grid = TimeGrid::Shared((1..=spec.steps).map(|t| t as f64).collect());
    let labels: Vec<usize> = infos.iter().map(|e| e.family).collect();
    let draw = |stream: &str| -> Result<Dataset, DataError> {
        let mut rng = seeds.stream(stream);
        let mut x = Array4::zeros((envs, 1, spec.steps, 1));
        for (e, info) in infos.iter().enumerate() {
            let y = series(ChartClass::ALL[info.family], &info.parameters, spec.steps, &mut rng);
            for (k, v) in y.into_iter().enumerate() {
                x[[e, 0, k, 0]] = v;
            }
        }
        Ok(Dataset::new(x, grid.clone(), Some(labels.clone()))?)
    };
    let first = draw(&format!("{prefix}-noise"))?;
    let second = draw(&format!("{prefix}-noise-test"))?;
    Ok(([first, second], infos))
}

/// Generates the control charts: `train` and `test` over `6 * per_class` series, `adapt_train`
/// and `adapt_test` over `6 * adapt_per_class` new ones; the same seed gives the same data.
pub fn generate_control_charts(spec: &ControlChartSpec, seed: u64) -> Result<DatasetDir, DataError> {
    spec.check()?;
    let seeds = Seeds::new(seed);
    let ([train, test], train_envs) = environments(spec, spec.per_class, &seeds, "charts-train")?;
    let ([adapt_train, adapt_test], adapt_envs) = environments(spec, spec.adapt_per_class, &seeds, "charts-adapt")?;
    let classes = ChartClass::ALL.len();
    let split = |name: &str, per_class: usize, envs: &[EnvInfo]| SplitInfo {
        split: name.into(),
        file: format!("{name}.npz"),
        shape: vec![classes, per_class, 1, spec.steps, 1],
        environments: envs.to_vec(),
    };
    let manifest = Manifest {
        system: CONTROL_CHARTS.into(),
        description: CONTROL_CHARTS_DESCRIPTION.into(),
        seed,
        rtol: 0.0,
        atol: 0.0,
        keep_every: 1,
        families: ChartClass::ALL
            .iter()
            .map(|c| FamilyInfo {
                name: c.name().into(),
                state: vec!["y".into()],
                parameters: c.parameter_names(),
                horizon: spec.steps as f64,
                solver: None,
            })
            .collect(),
        splits: vec![
            split("train", spec.per_class, &train_envs),
            split("test", spec.per_class, &train_envs),
            split("adapt_train", spec.adapt_per_class, &adapt_envs),
            split("adapt_test", spec.adapt_per_class, &adapt_envs),
        ],
    };
    if train.num_envs() != classes * spec.per_class {
        return Err(Error::shape("control chart environments", classes * spec.per_class, train.num_envs()).into());
    }
    Ok(DatasetDir { train, test, adapt_train, adapt_test, manifest: Some(manifest) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_of(d: &Dataset, e: usize) -> Vec<f64> {
        d.x.slice(ndarray::s![e, 0, .., 0]).to_vec()
    }

    /// Least-squares slope of `y` against `t = 1..`.
    fn slope(y: &[f64]) -> f64 {
        let n = y.len() as f64;
        let tm = (n + 1.0) / 2.0;
        let ym = y.iter().sum::<f64>() / n;
        let num: f64 = y.iter().enumerate().map(|(i, v)| (i as f64 + 1.0 - tm) * (v - ym)).sum();
        let den: f64 = (1..=y.len()).map(|t| (t as f64 - tm).powi(2)).sum();
        num / den
    }

    /// The mean step of the split that best separates the series into two constant parts.
    fn step_size(y: &[f64]) -> f64 {
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let sse = |s: &[f64]| {
            let m = mean(s);
            s.iter().map(|v| (v - m).powi(2)).sum::<f64>()
        };
        let best = (5..y.len() - 5)
            .min_by(|&a, &b| (sse(&y[..a]) + sse(&y[a..])).total_cmp(&(sse(&y[..b]) + sse(&y[b..]))))
            .unwrap();
        mean(&y[best..]) - mean(&y[..best])
    }

    /// The lag of the first local maximum of the autocorrelation after it turns negative.
    fn period(y: &[f64]) -> usize {
        let n = y.len();
        let m = y.iter().sum::<f64>() / n as f64;
        let acf: Vec<f64> =
            (0..n / 2).map(|lag| (0..n - lag).map(|i| (y[i] - m) * (y[i + lag] - m)).sum::<f64>()).collect();
        let neg = acf.iter().position(|&v| v < 0.0).unwrap();
        (neg..acf.len() - 1).find(|&l| acf[l] >= acf[l - 1] && acf[l] >= acf[l + 1]).unwrap()
    }

    #[test]
    fn class_statistics_match_the_published_formulas() {
        let d = generate_control_charts(&ControlChartSpec::paper(), 7).unwrap();
        let (train, m) = (&d.train, d.manifest.as_ref().unwrap());
        assert_eq!(train.x.dim(), (600, 1, 60, 1));
        assert_eq!(d.adapt_train.x.dim(), (60, 1, 60, 1));
        let labels = train.families.as_ref().unwrap();
        assert!((0..600).all(|e| labels[e] == e / 100 && m.splits[0].environments[e].family == e / 100));
        // normal: noise r s with r ~ U(-3, 3): all points in [24, 36], mean 30, variance 12
        let normal: Vec<f64> = (0..100).flat_map(|e| series_of(train, e)).collect();
        assert!(normal.iter().all(|v| (24.0..=36.0).contains(v)));
        let mean = normal.iter().sum::<f64>() / normal.len() as f64;
        let var = normal.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / normal.len() as f64;
        assert!((mean - 30.0).abs() < 0.1 && (var - 12.0).abs() < 0.6, "mean {mean} var {var}");
        // trends: fitted slopes have the class's sign and match the drawn g in [0.2, 0.5] (the
        // noise gives a slope error of sd sqrt(12 / sum (t - 30.5)^2) = 0.026; 5 sd allowed)
        let drawn = |e: usize, k: usize| m.splits[0].environments[e].parameters[k];
        for (class, sign) in [(2, 1.0), (3, -1.0)] {
            let mut err = 0.0;
            for e in class * 100..class * 100 + 100 {
                let (fit, g) = (sign * slope(&series_of(train, e)), drawn(e, 0));
                assert!(fit > 0.0 && (0.2..0.5).contains(&g) && (fit - g).abs() < 0.13, "env {e}: {fit} vs {g}");
                err += (fit - g).abs() / 100.0;
            }
            assert!(err < 0.03, "class {class}: mean slope error {err}");
        }
        // shifts: the fitted step has the class's sign and matches the drawn x in [7.5, 20]
        for (class, sign) in [(4, 1.0), (5, -1.0)] {
            let mut close = 0;
            for e in class * 100..class * 100 + 100 {
                let (fit, x, t3) = (sign * step_size(&series_of(train, e)), drawn(e, 0), drawn(e, 1));
                assert!(fit > 5.0 && (7.5..20.0).contains(&x) && (20.0..40.0).contains(&t3), "env {e}: {fit} vs {x}");
                close += usize::from((fit - x).abs() < 2.0);
            }
            assert!(close >= 95, "class {class}: {close} of 100 fitted steps within 2 of x");
        }
        // cyclic: the autocorrelation peaks again at the drawn period T in [10, 15]
        let mut close = 0;
        for i in 0..100 {
            let lag = period(&series_of(train, 100 + i));
            let t = m.splits[0].environments[100 + i].parameters[1];
            assert!((9..=16).contains(&lag), "series {i}: lag {lag}");
            close += usize::from((lag as f64 - t).abs() <= 1.0);
        }
        assert!(close >= 90, "{close} of 100 autocorrelation peaks within one step of T");
        // the test split is the same environments with new noise: same slopes within the noise
        let (a, b) = (series_of(train, 250), series_of(&d.test, 250));
        assert!(a != b && (slope(&a) - slope(&b)).abs() < 0.1);
    }

    #[test]
    fn generation_is_seeded_and_round_trips_through_npz() {
        let spec = ControlChartSpec { per_class: 3, adapt_per_class: 1, steps: 12 };
        let a = generate_control_charts(&spec, 1).unwrap();
        let b = generate_control_charts(&spec, 1).unwrap();
        let c = generate_control_charts(&spec, 2).unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.adapt_test, b.adapt_test);
        assert_ne!(a.train.x, c.train.x);
        let dir = tempfile::tempdir().unwrap();
        a.write(dir.path()).unwrap();
        let back = crate::load_dir(dir.path()).unwrap();
        assert_eq!(back.train.families, a.train.families);
        assert_eq!(back.train.x, a.train.x);
        let m = back.manifest.unwrap();
        assert_eq!(m.splits[0].shape, vec![6, 3, 1, 12, 1]);
        assert_eq!(m.families[1].name, "cyclic");
        assert_eq!(m.families[4].parameters, vec!["x", "t3"]);
        assert!(m.families.iter().all(|f| f.solver.is_none()));
    }

    #[test]
    fn each_invalid_field_is_rejected() {
        let ok = ControlChartSpec { per_class: 2, adapt_per_class: 1, steps: 6 };
        assert!(ok.check().is_ok());
        for (bad, field) in [
            (ControlChartSpec { per_class: 0, ..ok }, "per_class"),
            (ControlChartSpec { adapt_per_class: 0, ..ok }, "adapt_per_class"),
            (ControlChartSpec { steps: 5, ..ok }, "steps"),
        ] {
            let err = generate_control_charts(&bad, 0).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
