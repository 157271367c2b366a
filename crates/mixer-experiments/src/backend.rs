//! Choosing the burn backend at run time: the one place concrete backends are named.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::ExperimentError;

/// The device a command runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// The faster CPU backend (burn-flex; see docs/benchmarks.md).
    Cpu,
    /// burn-flex on the CPU.
    Flex,
    /// burn-ndarray on the CPU.
    Ndarray,
    /// burn-cuda on the first GPU (needs the `cuda` feature).
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("unknown device `{other}`: expected cpu, flex, ndarray or cuda")),
        }
    }
}

/// Work that is generic over the training backend.
pub trait BackendJob {
    /// What the job returns.
    type Output;

    /// Runs the job on backend `B` and its default device, named `label` in reports.
    fn run<B: AutodiffBackend>(self, device: B::Device, label: &str) -> Self::Output;
}

/// Runs `job` on the chosen backend.
pub fn dispatch<J: BackendJob>(choice: DeviceChoice, job: J) -> Result<J::Output, ExperimentError> {
    match choice {
        DeviceChoice::Cpu | DeviceChoice::Flex => run_flex(job),
        DeviceChoice::Ndarray => run_ndarray(job),
        DeviceChoice::Cuda => run_cuda(job),
    }
}

#[cfg(feature = "flex")]
fn run_flex<J: BackendJob>(job: J) -> Result<J::Output, ExperimentError> {
    type B = Autodiff<burn::backend::Flex>;
    Ok(job.run::<B>(Default::default(), "cpu (burn-flex)"))
}

#[cfg(not(feature = "flex"))]
fn run_flex<J: BackendJob>(job: J) -> Result<J::Output, ExperimentError> {
    run_ndarray(job)
}

#[cfg(feature = "ndarray")]
fn run_ndarray<J: BackendJob>(job: J) -> Result<J::Output, ExperimentError> {
    type B = Autodiff<burn::backend::NdArray>;
    Ok(job.run::<B>(Default::default(), "cpu (burn-ndarray)"))
}

#[cfg(not(feature = "ndarray"))]
fn run_ndarray<J: BackendJob>(_job: J) -> Result<J::Output, ExperimentError> {
    Err(ExperimentError::BackendUnavailable("ndarray (build with the `ndarray` feature)".into()))
}

#[cfg(feature = "cuda")]
fn run_cuda<J: BackendJob>(job: J) -> Result<J::Output, ExperimentError> {
    type B = Autodiff<burn::backend::Cuda>;
    Ok(job.run::<B>(Default::default(), "cuda (burn-cuda, GPU 0)"))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: BackendJob>(_job: J) -> Result<J::Output, ExperimentError> {
    Err(ExperimentError::BackendUnavailable("cuda (build with `--features cuda`)".into()))
}
