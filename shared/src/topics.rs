//! The MQTT topic layout (docs/PROTOCOL.md, "Transport"). Topic names carry only opaque
//! ids: a broker operator learns which opaque ids talk, never who they are.

use crate::crypto::OpaqueId;

pub const PREFIX: &str = "p1c/v1";

/// Largest MQTT payload any party accepts (a rotation with many slots is the largest
/// message; 1,000 readers × ~1.1 KB fit).
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Data and rotation records of one channel (QoS 1, not retained, expiring).
pub fn channel(channel_id: &OpaqueId) -> String {
    format!("{PREFIX}/ch/{channel_id}")
}

/// The newest rotation record of a channel, retained so late readers find their key.
pub fn channel_epoch(channel_id: &OpaqueId) -> String {
    format!("{PREFIX}/ch/{channel_id}/epoch")
}

/// Everything addressed to one recipient (device or provider): key deliveries and thread
/// key envelopes, retained. `item` distinguishes them (see [`InboxItem`]).
pub fn inbox(recipient: &OpaqueId, item: &InboxItem) -> String {
    format!("{PREFIX}/inbox/{recipient}/{}", item.topic_part())
}

/// Filter for all of one recipient's inbox.
pub fn inbox_filter(recipient: &OpaqueId) -> String {
    format!("{PREFIX}/inbox/{recipient}/#")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxItem {
    /// A key delivery for one consent (device → provider).
    Key(OpaqueId),
    /// A thread key envelope (owner → device or provider).
    Thread(OpaqueId),
}

impl InboxItem {
    fn topic_part(&self) -> String {
        match self {
            Self::Key(id) => format!("key/{id}"),
            Self::Thread(id) => format!("thread/{id}"),
        }
    }
    /// Parses the part of an inbox topic after the recipient id.
    pub fn parse(topic: &str, recipient: &OpaqueId) -> Option<Self> {
        let rest = topic.strip_prefix(&format!("{PREFIX}/inbox/{recipient}/"))?;
        let (kind, id) = rest.split_once('/')?;
        let id = OpaqueId::from_hex(id)?;
        match kind {
            "key" => Some(Self::Key(id)),
            "thread" => Some(Self::Thread(id)),
            _ => None,
        }
    }
}

/// One entry of a consent log thread, retained: `role` is 1 owner, 2 device, 3 provider.
pub fn log_entry(thread_id: &OpaqueId, role: u8, seq: u64) -> String {
    format!("{PREFIX}/log/{thread_id}/{role}/{seq:020}")
}

/// Filter for a whole thread.
pub fn log_filter(thread_id: &OpaqueId) -> String {
    format!("{PREFIX}/log/{thread_id}/#")
}

/// The owner's own index of its threads (retained thread key envelopes), from which a
/// fresh wallet with the owner's keys rebuilds its state.
pub fn owner_index(owner: &OpaqueId, thread_id: &OpaqueId) -> String {
    format!("{PREFIX}/owner/{owner}/threads/{thread_id}")
}

pub fn owner_index_filter(owner: &OpaqueId) -> String {
    format!("{PREFIX}/owner/{owner}/threads/#")
}

/// Pairing requests to a device (claims, answers).
pub fn pair_requests(device: &OpaqueId) -> String {
    format!("{PREFIX}/pair/{device}/req")
}

/// Pairing responses from a device to one wallet's claim (challenges, results); `session`
/// is the hex of the wallet's claim nonce.
pub fn pair_responses(device: &OpaqueId, session: &str) -> String {
    format!("{PREFIX}/pair/{device}/resp/{session}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_items_round_trip() {
        let r = OpaqueId([1; 16]);
        let id = OpaqueId([0xAB; 16]);
        for item in [InboxItem::Key(id), InboxItem::Thread(id)] {
            let t = inbox(&r, &item);
            assert!(t.starts_with("p1c/v1/inbox/01010101"));
            assert_eq!(InboxItem::parse(&t, &r), Some(item));
        }
        assert_eq!(InboxItem::parse("p1c/v1/inbox/x/key/zz", &r), None);
        assert_eq!(
            InboxItem::parse(&format!("p1c/v1/inbox/{r}/other/{id}"), &r),
            None
        );
    }

    #[test]
    fn log_topics_sort_by_sequence() {
        let t = OpaqueId([2; 16]);
        assert!(log_entry(&t, 1, 9) < log_entry(&t, 1, 10));
    }
}
