//! The command line's side of file transfers: the client library's
//! [`p2pchat_client::transfer::Transfers`], with each of its notices shown as a line
//! (`format::transfer_notice`) right after the step that caused it.

use std::path::PathBuf;

use p2pchat_client::transfer::{self as lib, TransferError};
use p2pchat_core::{FileEvent, PeerRef};
use p2pchat_tcp::FileCommand;

use crate::format;
use crate::ui::Ui;

pub use lib::{Report, hash_whole_file};

/// All transfers of one session, and where they are shown.
pub struct Transfers {
    inner: lib::Transfers,
    ui: Ui,
}

impl Transfers {
    /// Transfers saving into `download_dir`, shown on `ui`.
    pub fn new(
        ui: Ui,
        download_dir: PathBuf,
        auto_accept: bool,
        who: fn(PeerRef) -> String,
    ) -> Self {
        Transfers {
            inner: lib::Transfers::new(download_dir, auto_accept, who),
            ui,
        }
    }

    /// Where the file threads report.
    pub fn reports(&self) -> async_channel::Receiver<Report> {
        self.inner.reports()
    }

    /// `/send PATH`.
    pub fn send(&mut self, to: PeerRef, path: &str) -> Result<FileCommand, TransferError> {
        let r = self.inner.send(to, path);
        self.show();
        r
    }

    /// `/accept [N]`.
    pub fn accept(&mut self, number: Option<usize>) -> Result<FileCommand, TransferError> {
        let r = self.inner.accept(number);
        self.show();
        r
    }

    /// `/decline [N]`.
    pub fn decline(&mut self, number: Option<usize>) -> Result<FileCommand, TransferError> {
        let r = self.inner.decline(number);
        self.show();
        r
    }

    /// `/cancel`.
    pub fn cancel_all(&mut self) -> Vec<FileCommand> {
        let r = self.inner.cancel_all();
        self.show();
        r
    }

    /// A file event of the session.
    pub fn on_event(&mut self, event: FileEvent) -> Vec<FileCommand> {
        let r = self.inner.on_event(event);
        self.show();
        r
    }

    /// A report of a file thread.
    pub fn on_report(&mut self, report: Report) -> Vec<FileCommand> {
        let r = self.inner.on_report(report);
        self.show();
        r
    }

    fn show(&mut self) {
        for notice in self.inner.take_notices() {
            self.ui.show(Some(format::transfer_notice(&notice)));
        }
    }
}

/// The session command for a file step, or nothing if it could not be made (the
/// error is shown). `wrap` makes it a relay or a direct command.
pub fn command<C>(
    ui: &Ui,
    result: Result<FileCommand, TransferError>,
    wrap: fn(FileCommand) -> C,
) -> Vec<C> {
    match result {
        Ok(cmd) => vec![wrap(cmd)],
        Err(e) => {
            ui.err(&format!("error: {e}"));
            vec![]
        }
    }
}
