//! Dataset generation (the MixER paper (Nzoyem et al., 2025), §6): environments from the rules, seeded initial conditions,
//! reference solves by diffsol, four splits and a manifest.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::ProgressBar;
use mixer_core::{Dataset, Error, Rng, Seeds, Split, TimeGrid};
use mixer_ode::{OdeError, ReferenceSolver};
use ndarray::Array4;
use rand::Rng as _;
use tracing::{info, instrument};

use crate::dataset_spec::DatasetSpec;
use crate::dir::DatasetDir;
use crate::manifest::{EnvInfo, FamilyInfo, Manifest, SplitInfo};
use crate::spec::{InitialRule, SystemSpec};
use crate::{DataError, System};

/// Seed and tolerances of a generation run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Seed of the initial-condition draws (named streams per family and split).
    pub seed: u64,
    /// Relative tolerance of the reference solves (the MixER paper (Nzoyem et al., 2025), §6: 1e-8).
    pub rtol: f64,
    /// Absolute tolerance of the reference solves.
    pub atol: f64,
    /// Worker threads for the solves (results do not depend on it).
    pub threads: usize,
}

impl GenerateOptions {
    /// Seed `seed`, rtol 1e-8, atol 1e-10, one thread per available core.
    pub fn new(seed: u64) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { seed, rtol: 1e-8, atol: 1e-10, threads }
    }

    /// Checks the tolerances and thread count.
    pub fn validate(&self) -> Result<(), DataError> {
        for (f, v) in [("rtol", self.rtol), ("atol", self.atol)] {
            if !(v > 0.0 && v < 1.0) {
                return Err(Error::config(f, format!("must be in (0, 1), got {v}")).into());
            }
        }
        if self.threads == 0 {
            return Err(Error::config("threads", "needs at least 1").into());
        }
        Ok(())
    }
}

/// Number of reference solves `generate` will run for `spec`.
pub fn solve_count(spec: &DatasetSpec) -> usize {
    spec.members
        .iter()
        .map(|m| {
            let s = m.spec();
            let (tr, ad) = (
                s.environments.train.environments(&s.parameters).len(),
                s.environments.adapt.environments(&s.parameters).len(),
            );
            let c = s.trajectories;
            tr * (c.train + c.test) + ad * (c.adapt_train + c.adapt_test)
        })
        .sum()
}

/// Initial states of one split of one environment, `[trajs][dim]`.
pub fn initial_states(spec: &SystemSpec, split: Split, trajs: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let cells = spec.dim() / spec.state.len();
    (0..trajs)
        .map(|k| match &spec.initial {
            InitialRule::ReferenceBox { reference } => {
                let leads = matches!(split, Split::Train | Split::AdaptTrain);
                if leads && k < reference.len() {
                    reference[k].clone()
                } else {
                    (0..spec.state.len())
                        .map(|i| {
                            let (a, b) = (reference[0][i].min(reference[1][i]), reference[0][i].max(reference[1][i]));
                            a + (b - a) * rng.random::<f64>()
                        })
                        .collect()
                }
            }
            InitialRule::Uniform { low, high } => (0..spec.state.len())
                .flat_map(|i| (0..cells).map(move |_| i))
                .map(|i| low[i] + (high[i] - low[i]) * rng.random::<f64>())
                .collect(),
        })
        .collect()
}

struct Job {
    family: usize,
    env: usize,
    traj: usize,
    params: Vec<f64>,
    y0: Vec<f64>,
}

/// Generates the four splits of `spec` with their manifest. Same seed and spec, same values.
#[instrument(skip_all, fields(dataset = %spec.name, seed = options.seed))]
pub fn generate(
    spec: &DatasetSpec,
    options: &GenerateOptions,
    progress: &ProgressBar,
) -> Result<DatasetDir, DataError> {
    options.validate()?;
    let seeds = Seeds::new(options.seed);
    progress.set_length(solve_count(spec) as u64);
    let mut out = Vec::with_capacity(4);
    let mut split_infos = Vec::with_capacity(4);
    for split in Split::ALL {
        let (data, envs) = generate_split(spec, split, options, &seeds, progress)?;
        let (e, n, k, d) = data.x.dim();
        let nf = spec.members.len();
        let shape = if spec.family_axis { vec![nf, e / nf, n, k, d] } else { vec![e, n, k, d] };
        split_infos.push(SplitInfo {
            split: split.stem().to_string(),
            file: format!("{}.npz", split.stem()),
            shape,
            environments: envs,
        });
        out.push(data);
    }
    progress.finish();
    let families = spec
        .members
        .iter()
        .map(|m| {
            let s = m.spec();
            FamilyInfo {
                name: s.name.clone(),
                state: s.state.clone(),
                parameters: s.parameter_names(),
                horizon: s.horizon,
                solver: Some(s.solver),
            }
        })
        .collect();
    let manifest = Manifest {
        system: spec.name.clone(),
        description: spec.description.clone(),
        seed: options.seed,
        rtol: options.rtol,
        atol: options.atol,
        keep_every: spec.keep_every,
        families,
        splits: split_infos,
    };
    let mut it = out.into_iter();
    let mut next = || it.next().ok_or_else(|| Error::config("splits", "four splits expected"));
    Ok(DatasetDir {
        train: next()?,
        test: next()?,
        adapt_train: next()?,
        adapt_test: next()?,
        manifest: Some(manifest),
    })
}

