//! Parameter profiles of `cargo xtask reproduce`.

use serde::{Deserialize, Serialize};

/// Named parameter sets: `quick` finishes on 2 CPU cores in minutes, `paper` is the published one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Short runs for CI machines and first looks.
    Quick,
    /// The published settings.
    Paper,
}

impl Profile {
    /// The profile's name in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Paper => "paper",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(Profile::Quick),
            "paper" => Ok(Profile::Paper),
            other => Err(format!("unknown profile `{other}`: expected `quick` or `paper`")),
        }
    }
}
