//! The relay's routing table: which connection each online client ID is on.
//!
//! Two questions are asked of it. "Where is client 7?" is asked once per message, so
//! it is a hash lookup. "Who is online, in ID order?" (rosters, broadcasts, notices)
//! must give the same order every run, so that outputs are deterministic; an ordered
//! map answers it. Both live behind one type so they cannot disagree.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::id::{ClientId, ConnId};

/// Online clients, by ID.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes {
    ordered: BTreeMap<ClientId, ConnId>,
    index: FxHashMap<ClientId, ConnId>,
}

impl Routes {
    pub(super) fn insert(&mut self, id: ClientId, conn: ConnId) {
        self.ordered.insert(id, conn);
        self.index.insert(id, conn);
    }

    pub(super) fn remove(&mut self, id: &ClientId) {
        self.ordered.remove(id);
        self.index.remove(id);
    }

    /// The connection of client `id`, if it is online.
    pub(super) fn get(&self, id: &ClientId) -> Option<&ConnId> {
        self.index.get(id)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Online IDs, in ID order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &ClientId> {
        self.ordered.keys()
    }

    /// Connections of online clients, in ID order.
    pub(super) fn values(&self) -> impl Iterator<Item = &ConnId> {
        self.ordered.values()
    }

    /// (ID, connection) of online clients, in ID order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ClientId, &ConnId)> {
        self.ordered.iter()
    }
}
