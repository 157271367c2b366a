//! A solver chosen in a config file.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use mixer_core::{Error, Integrator};

use crate::{Euler, HostSolver, Interpolation, OdeError, Rk4, StepController, Tsit5};

/// A differentiable solver as written in experiment files (`method = "rk4" | "euler" | "tsit5"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum SolverConfig {
    /// Forward Euler.
    Euler {
        /// Steps per output interval.
        substeps: usize,
    },
    /// Classical RK4.
    Rk4 {
        /// Steps per output interval.
        substeps: usize,
    },
    /// Adaptive Tsit5 5(4).
    Tsit5 {
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
        /// First step (automatic when absent).
        #[serde(default)]
        initial_step: Option<f64>,
        /// Step bound.
        max_steps: usize,
    },
}

impl SolverConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), OdeError> {
        match self {
            SolverConfig::Euler { substeps } | SolverConfig::Rk4 { substeps } if *substeps == 0 => {
                Err(Error::config("substeps", "must be at least 1").into())
            }
            SolverConfig::Tsit5 { rtol, atol, initial_step, max_steps } => {
                StepController::new(*rtol, *atol).validate()?;
                if *max_steps == 0 {
                    return Err(Error::config("max_steps", "must be at least 1").into());
                }
                if initial_step.is_some_and(|h| !(h > 0.0 && h.is_finite())) {
                    return Err(Error::config("initial_step", "must be > 0 when given").into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Builds the solver after validation.
    pub fn build<B: Backend>(&self) -> Result<Box<dyn Integrator<B>>, OdeError> {
        Ok(match self.build_host()? {
            HostSolver::Euler(m) => Box::new(m),
            HostSolver::Rk4(m) => Box::new(m),
            HostSolver::FixedTsit5(m) => Box::new(m),
            HostSolver::Tsit5(m) => Box::new(m),
        })
    }

    /// Builds the same method, after validation, to run on host buffers (no gradient).
    pub fn build_host(&self) -> Result<HostSolver, OdeError> {
        self.validate()?;
        Ok(match *self {
            SolverConfig::Euler { substeps } => HostSolver::Euler(Euler { substeps }),
            SolverConfig::Rk4 { substeps } => HostSolver::Rk4(Rk4 { substeps }),
            SolverConfig::Tsit5 { rtol, atol, initial_step, max_steps } => HostSolver::Tsit5(Tsit5 {
                controller: StepController::new(rtol, atol),
                initial_step,
                max_steps,
                interpolation: Interpolation::StepToOutputs,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn each_invalid_field_is_rejected_and_valid_configs_build() {
        let tsit5 = SolverConfig::Tsit5 { rtol: 1e-6, atol: 1e-8, initial_step: None, max_steps: 100 };
        for ok in [SolverConfig::Euler { substeps: 1 }, SolverConfig::Rk4 { substeps: 4 }, tsit5.clone()] {
            let built = ok.build::<NdArray<f64>>().unwrap();
            assert!(built.order() >= 1);
            let host = ok.build_host().unwrap();
            assert_eq!(host.order(), built.order());
            assert_eq!(HostSolver::from_integrator(built.as_ref()), Some(host));
        }
        let bad = [
            SolverConfig::Euler { substeps: 0 },
            SolverConfig::Rk4 { substeps: 0 },
            SolverConfig::Tsit5 { rtol: 0.0, atol: 1e-8, initial_step: None, max_steps: 100 },
            SolverConfig::Tsit5 { rtol: 1e-6, atol: f64::NAN, initial_step: None, max_steps: 100 },
            SolverConfig::Tsit5 { rtol: 1e-6, atol: 1e-8, initial_step: Some(-1.0), max_steps: 100 },
            SolverConfig::Tsit5 { rtol: 1e-6, atol: 1e-8, initial_step: None, max_steps: 0 },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
            assert!(cfg.build::<NdArray<f64>>().is_err(), "{cfg:?}");
            assert!(cfg.build_host().is_err(), "{cfg:?}");
        }
    }
}
