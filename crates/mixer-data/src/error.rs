//! The error type of mixer-data.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or generating datasets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A base error (shapes, non-finite values, bad grids, I/O).
    #[error(transparent)]
    Core(#[from] mixer_core::Error),
    /// A system or dataset file has a bad or missing field.
    #[error("system `{system}`: field `{field}`: {reason}")]
    BadSpec {
        /// The system (or file) concerned.
        system: String,
        /// The offending field.
        field: String,
        /// What the field must satisfy.
        reason: String,
    },
    /// An equation could not be parsed or uses an unknown name.
    #[error("system `{system}`: cannot use right-hand side {index} `{expr}`: {reason}")]
    BadExpression {
        /// The system concerned.
        system: String,
        /// Which equation (0-based).
        index: usize,
        /// The expression text.
        expr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No built-in system or dataset has this name.
    #[error("unknown system `{name}`; known: {known}")]
    UnknownSystem {
        /// The requested name.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },
    /// An `.npz` file lacks an array.
    #[error("{path}: missing array `{key}` (the published layout stores `X` and `t`)")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The array name.
        key: String,
    },
    /// An array has the wrong number of axes.
    #[error("{path}: array `{key}` has rank {found}, expected {expected}")]
    WrongRank {
        /// The file.
        path: PathBuf,
        /// The array name.
        key: String,
        /// Accepted ranks, e.g. "4 or 5".
        expected: String,
        /// The rank found.
        found: usize,
    },
    /// A split file is missing from a dataset folder.
    #[error("{dir}: no file for split `{split}`; looked for {looked_for}")]
    MissingSplit {
        /// The folder.
        dir: PathBuf,
        /// The split's name.
        split: String,
        /// The file names tried, comma-separated.
        looked_for: String,
    },
    /// A file's arrays are inconsistent (time grid length, non-finite value, non-increasing t).
    #[error("{path}: {source}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: mixer_core::Error,
    },
    /// An `.npz` or `.npy` file could not be decoded.
    #[error("{path}: cannot read `{key}`: {reason}")]
    Npz {
        /// The file.
        path: PathBuf,
        /// The array name (or `*` for the archive).
        key: String,
        /// The decoder's message.
        reason: String,
    },
    /// A `.ts` time-series file is malformed.
    #[error("{path}: line {line}: {reason}")]
    TimeSeries {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The manifest could not be parsed or written.
    #[error("{path}: bad manifest: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A reference solve failed while generating data.
    #[error("system `{system}`, environment {env}, trajectory {traj}: solve failed: {source}")]
    Solve {
        /// The system.
        system: String,
        /// Environment index within the split.
        env: usize,
        /// Trajectory index.
        traj: usize,
        /// The solver's error.
        source: mixer_ode::OdeError,
    },
    /// A region map does not have the shape of the grid it labels.
    #[error("region map is {found:?} cells but the grid is {grid:?}")]
    RegionShape {
        /// The grid, `[rows, cols]`.
        grid: [usize; 2],
        /// The map's shape, `[rows, cols]`.
        found: [usize; 2],
    },
    /// A region map labels more regions than there are diffusivity values.
    #[error("region map has {regions} regions but only {values} diffusivity values are given")]
    TooManyRegions {
        /// Regions in the map (largest label plus one).
        regions: usize,
        /// Diffusivity values available.
        values: usize,
    },
    /// A region map file holds a label that is not a region index.
    #[error(
        "{path}: region label {label} at flat index {index} is not a region index (0 up to the number of cells - 1)"
    )]
    BadRegionLabel {
        /// The file.
        path: PathBuf,
        /// The offending label.
        label: i64,
        /// Its position in the map, row-major.
        index: usize,
    },
    /// A field set holds NaN or infinity.
    #[error("{what}: non-finite field value at run {run}, frame {frame} (flat index {index})")]
    NonFiniteField {
        /// The file or split concerned.
        what: String,
        /// Run of the first bad value.
        run: usize,
        /// Frame of the first bad value.
        frame: usize,
        /// Position of the first bad value, row-major.
        index: usize,
    },
    /// A grid is too small for the 5-point stencil.
    #[error("grid {rows}x{cols} is too small: the 5-point stencil needs at least 3 cells per side")]
    GridTooSmall {
        /// Rows of the grid.
        rows: usize,
        /// Columns of the grid.
        cols: usize,
    },
    /// A field trajectory has fewer than two frames.
    #[error("{frames} frames per run: a field trajectory needs at least 2 (the initial field and one step)")]
    TooFewFrames {
        /// Frames found or asked for.
        frames: usize,
    },
    /// A file a field dataset folder needs is not there.
    #[error("{path}: missing {what}")]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
        /// What it should hold.
        what: String,
    },
}

impl DataError {
    /// Shorthand for [`DataError::BadSpec`].
    pub fn spec(system: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::BadSpec { system: system.into(), field: field.into(), reason: reason.into() }
    }
}
