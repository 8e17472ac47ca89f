//! What the relay checks of the file transfers it carries: it routes file messages
//! like chat, without holding files, but enforces its own limits (largest file,
//! transfers per client), and refuses an offer with a reason instead.

use super::RelayServer;
use crate::e2e::FileHeader;
use crate::file::{FileMsg, TransferId, ty};
use crate::frame::PayloadKind;
use crate::id::ClientId;

impl RelayServer {
    /// Checks a file payload (clear or end-to-end encrypted, as `kind` says) from
    /// `from` to `to`; `Err` says why the relay refuses it.
    pub(super) fn check_file(
        &mut self,
        from: ClientId,
        to: ClientId,
        kind: PayloadKind,
        body: &[u8],
    ) -> Result<(), String> {
        if to.is_broadcast() {
            return Err("files go to one client, not to everyone".into());
        }
        // Only what the limits need is read (an end-to-end encrypted message shows
        // just that, in its clear header); anything else passes as it is.
        let header = match kind {
            PayloadKind::SealedFile => FileHeader::split(body).map(|(h, _)| h),
            _ => FileMsg::decode(body).map(|m| FileHeader::of(&m)),
        };
        let Ok(header) = header else {
            return Ok(());
        };
        let transfer = header.transfer;
        match header.type_byte {
            ty::OFFER => {
                let size = header.size.unwrap_or(0);
                if size > self.limits.max_file_size {
                    return Err(format!(
                        "the file is {size} bytes; this relay carries files of at most {} bytes",
                        self.limits.max_file_size
                    ));
                }
                let active = self
                    .transfers
                    .range((from, TransferId(0))..)
                    .take_while(|((c, _), _)| *c == from)
                    .count();
                if active >= self.limits.max_transfers_per_client {
                    return Err(format!(
                        "you already have {active} file transfers under way; this relay allows {} at once",
                        self.limits.max_transfers_per_client
                    ));
                }
                self.transfers.insert((from, transfer), to);
            }
            // The end of a transfer, seen from either side.
            ty::CANCEL_BY_SENDER => {
                self.transfers.remove(&(from, transfer));
            }
            ty::DECLINE | ty::RESULT | ty::CANCEL_BY_RECEIVER => {
                self.transfers.remove(&(to, transfer));
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets the transfers of a client that left; returns the clients it had
    /// transfers with, in either direction.
    pub(super) fn forget_transfers(
        &mut self,
        client: ClientId,
    ) -> std::collections::BTreeSet<ClientId> {
        let mut partners = std::collections::BTreeSet::new();
        self.transfers.retain(|&(sender, _), &mut receiver| {
            if sender == client {
                partners.insert(receiver);
                false
            } else if receiver == client {
                partners.insert(sender);
                false
            } else {
                true
            }
        });
        partners.remove(&client);
        partners
    }
}
