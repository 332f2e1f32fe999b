//! Publishes the durable outbox in order and removes what the broker acknowledged.
//!
//! At most [`WINDOW`] messages are in flight. After every (re)connect everything still in
//! the outbox is sent again from the start: the broker may or may not have received the
//! unacknowledged ones, and readers drop duplicates by sequence number.

use std::collections::BTreeSet;

use p1consent_shared::mqtt::LinkHandle;

use crate::store::{Store, StoreError};

/// Messages in flight at once.
pub const WINDOW: usize = 256;
/// Acknowledged messages removed from the outbox in one transaction under load.
pub const REMOVE_BATCH: usize = 64;

#[derive(Debug, Default)]
pub struct OutboxPump {
    connected: bool,
    /// Highest outbox id handed to the link in this connection.
    cursor: Option<u64>,
    inflight: BTreeSet<u64>,
    acked: Vec<u64>,
}

impl OutboxPump {
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.cursor = None;
        self.inflight.clear();
    }

    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.cursor = None;
        self.inflight.clear();
    }

    pub fn on_acked(&mut self, id: u64) {
        if self.inflight.remove(&id) {
            self.acked.push(id);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Removes acknowledged messages, then fills the window.
    ///
    /// Removal is one disk sync, so under load it waits for [`REMOVE_BATCH`] acknowledgements
    /// (or for nothing to be in flight). A crash before the removal only means those
    /// messages are published again, and readers drop duplicates.
    pub fn pump(&mut self, store: &Store, link: &LinkHandle) -> Result<(), StoreError> {
        if !self.acked.is_empty() && (self.acked.len() >= REMOVE_BATCH || self.inflight.is_empty())
        {
            store.outbox_remove(&self.acked)?;
            self.acked.clear();
        }
        if !self.connected {
            return Ok(());
        }
        while self.inflight.len() < WINDOW {
            let batch = store.outbox_after(self.cursor, WINDOW - self.inflight.len())?;
            if batch.is_empty() {
                break;
            }
            for (id, m) in batch {
                if link
                    .publish(id, m.topic, m.payload, m.retain, m.expiry_s)
                    .is_err()
                {
                    return Ok(());
                }
                self.inflight.insert(id);
                self.cursor = Some(id);
            }
        }
        Ok(())
    }
}
