//! Saved sessions as the command line uses them: the client library's slots
//! (`p2pchat_client::saved`), claimed and read with a line that says what happened
//! when something went wrong.

use p2pchat_core::RestoreError;

pub use p2pchat_client::saved::{Committer, SessionSlot};

use crate::ui::Ui;

/// The session `saved` (read from `slot`) restored with `restore`, with a line
/// that says so; `None` without one, or when it cannot be used (then a note says
/// why, and the file is set aside).
pub fn restored<M>(
    slot: &SessionSlot,
    ui: &Ui,
    saved: Option<Vec<u8>>,
    restore: impl FnOnce(&[u8]) -> Result<M, RestoreError>,
) -> Option<M> {
    match restore(&saved?) {
        Ok(machine) => Some(machine),
        Err(e) => {
            ui.err(&format!(
                "note: {}: {e}; it is set aside and a new session starts",
                slot.path().display()
            ));
            slot.clear();
            None
        }
    }
}

/// Claims a slot for sessions of `kind` with `target` and reads what it holds (none
/// with `new_session`, which forgets it). Without a slot (no data folder, all
/// taken) the session is not saved, and a warning says so.
pub fn open_slot(
    ui: &Ui,
    kind: &str,
    target: &str,
    new_session: bool,
) -> (Option<SessionSlot>, Option<Vec<u8>>) {
    let slot = match SessionSlot::claim(kind, target) {
        Ok(slot) => slot,
        Err(e) => {
            ui.err(&format!(
                "warning: {e}; if this process dies, starting it again will not resume its session"
            ));
            return (None, None);
        }
    };
    if new_session {
        slot.clear();
        return (Some(slot), None);
    }
    let saved = slot.load().unwrap_or_else(|e| {
        ui.err(&format!("warning: {e}; starting a new session"));
        None
    });
    if saved.is_none() {
        // A new session: what an earlier one showed says nothing about it.
        slot.clear();
    }
    (Some(slot), saved)
}
