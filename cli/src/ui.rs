//! The terminal side: where typed lines come from and where event lines go.
//!
//! On a terminal, lines are read with rustyline and everything arriving meanwhile is
//! printed through its external printer, so an incoming message never garbles the line
//! being typed. Otherwise (pipes, scripts, tests) lines are read from stdin, end of input
//! counts as `exit`, events go to stdout one per line and errors to stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};

use async_channel::{Receiver, Sender};
use p2pchat_client::transfer::TransferNotice;
use rustyline::ExternalPrinter;

use crate::progress::{BarSink, Bars};

/// Something the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// End of input (Ctrl-D, or the end of a pipe).
    Eof,
    /// Ctrl-C.
    Interrupt,
}

type Printer = Box<dyn ExternalPrinter + Send>;

/// Where output goes.
#[derive(Clone)]
pub struct Ui {
    printer: Option<Arc<Mutex<Printer>>>,
    /// On a terminal: file progress bars, on the line above the prompt.
    bars: Option<Arc<Mutex<Bars>>>,
    /// The line just above the prompt is a progress bar (the next frame replaces
    /// it; any other line printed ends that).
    bar_above: Arc<AtomicBool>,
    /// A transcript file (`join --log`): every line shown, with its UTC time.
    log: Option<Arc<Mutex<std::fs::File>>>,
    /// Standard-output lines held back to be written together (see [`Ui::hold`]).
    held: Arc<Mutex<Option<String>>>,
}

impl Ui {
    /// Starts reading input (on a thread) and returns the output side and the input stream.
    pub fn start() -> (Ui, Receiver<Input>) {
        let (tx, rx) = async_channel::unbounded();
        let ctrl_c = tx.clone();
        // Ctrl-C outside the line editor (pipes, or between prompts) means leave.
        let _ = ctrlc::set_handler(move || {
            let _ = ctrl_c.try_send(Input::Interrupt);
        });
        let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let printer = if interactive {
            start_editor(tx.clone())
        } else {
            None
        };
        if printer.is_none() {
            std::thread::spawn(move || read_stdin(tx));
        }
        let printer = printer.map(|p| Arc::new(Mutex::new(p)));
        let bar_above = Arc::new(AtomicBool::new(false));
        let bars = printer.as_ref().map(|printer| {
            let sink = BarPrinter {
                printer: printer.clone(),
                bar_above: bar_above.clone(),
            };
            Arc::new(Mutex::new(Bars::new(Arc::new(sink))))
        });
        (
            Ui {
                printer,
                bars,
                bar_above,
                log: None,
                held: Arc::new(Mutex::new(None)),
            },
            rx,
        )
    }

    /// Shows a file transfer's notice: on a terminal, progress moves a bar (and the
    /// end of a transfer removes it); otherwise, and for every other notice, a line.
    pub fn transfer(&self, notice: &TransferNotice) {
        if let Some(bars) = &self.bars
            && let Ok(mut bars) = bars.lock()
        {
            match notice {
                TransferNotice::FileProgress {
                    sending,
                    name,
                    done,
                    size,
                    rate,
                    left_s,
                } => {
                    bars.progress(*sending, name, *done, *size, *rate, *left_s);
                    return;
                }
                TransferNotice::FileDelivered { name, .. }
                | TransferNotice::FileSendFailed { name, .. }
                | TransferNotice::FilePeerDeclined { name, .. } => bars.finish(true, name),
                TransferNotice::FileReceived { name, .. }
                | TransferNotice::FileReceiveStopped { name, .. } => bars.finish(false, name),
                _ => {}
            }
        }
        self.show(Some(crate::format::transfer_notice(notice)));
    }

    /// Also appends every line shown to the file at `path`.
    pub fn log_to(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        self.log = Some(Arc::new(Mutex::new(file)));
        Ok(())
    }

    fn record(&self, line: &str) {
        if let Some(log) = &self.log
            && let Ok(mut f) = log.lock()
        {
            // One write per line, so a crash tears at most the last one.
            let _ =
                f.write_all(format!("{} {line}\n", p2pchat_client::history::utc_now()).as_bytes());
        }
    }

