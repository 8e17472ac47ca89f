//! File progress on a terminal: a real progress bar (indicatif) per transfer, drawn
//! on the line just above the line being typed and redrawn there in place, so that
//! neither garbles the other.
//!
//! How: indicatif renders each frame into [`BarLine`] (a `TermLike` that only
//! keeps the text); the frame goes out through rustyline's external printer, which
//! clears the prompt, prints it and draws the prompt again below it. A frame that
//! follows a frame starts by moving up one line and clearing it, so the bar stays
//! on one line; any other line printed in between ends that (the next frame starts
//! a new line). On pipes there is no bar: the sparse `* sending ...` lines remain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// Where a bar's frames go: the terminal's line above the prompt.
pub trait BarSink: Send + Sync + 'static {
    /// Shows `frame` on the bar line.
    fn bar(&self, frame: &str);
}

/// The progress bars under way, by transfer (`sending`, file name).
pub struct Bars {
    sink: Arc<dyn BarSink>,
    bars: HashMap<(bool, String), ProgressBar>,
}

impl Bars {
    /// Bars drawn through `sink`.
    pub fn new(sink: Arc<dyn BarSink>) -> Bars {
        Bars {
            sink,
            bars: HashMap::new(),
        }
    }

    /// A transfer moved: `done` of `size` bytes, at `rate` bytes a second, about
    /// `left_s` seconds to go (the library's own figures).
    pub fn progress(
        &mut self,
        sending: bool,
        name: &str,
        done: u64,
        size: u64,
        rate: u64,
        left_s: u64,
    ) {
        let sink = self.sink.clone();
        let bar = self
            .bars
            .entry((sending, name.to_owned()))
            .or_insert_with(|| new_bar(sink, size));
        // The position first: one frame shows both (the message change draws).
        bar.set_position(done);
        bar.set_message(format!(
            "{} {name}: {}/s, about {left_s} s left",
            if sending { "sending" } else { "receiving" },
            p2pchat_client::transfer::human(rate)
        ));
    }

    /// A transfer ended (delivered, received, failed): its bar goes.
    pub fn finish(&mut self, sending: bool, name: &str) {
        if let Some(bar) = self.bars.remove(&(sending, name.to_owned())) {
            bar.set_position(bar.length().unwrap_or(0));
            bar.abandon();
        }
    }
}

fn new_bar(sink: Arc<dyn BarSink>, size: u64) -> ProgressBar {
    let line = BarLine {
        sink,
        frame: Mutex::new(String::new()),
    };
    let bar = ProgressBar::with_draw_target(
        Some(size),
        ProgressDrawTarget::term_like_with_hz(Box::new(line), 4),
    );
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {percent}% of {binary_total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A terminal for indicatif that keeps the frame's text and hands it to the sink
/// when indicatif flushes; cursor moves are the sink's business.
struct BarLine {
    sink: Arc<dyn BarSink>,
    frame: Mutex<String>,
}

impl std::fmt::Debug for BarLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BarLine")
    }
}

impl BarLine {
    fn frame(&self) -> std::sync::MutexGuard<'_, String> {
        self.frame.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TermLike for BarLine {
    fn width(&self) -> u16 {
        // One column short of the terminal: a frame that wrapped would take two
        // lines, and the next could not replace it.
        let (_, columns) = console::Term::stdout().size();
        columns.saturating_sub(1).max(20)
    }

    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.frame().push_str(s);
        Ok(())
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.frame().push_str(s);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.frame().clear();
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let frame = std::mem::take(&mut *self.frame());
        if !frame.trim().is_empty() {
            self.sink.bar(&frame);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Frames(Mutex<Vec<String>>);

    impl BarSink for Frames {
        fn bar(&self, frame: &str) {
            self.0.lock().unwrap().push(frame.to_owned());
        }
    }

    #[test]
    fn a_transfer_draws_frames_with_a_bar_its_name_rate_and_time_left() {
        let frames = Arc::new(Frames(Mutex::new(Vec::new())));
        let mut bars = Bars::new(frames.clone());
        bars.progress(true, "a.bin", 512 * 1024, 1024 * 1024, 256 * 1024, 2);
        bars.finish(true, "a.bin");
        let frames = frames.0.lock().unwrap();
        let last = frames.last().expect("a frame");
        assert!(
            last.contains("sending a.bin: 256.0 KiB/s, about 2 s left"),
            "{last}"
        );
        assert!(last.contains("[=============================="), "{last}");
        assert!(last.contains("100% of 1.00 MiB"), "{last}");
        assert!(
            frames
                .iter()
                .any(|f| f.contains("50%") && f.contains("[===============>")),
            "{frames:?}"
        );
    }
}
