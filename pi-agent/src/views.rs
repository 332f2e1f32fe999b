//! Views enforce data minimisation: each distinct (fields, resolution) that the owner
//! granted gets its own channel, and only what that view allows is ever sealed into it.

use p1consent_shared::{
    channel::{ChannelWriter, ReaderGrant},
    crypto::{OpaqueId, hex, unhex},
    dsmr::Telegram,
    view::{View, ViewPayload, ViewSpec},
};
use serde::{Deserialize, Serialize};

pub struct ViewChannel {
    pub spec: ViewSpec,
    pub writer: ChannelWriter,
    pub readers: Vec<ReaderGrant>,
    pub engine: View,
    /// Broker-side lifetime of this channel's data records, seconds.
    pub expiry_s: u32,
}

#[derive(Serialize, Deserialize)]
pub struct StoredView {
    spec: ViewSpec,
    writer: String,
    readers: Vec<String>,
    engine: View,
    expiry_s: u32,
}

impl ViewChannel {
    pub fn new(spec: ViewSpec, expiry_s: u32) -> Self {
        Self {
            engine: View::new(spec),
            spec,
            writer: ChannelWriter::new(OpaqueId::random()),
            readers: Vec::new(),
            expiry_s,
        }
    }

    pub fn key(&self) -> String {
        self.spec.key()
    }

    pub fn channel_id(&self) -> OpaqueId {
        self.writer.channel_id()
    }

    /// Payloads this telegram completes (one per telegram for raw views; one per finished
    /// interval for aggregated views). Nothing while nobody may read the view.
    pub fn push(&mut self, telegram: &Telegram, at_ms: u64) -> Vec<ViewPayload> {
        if self.readers.is_empty() {
            return Vec::new();
        }
        self.engine.push(telegram, at_ms).into_iter().collect()
    }

    /// Closes an interval whose end has passed even if the meter went silent.
    pub fn flush(&mut self, now_ms: u64) -> Vec<ViewPayload> {
        if self.readers.is_empty() {
            return Vec::new();
        }
        self.engine.flush(now_ms).into_iter().collect()
    }

    pub fn to_stored(&self) -> StoredView {
        StoredView {
            spec: self.spec,
            writer: hex(&self.writer.to_bytes()),
            readers: self.readers.iter().map(|r| hex(&r.to_bytes())).collect(),
            engine: self.engine.clone(),
            expiry_s: self.expiry_s,
        }
    }

    pub fn from_stored(s: StoredView) -> Result<Self, String> {
        let writer_bytes = zeroize::Zeroizing::new(unhex(&s.writer).ok_or("writer state")?);
        let writer = ChannelWriter::from_bytes(&writer_bytes).map_err(|e| e.to_string())?;
        let mut readers = Vec::new();
        for r in s.readers {
            let b = zeroize::Zeroizing::new(unhex(&r).ok_or("reader grant")?);
            readers.push(ReaderGrant::from_bytes(&b).map_err(|e| e.to_string())?);
        }
        Ok(Self {
            spec: s.spec,
            writer,
            readers,
            engine: s.engine,
            expiry_s: s.expiry_s,
        })
    }
}
