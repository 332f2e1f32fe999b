//! Durable agent state in redb: everything the agent must not forget across restarts and
//! power loss (identity is kept apart, in its own 0600 file).
//!
//! Two tables:
//! - `state`: named JSON documents (owner, consents, channel writer states, log follower
//!   positions). Secrets inside are protected by the file's 0600 permissions.
//! - `outbox`: sealed messages waiting for the broker's acknowledgement, keyed by a
//!   monotonically increasing id so they are published in order.
//!
//! A channel's new state and the record it produced are written in ONE transaction: after
//! a crash either both exist or neither, so the chain never forks or skips a sequence number.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// redb's page cache.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Db(String),
    #[error("state entry {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("state file: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A message to publish: topic, payload, retain flag and MQTT 5 message expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OutboxMessage {
    pub topic: String,
    #[serde(with = "hex_bytes")]
    pub payload: Vec<u8>,
    pub retain: bool,
    /// Seconds the broker may keep the message (None: no expiry).
    pub expiry_s: Option<u32>,
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database; the file is made readable by its owner only.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // redb caches up to 1 GiB by default; the agent's working set is the newest states
        // and the head of the outbox.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        restrict_permissions(path)?;
        let tx = db.begin_write()?;
        tx.open_table(STATE)?;
        tx.open_table(OUTBOX)?;
        tx.commit()?;
        Ok(Self { db })
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(STATE)?;
        match table.get(key)? {
            None => Ok(None),
            Some(v) => decode(key, v.value()).map(Some),
        }
    }

    /// All state entries whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(STATE)?;
        let mut out = Vec::new();
        for item in table.range(prefix..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_string(), decode(key, v.value())?));
        }
        Ok(out)
    }

    /// Runs `f` in one durable transaction (fsync on commit).
    pub fn write<R>(
        &self,
        f: impl for<'t> FnOnce(&mut StoreTx<'t>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let tx = self.db.begin_write()?;
        let result = {
            let mut stx = StoreTx {
                state: tx.open_table(STATE)?,
                outbox: tx.open_table(OUTBOX)?,
            };
            f(&mut stx)?
        };
        tx.commit()?;
        Ok(result)
    }

    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.write(|tx| tx.put(key, value))
    }

    /// Up to `limit` outbox messages with id greater than `after`, oldest first.
    pub fn outbox_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxMessage)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(OUTBOX)?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for item in table.range(start..)?.take(limit) {
            let (k, v) = item?;
            let id = k.value();
            out.push((id, decode(&format!("outbox/{id}"), v.value())?));
        }
        Ok(out)
    }

    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(OUTBOX)?.len()?)
    }

    /// Removes acknowledged messages.
    pub fn outbox_remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(OUTBOX)?;
            for id in ids {
                t.remove(id)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Inside a write transaction.
pub struct StoreTx<'t> {
    state: redb::Table<'t, &'static str, &'static [u8]>,
    outbox: redb::Table<'t, u64, &'static [u8]>,
}

impl StoreTx<'_> {
    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            key: key.into(),
            reason: e.to_string(),
        })?;
        self.state.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.state.get(key)? {
            None => Ok(None),
            Some(v) => decode(key, v.value()).map(Some),
        }
    }

    pub fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.state.remove(key)?;
        Ok(())
    }

    /// Appends to the outbox; returns the message id.
    pub fn enqueue(&mut self, msg: &OutboxMessage) -> Result<u64, StoreError> {
        let next = match self.outbox.last()? {
            Some((k, _)) => k.value().saturating_add(1),
            None => self.get::<u64>("outbox/next-id")?.unwrap_or(0),
        };
        let bytes = serde_json::to_vec(msg).map_err(|e| StoreError::Corrupt {
            key: "outbox".into(),
            reason: e.to_string(),
        })?;
        self.outbox.insert(next, bytes.as_slice())?;
        // Remember the high-water mark so ids never repeat after the outbox drains.
        self.put("outbox/next-id", &(next + 1))?;
        Ok(next)
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })
}

#[cfg(unix)]
pub fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
pub fn restrict_permissions(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p1consent_shared::crypto::hex(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        p1consent_shared::crypto::unhex(&s).ok_or_else(|| serde::de::Error::custom("not hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> OutboxMessage {
        OutboxMessage {
            topic: format!("t/{n}"),
            payload: vec![n; 3],
            retain: n.is_multiple_of(2),
            expiry_s: Some(60),
        }
    }

    #[test]
    fn state_and_outbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.redb");
        {
            let s = Store::open(&path).unwrap();
            s.write(|tx| {
                tx.put("view/a", &41u32)?;
                tx.enqueue(&msg(1))?;
                tx.enqueue(&msg(2))?;
                Ok(())
            })
            .unwrap();
            s.put("view/b", &"x").unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get::<u32>("view/a").unwrap(), Some(41));
        let scanned: Vec<(String, serde_json::Value)> = s.scan("view/").unwrap();
        assert_eq!(scanned.len(), 2);
        let out = s.outbox_after(None, 10).unwrap();
        assert_eq!(out, vec![(0, msg(1)), (1, msg(2))]);
        assert_eq!(s.outbox_after(Some(0), 10).unwrap(), vec![(1, msg(2))]);
        s.outbox_remove(&[0, 1]).unwrap();
        assert_eq!(s.outbox_len().unwrap(), 0);
        // Ids keep increasing after the outbox drained.
        let id = s.write(|tx| tx.enqueue(&msg(3))).unwrap();
        assert_eq!(id, 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn failed_transaction_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.redb")).unwrap();
        let r: Result<(), StoreError> = s.write(|tx| {
            tx.put("k", &1u8)?;
            tx.enqueue(&msg(1))?;
            Err(StoreError::Db("simulated failure".into()))
        });
        assert!(r.is_err());
        assert_eq!(s.get::<u8>("k").unwrap(), None);
        assert_eq!(s.outbox_len().unwrap(), 0);
    }

    #[test]
    fn corrupt_entry_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.redb")).unwrap();
        s.put("k", &"text").unwrap();
        assert!(matches!(
            s.get::<u64>("k"),
            Err(StoreError::Corrupt { key, .. }) if key == "k"
        ));
    }
}
