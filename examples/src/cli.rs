//! Small helpers shared by the example programs' command-line front ends.
//!
//! Every example trains for a number of steps and reports metrics. These helpers give them a
//! common look: an `indicatif` progress bar showing the running loss and the step rate, and
//! machine-readable JSON lines on stdout that scripts (and CI logs) can parse. Progress bars
//! draw on stderr and hide themselves when stderr is not a terminal, so they never pollute
//! the JSON output or CI logs.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};

/// The template used by [`progress_bar`]: the prefix (what is running), elapsed time, the bar,
/// position, rate, time left, and the message, which [`set_loss`] fills with the loss.
pub const PROGRESS_TEMPLATE: &str =
    "{prefix:.bold} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ({per_sec}, eta {eta}) {msg}";

/// A progress bar over `total` steps labelled `msg`, showing elapsed time, rate and ETA; call
/// [`set_loss`] (or `set_message`) to show the current loss.
pub fn progress_bar(total: u64, msg: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let pb = ProgressBar::new(total).with_style(style);
    pb.set_prefix(msg.to_string());
    pb
}

/// Shows `loss` (4 decimals) in the bar's message.
pub fn set_loss(pb: &ProgressBar, loss: f64) {
    pb.set_message(format!("loss {loss:.4}"));
}

/// Prints `value` as one compact JSON line on stdout and flushes, so the line reaches a pipe
/// immediately. Returns the write error (for instance a closed pipe) instead of panicking.
pub fn print_json_line(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write_json_line(&mut out, value)?;
    out.flush()
}

/// Writes `value` as one compact JSON line to `out` (the testable core of
/// [`print_json_line`]).
pub fn write_json_line(out: &mut impl Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_compact() {
        let mut buf = Vec::new();
        let v = serde_json::json!({"step": 3, "loss": 1.25, "tag": "a\nb"});
        write_json_line(&mut buf, &v).unwrap();
        write_json_line(&mut buf, &serde_json::json!([1, 2])).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, v);
        assert_eq!(lines[1], "[1,2]");
        print_json_line(&serde_json::json!({"ok": true})).unwrap();
    }

    #[test]
    fn progress_bar_tracks_position() {
        // The template must parse (otherwise the fallback style would be used silently).
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
        let pb = progress_bar(10, "train");
        pb.inc(3);
        set_loss(&pb, 0.123456);
        assert_eq!(pb.position(), 3);
        assert_eq!(pb.length(), Some(10));
        assert_eq!(pb.message(), "loss 0.1235");
        assert_eq!(pb.prefix(), "train");
        pb.finish_and_clear();
    }
}
