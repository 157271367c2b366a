//! The progress bar of step-counted training loops.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` steps starting at `position` (hidden when `show` is false), with elapsed
/// time, ETA and a message slot.
pub fn step_bar(len: usize, position: usize, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(len as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps (eta {eta})  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(position as u64);
    bar
}
