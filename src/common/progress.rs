//! The progress bar of a long training step (hidden when not asked for or not on a terminal).

/// A bar of `len` steps named `prefix`; hidden unless `visible`.
pub fn progress_bar(visible: bool, len: u64, prefix: String) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}
