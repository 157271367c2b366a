//! The PDE families of operator pre-training, chosen by name: one spec type over the three
//! generators, so that the CLI and the experiments pick, resize and generate any of them alike.

use indicatif::ProgressBar;

use crate::field::FieldDir;
use crate::{
    BURGERS, BurgersSpec, DIFFUSION_REACTION, DataError, DiffusionReactionSpec, NAVIER_STOKES, NavierStokesSpec,
    generate_burgers, generate_diffusion_reaction, generate_navier_stokes,
};

/// The PDE families the project generates, by name.
pub const PDE_FAMILIES: [&str; 3] = [NAVIER_STOKES, DIFFUSION_REACTION, BURGERS];

/// The settings of one PDE family.
#[derive(Clone, Debug, PartialEq)]
pub enum PdeSpec {
    /// 2-D incompressible Navier–Stokes (vorticity).
    NavierStokes(NavierStokesSpec),
    /// 2-D FitzHugh–Nagumo diffusion–reaction.
    DiffusionReaction(DiffusionReactionSpec),
    /// 2-D viscous Burgers.
    Burgers(BurgersSpec),
}

impl PdeSpec {
    /// The settings of family `name` under profile `profile` (`quick` or `paper`); an unknown
    /// family lists the known ones.
    pub fn new(name: &str, profile: &str) -> Result<Self, DataError> {
        Ok(match name {
            NAVIER_STOKES => Self::NavierStokes(NavierStokesSpec::profile(profile)?),
            DIFFUSION_REACTION => Self::DiffusionReaction(DiffusionReactionSpec::profile(profile)?),
            BURGERS => Self::Burgers(BurgersSpec::profile(profile)?),
            other => {
                let reason = format!("`{other}` is not a PDE family; use one of {}", PDE_FAMILIES.join(", "));
                return Err(mixer_core::Error::config("system", reason).into());
            }
        })
    }

    /// The family's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NavierStokes(_) => NAVIER_STOKES,
            Self::DiffusionReaction(_) => DIFFUSION_REACTION,
            Self::Burgers(_) => BURGERS,
        }
    }

    /// The parameter swept over the runs (`run r` uses value `r mod n`).
    pub fn swept(&self) -> &'static str {
        match self {
            Self::DiffusionReaction(_) => "k",
            _ => "viscosity",
        }
    }

    /// The grid side, the runs of each split and the frames, to resize a profile.
    pub fn sizes_mut(&mut self) -> (&mut usize, [&mut usize; 3], &mut usize) {
        match self {
            Self::NavierStokes(s) => {
                (&mut s.size, [&mut s.train_runs, &mut s.val_runs, &mut s.test_runs], &mut s.frames)
            }
            Self::DiffusionReaction(s) => {
                (&mut s.size, [&mut s.train_runs, &mut s.val_runs, &mut s.test_runs], &mut s.frames)
            }
            Self::Burgers(s) => (&mut s.size, [&mut s.train_runs, &mut s.val_runs, &mut s.test_runs], &mut s.frames),
        }
    }

    /// Generates the three splits with `seed`, advancing `progress` by one per run.
    pub fn generate(&self, seed: u64, progress: &ProgressBar) -> Result<FieldDir, DataError> {
        match self {
            Self::NavierStokes(s) => generate_navier_stokes(s, seed, progress),
            Self::DiffusionReaction(s) => generate_diffusion_reaction(s, seed, progress),
            Self::Burgers(s) => generate_burgers(s, seed, progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_resolve_by_name_and_resize() {
        for name in PDE_FAMILIES {
            let mut spec = PdeSpec::new(name, "quick").unwrap();
            assert_eq!(spec.name(), name);
            let (size, runs, frames) = spec.sizes_mut();
            (*size, *frames) = (32, 2);
            runs.into_iter().for_each(|r| *r = 1);
            let data = spec.generate(1, &ProgressBar::hidden()).unwrap();
            assert_eq!(data.test.fields.dim(), (1, 2, 32, 32, data.train.channels()));
        }
        let err = PdeSpec::new("wave", "quick").unwrap_err().to_string();
        assert!(err.contains("wave") && err.contains("navier-stokes, diffusion-reaction, burgers"), "{err}");
        assert!(PdeSpec::new("burgers", "huge").is_err());
    }
}
