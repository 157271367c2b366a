//! The `tracing` subscriber of the `mixer` binary and of `cargo xtask`: log lines on stderr,
//! coloured only when stderr is a terminal, so logs written to a file or pipe stay plain text.

use std::ffi::OsString;
use std::io::IsTerminal;

/// Installs the global subscriber: `RUST_LOG` or else `default_filter`, stderr, ANSI colour only
/// on a terminal and without `NO_COLOR` set. A second call keeps the first subscriber.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    // Err only when a subscriber is already installed (tests, a second call): keep that one.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Colour when writing to a terminal, unless `NO_COLOR` is set to a non-empty value (no-color.org).
fn use_colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsString::new())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None), "a file or pipe gets no escape codes");
    }
}
