//! Dataset generation (MIXER.md §6): environments, initial conditions, ground truth by diffsol.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array4;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use mixer_core::{Dataset, Rng, Seeds, Split, TimeGrid};
use mixer_ode::ReferenceSolver;

use crate::{CompiledFamily, DataError, DatasetSpec, InitialConditions};

/// Relative tolerance of the ground truth (MIXER.md §6).
pub const RTOL: f64 = 1e-8;
/// Absolute tolerance of the ground truth.
pub const ATOL: f64 = 1e-10;

/// What was generated, written next to the data as `dataset.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset name.
    pub system: String,
    /// Family names, in family order.
    pub families: Vec<String>,
    /// Parameter names of each family.
    pub parameter_names: Vec<Vec<String>>,
    /// Parameter values of every environment of every split (`[families * envs][params]`).
    pub parameters: BTreeMap<String, Vec<Vec<f64>>>,
    /// Generation seed.
    pub seed: u64,
    /// Reference method.
    pub solver: String,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

/// The four generated splits and their manifest.
#[derive(Clone, Debug)]
pub struct Generated {
    /// Splits in [`Split::ALL`] order.
    pub splits: Vec<(Split, Dataset)>,
    /// What was generated.
    pub manifest: Manifest,
}

fn draw_ics(rule: &InitialConditions, n: usize, include_reference: bool, rng: &mut Rng) -> Vec<Vec<f64>> {
    let (low, high, reference) = match rule {
        InitialConditions::Box { low, high } => (low.clone(), high.clone(), vec![]),
        InitialConditions::ReferenceBox { reference } => {
            let dim = reference[0].len();
            let low = (0..dim).map(|j| reference.iter().map(|r| r[j]).fold(f64::INFINITY, f64::min)).collect();
            let high = (0..dim).map(|j| reference.iter().map(|r| r[j]).fold(f64::NEG_INFINITY, f64::max)).collect();
            (low, high, reference.clone())
        }
    };
    let mut out: Vec<Vec<f64>> = if include_reference { reference.into_iter().take(n).collect() } else { vec![] };
    while out.len() < n {
        out.push(low.iter().zip(&high).map(|(l, h)| if h > l { rng.random_range(*l..*h) } else { *l }).collect());
    }
    out
}

/// Generates all four splits of a specification with a seed.
#[instrument(skip_all, fields(system = %spec.name, seed))]
pub fn generate(spec: &DatasetSpec, seed: u64, progress: bool) -> Result<Generated, DataError> {
    spec.validate()?;
    let families = spec.family.iter().cloned().map(CompiledFamily::new).collect::<Result<Vec<_>, _>>()?;
    let solver = ReferenceSolver::new(spec.solver, RTOL, ATOL);
    let seeds = Seeds::new(seed);
    let total: usize = Split::ALL
        .iter()
        .map(|&s| {
            let adapt = matches!(s, Split::AdaptTrain | Split::AdaptTest);
            families.iter().map(|f| spec.environments(&f.spec, adapt).len()).sum::<usize>() * spec.trajectories.of(s)
        })
        .sum();
    let bar = if progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} trajectories ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(spec.name.clone());
    let mut splits = Vec::new();
    let mut parameters = BTreeMap::new();
    for split in Split::ALL {
        let adapt = matches!(split, Split::AdaptTrain | Split::AdaptTest);
        let n = spec.trajectories.of(split);
        let mut rng = seeds.stream(split.stem());
        let mut rows = Vec::new();
        let mut grids = Vec::new();
        let mut labels = Vec::new();
        let mut params_of_split = Vec::new();
        let mut envs_per_family = None;
        for (fi, fam) in families.iter().enumerate() {
            let envs = spec.environments(&fam.spec, adapt);
            if *envs_per_family.get_or_insert(envs.len()) != envs.len() {
                return Err(DataError::System { name: spec.name.clone(), reason: "families differ in environment count".into() });
            }
            let t: Vec<f64> = (0..spec.points).map(|k| k as f64 * fam.spec.horizon / spec.points as f64).collect();
            for p in envs {
                let ics = draw_ics(&fam.spec.initial_conditions, n, split == Split::Train, &mut rng);
                for y0 in ics {
                    let sol = solver.solve(&fam.at(&p), &y0, &t).map_err(|e| DataError::Solve {
                        system: fam.spec.name.clone(),
                        params: p.clone(),
                        reason: e.to_string(),
                    })?;
                    rows.push(sol);
                    bar.inc(1);
                }
                grids.push(t.clone());
                labels.push(fi);
                params_of_split.push(p);
            }
        }
        let envs = labels.len();
        let dim = families[0].dim();
        let flat: Vec<f64> = rows.into_iter().flatten().collect();
        let x = Array4::from_shape_vec((envs, n, spec.points, dim), flat).expect("rows have points x dim values");
        let (t, fam) = if families.len() == 1 {
            (TimeGrid::Shared(grids.swap_remove(0)), None)
        } else {
            (TimeGrid::PerEnv(grids), Some(labels))
        };
        splits.push((split, Dataset::new(x, t, fam)?));
        parameters.insert(split.stem().to_string(), params_of_split);
    }
    bar.finish_and_clear();
    let manifest = Manifest {
        system: spec.name.clone(),
        families: spec.family.iter().map(|f| f.name.clone()).collect(),
        parameter_names: spec.family.iter().map(|f| f.parameters.iter().map(|p| p.name.clone()).collect()).collect(),
        parameters,
        seed,
        solver: format!("{:?}", spec.solver).to_lowercase(),
        rtol: RTOL,
        atol: ATOL,
    };
    Ok(Generated { splits, manifest })
}
