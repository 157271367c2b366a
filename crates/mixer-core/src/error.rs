//! The base error every mixer crate wraps.

use std::path::PathBuf;

/// Result with the base error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors shared by all mixer crates; each carries the numbers needed to diagnose it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its allowed range.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: String,
        /// What the field must satisfy.
        reason: String,
    },
    /// A tensor or array has the wrong shape.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What was being checked.
        what: String,
        /// The shape that was expected.
        expected: String,
        /// The shape that was found.
        found: String,
    },
    /// Input data holds NaN or infinity.
    #[error("non-finite value in {what} at flat index {index}")]
    NonFiniteData {
        /// Which data.
        what: String,
        /// Position of the first bad value.
        index: usize,
    },
    /// A solver hit its step bound before reaching the final time.
    #[error(
        "solver reached max_steps = {steps} at t = {t:.6e}; raise max_steps, loosen the tolerances or use a stiff method"
    )]
    MaxStepsReached {
        /// Time reached.
        t: f64,
        /// Steps taken.
        steps: usize,
    },
    /// The adaptive step size fell below the smallest step allowed.
    #[error("step size underflow: h = {h:.3e} at t = {t:.6e}; the problem may be stiff or the solution may blow up")]
    StepSizeUnderflow {
        /// Time reached.
        t: f64,
        /// The step size.
        h: f64,
    },
    /// The state became NaN or infinite during a solve.
    #[error("state became non-finite at t = {t:.6e}; the dynamics diverge or the step is too large")]
    NonFiniteState {
        /// Time at which it happened.
        t: f64,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(what: impl Into<String>, expected: impl std::fmt::Debug, found: impl std::fmt::Debug) -> Self {
        Error::ShapeMismatch { what: what.into(), expected: format!("{expected:?}"), found: format!("{found:?}") }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Checks that every value is finite; names the data in the error.
pub fn ensure_finite<'a>(what: &str, values: impl IntoIterator<Item = &'a f64>) -> Result<()> {
    match values.into_iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFiniteData { what: what.to_string(), index }),
        None => Ok(()),
    }
}
