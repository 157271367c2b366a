//! Systems zoo, dataset generation and `.npz` I/O for mixer.
//!
//! - **Systems as data** ([`SystemSpec`], one TOML file per system): state names, parameters with
//!   reference values, right-hand sides as text (parsed by exmex, with exact partial derivatives
//!   for the Jacobian action of stiff solvers), initial-condition rule, horizon and points,
//!   environment rules. Reaction–diffusion systems add a periodic [`GridSpec`]. Shipped: every
//!   ODEBench system (1-D to 4-D), Lotka–Volterra, Sel'kov, the 7-species glycolytic
//!   oscillator, Lorenz-63, Brusselator and Gray–Scott ([`builtin_names`]), plus collections
//!   of families (`odebench-2d`, ...).
//! - **Generation** ([`generate`], the MixER paper (Nzoyem et al., 2025), §6): environment grids, seeded initial conditions,
//!   diffsol reference solves (rtol 1e-8), the four splits and a [`Manifest`].
//! - **Folders** ([`load_dir`], [`load_split`], [`DatasetDir::write`]) in the published layout:
//!   `X: [envs, trajs, steps, dim]` (or `[families, envs, trajs, steps, dim]`) and `t`, plus
//!   `dataset.toml`; [`subsample`], [`random_window`] and [`crop`] for training.
//! - **Field datasets** ([`FieldDir`], [`load_field_dir`]): gridded trajectories
//!   `[runs, frames, H, W, channels]` per split (`train`, `val`, `test`), an optional region map
//!   and `fields.toml`; the heat-regions benchmark ([`generate_heat_regions`], Dryden & Hoefler,
//!   2022) and reaction–diffusion datasets reshaped to fields ([`field_set_from_grid_dataset`]).
//! - **PDE families for operator pre-training** (MoE-POT), each a field folder with one swept
//!   parameter recorded per run ([`FieldManifest::run_values`]): 2-D Navier–Stokes in vorticity
//!   form ([`generate_navier_stokes`], the FNO benchmark), PDEBench's FitzHugh–Nagumo
//!   diffusion–reaction ([`generate_diffusion_reaction`]) and 2-D viscous Burgers
//!   ([`generate_burgers`]); the spectral solvers run on the crate's radix-2 FFT ([`fft`]).
//! - **Controlled systems** ([`ControlSpec`], [`ControlSystem`]; HyperCRL, Huang et al., IROS
//!   2021): `dx/dt = f(x, u; p)` with a reward, action bounds and a task sequence of parameter
//!   settings, stepped in batches by RK4 ([`ControlSystem::step`]); shipped: pendulum and
//!   cart-pole swing-up, a two-link reacher ([`control_builtin_names`]).
//! - **Synthetic control charts** ([`generate_control_charts`]; Alcock & Manolopoulos, 1999):
//!   six classes of 1-D series, one series per environment, the class as its family label.
//!
//! ```
//! use mixer_data::{DatasetSpec, GenerateOptions, generate};
//! # fn main() -> Result<(), mixer_data::DataError> {
//! let spec = DatasetSpec::builtin("lotka-volterra")?;
//! let data = generate(&spec, &GenerateOptions::new(0), &indicatif::ProgressBar::hidden())?;
//! assert_eq!(data.train.x.dim(), (9, 4, 20, 2));
//! let every_other = mixer_data::subsample(&data.train, 2)?;
//! assert_eq!(every_other.num_steps(), 10);
//! # Ok(())
//! # }
//! ```

mod builtin;
mod burgers;
mod charts;
mod control;
mod control_spec;
mod dataset_spec;
mod diffusion_reaction;
mod dir;
mod equations;
mod error;
pub mod fft;
mod field;
mod generate;
mod heat_regions;
mod io;
mod manifest;
pub mod mutate;
mod navier_stokes;
mod npy;
mod pde;
mod sampling;
mod spec;
mod system;
mod ts;

pub use burgers::{BURGERS, BURGERS_DESCRIPTION, Burgers2d, BurgersSpec, generate_burgers};
pub use charts::{CONTROL_CHARTS, CONTROL_CHARTS_DESCRIPTION, ChartClass, ControlChartSpec, generate_control_charts};
pub use control::{ControlStep, ControlSystem, control_builtin_names};
pub use control_spec::{ActionBound, ControlSpec, ControlTask, InitialState};
pub use dataset_spec::{DatasetSpec, builtin_names, builtin_system, builtin_text};
pub use diffusion_reaction::{
    DIFFUSION_REACTION, DIFFUSION_REACTION_DESCRIPTION, DiffusionReaction2d, DiffusionReactionSpec,
    generate_diffusion_reaction,
};
pub use dir::{DatasetDir, load_dir, load_split, split_file_names};
pub use equations::Equations;
pub use error::DataError;
pub use fft::{Complex64, Fft, Fft2, SpectralGrid};
pub use field::{
    FIELD_MANIFEST_FILE, FIELD_SPLITS, FieldDir, FieldManifest, FieldParameter, FieldSet, REGIONS_FILE, SplitRuns,
    check_region_map, field_set_from_grid_dataset, is_field_dir, load_field_dir, read_field_npz, read_region_map,
    region_cells, write_field_npz, write_region_map,
};
pub use generate::{GenerateOptions, generate, initial_states, solve_count};
pub use heat_regions::{
    HEAT_REGIONS, HEAT_REGIONS_DESCRIPTION, HeatRegionsSpec, generate_heat_regions, generate_heat_regions_grown,
    grow_region_map, heat_regions_map, heat_step,
};
pub use io::{read_npz, write_npz};
pub use manifest::{EnvInfo, FamilyInfo, MANIFEST_FILE, Manifest, SplitInfo};
pub use navier_stokes::{
    NAVIER_STOKES, NAVIER_STOKES_DESCRIPTION, NavierStokes2d, NavierStokesSpec, gaussian_random_field,
    generate_navier_stokes,
};
pub use pde::{PDE_FAMILIES, PdeSpec};
pub use sampling::{Window, crop, random_window, subsample};
pub use spec::{
    CollectionSpec, EnvRule, EnvironmentPlan, GridSpec, InitialRule, ParamValues, Parameter, SystemSpec,
    TrajectoryCounts, linspace,
};
pub use system::{Instance, System};
pub use ts::{LabelledSeries, parse_ts, read_ts};