fn generate_split(
    spec: &DatasetSpec,
    split: Split,
    options: &GenerateOptions,
    seeds: &Seeds,
    progress: &ProgressBar,
) -> Result<(Dataset, Vec<EnvInfo>), DataError> {
    let mut jobs = Vec::new();
    let mut envs_info = Vec::new();
    let mut shape = None;
    for (family, member) in spec.members.iter().enumerate() {
        let s = member.spec();
        let (rule, trajs) = match split {
            Split::Train => (&s.environments.train, s.trajectories.train),
            Split::Test => (&s.environments.train, s.trajectories.test),
            Split::AdaptTrain => (&s.environments.adapt, s.trajectories.adapt_train),
            Split::AdaptTest => (&s.environments.adapt, s.trajectories.adapt_test),
        };
        let envs = rule.environments(&s.parameters);
        let this = (envs.len(), trajs, s.points, s.dim());
        if *shape.get_or_insert(this) != this {
            return Err(DataError::spec(
                &spec.name,
                "families",
                format!(
                    "`{}` gives {this:?} (envs, trajs, steps, dim) in split {}, unlike the first family",
                    s.name,
                    split.stem()
                ),
            ));
        }
        let mut rng = seeds.stream(&format!("initial/{}/{}", s.name, split.stem()));
        for (env, params) in envs.into_iter().enumerate() {
            for (traj, y0) in initial_states(s, split, trajs, &mut rng).into_iter().enumerate() {
                jobs.push(Job { family, env, traj, params: params.clone(), y0 });
            }
            envs_info.push(EnvInfo { family, parameters: params });
        }
    }
    let (envs, trajs, steps, dim) = shape.unwrap_or((0, 0, 0, 0));
    if envs == 0 || trajs == 0 {
        return Err(DataError::spec(
            &spec.name,
            "trajectories",
            format!("split {} has no environments or trajectories", split.stem()),
        ));
    }
    info!(split = split.stem(), solves = jobs.len(), "generating split");
    let results = solve_all(spec, &jobs, options, progress);
    let nf = spec.members.len();
    let mut x = Array4::<f64>::zeros((nf * envs, trajs, steps, dim));
    for (job, res) in jobs.iter().zip(results) {
        let values = res.map_err(|source| DataError::Solve {
            system: spec.members[job.family].spec().name.clone(),
            env: job.env,
            traj: job.traj,
            source,
        })?;
        let e = job.family * envs + job.env;
        for k in 0..steps {
            for d in 0..dim {
                x[[e, job.traj, k, d]] = values[k * dim + d];
            }
        }
    }
    if matches!(split, Split::Train | Split::AdaptTrain) {
        for (family, member) in spec.members.iter().enumerate() {
            let s = member.spec();
            if s.noise > 0.0 {
                let mut rng = seeds.stream(&format!("noise/{}/{}", s.name, split.stem()));
                add_noise(
                    &mut x.slice_mut(ndarray::s![family * envs..(family + 1) * envs, .., .., ..]),
                    s.noise,
                    &mut rng,
                );
            }
        }
    }
    let t = if spec.family_axis {
        TimeGrid::PerEnv((0..nf * envs).map(|e| spec.members[e / envs].spec().times()).collect())
    } else {
        TimeGrid::Shared(spec.members[0].spec().times())
    };
    let families = spec.family_axis.then(|| (0..nf * envs).map(|e| e / envs).collect());
    Ok((Dataset::new(x, t, families)?, envs_info))
}

/// Adds Gaussian noise of `level` times each state variable's standard deviation over its
/// trajectory to `x` `[envs, trajs, steps, dim]`.
fn add_noise(x: &mut ndarray::ArrayViewMut4<f64>, level: f64, rng: &mut impl rand::Rng) {
    let (envs, trajs, _, dim) = x.dim();
    for e in 0..envs {
        for n in 0..trajs {
            for d in 0..dim {
                let mut series = x.slice_mut(ndarray::s![e, n, .., d]);
                let mean = series.mean().unwrap_or(0.0);
                let std = series.mapv(|v| (v - mean).powi(2)).mean().unwrap_or(0.0).sqrt();
                let normal = rand_distr::Normal::new(0.0, level * std).expect("a finite, non-negative spread");
                series.mapv_inplace(|v| v + rand_distr::Distribution::sample(&normal, rng));
            }
        }
    }
}

/// Runs the solves on `options.threads` threads; results come back in job order.
fn solve_all(
    spec: &DatasetSpec,
    jobs: &[Job],
    options: &GenerateOptions,
    progress: &ProgressBar,
) -> Vec<Result<Vec<f64>, OdeError>> {
    let next = AtomicUsize::new(0);
    type Slot = Option<Result<Vec<f64>, OdeError>>;
    let results: Mutex<Vec<Slot>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { break };
            let r = solve_one(&spec.members[job.family], job, options);
            if let Ok(mut guard) = results.lock() {
                guard[i] = Some(r);
            }
            progress.inc(1);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..options.threads.min(jobs.len().max(1)) {
            scope.spawn(work);
        }
        work();
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::config("solve", "a worker thread stopped early").into())))
        .collect()
}

fn solve_one(system: &System, job: &Job, options: &GenerateOptions) -> Result<Vec<f64>, OdeError> {
    let s = system.spec();
    let instance = system.instance(&job.params).map_err(|e| match e {
        DataError::Core(c) => OdeError::Core(c),
        other => OdeError::Core(Error::config("parameters", other.to_string())),
    })?;
    let solver = ReferenceSolver::new(s.solver, options.rtol, options.atol);
    solver.solve(&instance, &job.y0, &s.times())
}