    /// A user-facing line: an event, a status line (`* ...`) or a JSON object.
    pub fn out(&self, line: &str) {
        self.record(line);
        self.bar_above.store(false, Ordering::Relaxed);
        if let Some(printer) = &self.printer
            && let Ok(mut p) = printer.lock()
            && p.print(line.to_owned()).is_ok()
        {
            return;
        }
        if let Ok(mut held) = self.held.lock()
            && let Some(held) = held.as_mut()
        {
            held.push_str(line);
            held.push('\n');
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Holds standard-output lines back until [`Ui::release`], which writes them in
    /// one go: a burst of events shown together is one write, so a process killed
    /// while showing them has shown all of them or none (what a resumed session
    /// shows again, or not, depends on it: see `crate::saved`).
    pub fn hold(&self) {
        if let Ok(mut held) = self.held.lock()
            && held.is_none()
        {
            *held = Some(String::new());
        }
    }

    /// Writes what [`Ui::hold`] held back, in one write, and stops holding.
    pub fn release(&self) {
        let Some(lines) = self.held.lock().ok().and_then(|mut held| held.take()) else {
            return;
        };
        if lines.is_empty() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(lines.as_bytes());
        let _ = stdout.flush();
    }

    /// Shows a formatted event line where it belongs (nothing for `None`).
    pub fn show(&self, line: Option<crate::format::Line>) {
        match line {
            Some(crate::format::Line::Out(line)) => self.out(&line),
            Some(crate::format::Line::Err(line)) => self.err(&line),
            None => {}
        }
    }

    /// An error line (stderr when not on a terminal).
    pub fn err(&self, line: &str) {
        self.record(line);
        self.bar_above.store(false, Ordering::Relaxed);
        if let Some(printer) = &self.printer
            && let Ok(mut p) = printer.lock()
            && p.print(line.to_owned()).is_ok()
        {
            return;
        }
        eprintln!("{line}");
    }
}

/// Progress bar frames through rustyline's printer: a frame that follows a frame
/// first moves up over it and clears it (ESC [1A, ESC [2K), so the bar is redrawn
/// in place on the line above the prompt.
struct BarPrinter {
    printer: Arc<Mutex<Printer>>,
    bar_above: Arc<AtomicBool>,
}

impl BarSink for BarPrinter {
    fn bar(&self, frame: &str) {
        let Ok(mut printer) = self.printer.lock() else {
            return;
        };
        let replace = if self.bar_above.swap(true, Ordering::Relaxed) {
            "\x1b[1A\x1b[2K"
        } else {
            ""
        };
        let _ = printer.print(format!("{replace}{frame}"));
    }
}

/// Runs rustyline on its own thread; returns its external printer, or `None` if the
/// terminal cannot be driven (then plain stdin is used instead).
fn start_editor(tx: Sender<Input>) -> Option<Printer> {
    let (printer_tx, printer_rx) = std::sync::mpsc::channel::<Option<Printer>>();
    std::thread::spawn(move || {
        let Ok(mut editor) = rustyline::DefaultEditor::new() else {
            let _ = printer_tx.send(None);
            return;
        };
        match editor.create_external_printer() {
            Ok(p) => {
                let _ = printer_tx.send(Some(Box::new(p)));
            }
            Err(_) => {
                let _ = printer_tx.send(None);
                return;
            }
        }
        loop {
            match editor.readline("> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    if tx.send_blocking(Input::Line(line)).is_err() {
                        return;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    let _ = tx.send_blocking(Input::Interrupt);
                }
                Err(_) => {
                    let _ = tx.send_blocking(Input::Eof);
                    return;
                }
            }
        }
    });
    printer_rx.recv().ok().flatten()
}

fn read_stdin(tx: Sender<Input>) {
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                let line = match String::from_utf8(buf.clone()) {
                    Ok(line) => line,
                    Err(_) => {
                        eprintln!("error: an input line is not valid UTF-8; it was not sent");
                        continue;
                    }
                };
                if tx.send_blocking(Input::Line(line)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send_blocking(Input::Eof);
}
