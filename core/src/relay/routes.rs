//! The relay's routing table: which connection each online client ID is on.
//!
//! Two questions are asked of it. "Where is client 7?" is asked once per message, so
//! it is a hash lookup. "Who is online, in ID order?" (rosters, broadcasts, notices)
//! must give the same order every run, so that outputs are deterministic, and is
//! asked once per broadcast, so it is a sorted list: IDs only grow, so a newcomer
//! goes at the end, and only a departure costs a shift. Both live behind one type so
//! they cannot disagree.

use rustc_hash::FxHashMap;

use crate::id::{ClientId, ConnId};

/// Online clients, by ID.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes {
    /// In ID order.
    ordered: Vec<(ClientId, ConnId)>,
    index: FxHashMap<ClientId, ConnId>,
}

impl Routes {
    pub(super) fn insert(&mut self, id: ClientId, conn: ConnId) {
        if self.index.insert(id, conn).is_some() {
            self.remove_ordered(&id);
        }
        match self.ordered.last() {
            // The usual case: the newest ID is the largest.
            Some(&(last, _)) if last > id => {
                let at = self.ordered.partition_point(|&(i, _)| i < id);
                self.ordered.insert(at, (id, conn));
            }
            _ => self.ordered.push((id, conn)),
        }
    }

    pub(super) fn remove(&mut self, id: &ClientId) {
        if self.index.remove(id).is_some() {
            self.remove_ordered(id);
        }
    }

    fn remove_ordered(&mut self, id: &ClientId) {
        if let Ok(at) = self.ordered.binary_search_by_key(id, |&(i, _)| i) {
            self.ordered.remove(at);
        }
    }

    /// The connection of client `id`, if it is online.
    pub(super) fn get(&self, id: &ClientId) -> Option<&ConnId> {
        self.index.get(id)
    }

    pub(super) fn len(&self) -> usize {
        self.ordered.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// Online IDs, in ID order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &ClientId> {
        self.ordered.iter().map(|(id, _)| id)
    }

    /// Connections of online clients, in ID order.
    pub(super) fn values(&self) -> impl Iterator<Item = &ConnId> {
        self.ordered.iter().map(|(_, conn)| conn)
    }

    /// (ID, connection) of online clients, in ID order.
    pub(super) fn as_slice(&self) -> &[(ClientId, ConnId)] {
        &self.ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_lookup_agree_through_joins_and_departures() {
        let mut r = Routes::default();
        for i in [0, 1, 2, 5, 3] {
            r.insert(ClientId(i), ConnId(u64::from(i) + 100));
        }
        r.remove(&ClientId(1));
        r.remove(&ClientId(9));
        let ids: Vec<u32> = r.keys().map(|id| id.0).collect();
        assert_eq!(ids, vec![0, 2, 3, 5]);
        assert_eq!(r.get(&ClientId(3)), Some(&ConnId(103)));
        assert_eq!(r.get(&ClientId(1)), None);
        assert_eq!(r.len(), 4);
    }
}
