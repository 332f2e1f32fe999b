//! Publishes the durable outbox in order and removes what the broker acknowledged.
//!
//! At most [`WINDOW`] messages are in flight. After every (re)connect everything still in
//! the outbox is sent again from the start: the broker may or may not have received the
//! unacknowledged ones, and readers drop duplicates by sequence number. Every publish is
//! tagged with the connection it is meant for, so one issued just before a reconnect the
//! pump had not yet seen cannot overtake the re-sent messages before it (a reader would
//! see a gap).

use std::collections::BTreeSet;

use p1consent_shared::{channel::RECENT_WINDOW, mqtt::LinkHandle};

use crate::store::{Store, StoreError};

/// Messages in flight at once.
pub const WINDOW: usize = RECENT_WINDOW / 2;
/// Acknowledged messages removed from the outbox in one transaction under load.
pub const REMOVE_BATCH: usize = RECENT_WINDOW - WINDOW;
// What a reconnect or a restart publishes again and a reader may already have is at most
// the messages in flight plus those acknowledged but not yet removed. Readers recognise a
// copy of one of their last RECENT_WINDOW records as a duplicate; anything older they
// report as out of order. So the two together must stay within that window.
const _: () = assert!(WINDOW + REMOVE_BATCH <= RECENT_WINDOW && WINDOW > 0);

#[derive(Debug, Default)]
pub struct OutboxPump {
    /// The link's connection number while connected.
    connected: Option<u64>,
    /// Highest outbox id handed to the link in this connection.
    cursor: Option<u64>,
    inflight: BTreeSet<u64>,
    acked: Vec<u64>,
}

impl OutboxPump {
    /// `connection` is [`LinkHandle::connection`] read when handling the `Connected` event.
    pub fn on_connected(&mut self, connection: u64) {
        self.connected = Some(connection);
        self.cursor = None;
        self.inflight.clear();
    }

    pub fn on_disconnected(&mut self) {
        self.connected = None;
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
        let Some(connection) = self.connected else {
            return Ok(());
        };
        while self.inflight.len() < WINDOW {
            let batch = store.outbox_after(self.cursor, WINDOW - self.inflight.len())?;
            if batch.is_empty() {
                break;
            }
            for (id, m) in batch {
                if link
                    .publish_on(connection, id, m.topic, m.payload, m.retain, m.expiry_s)
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
