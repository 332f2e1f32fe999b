//! Sealed, signed, hash-linked channels: data records, key rotation, key delivery.
//!
//! The byte layouts, key schedule, verification order and errors are specified in
//! docs/PROTOCOL.md (Sealed channels); this module is the reference implementation.
//!
//! - The device holds a [`ChannelWriter`]: it seals data records, rotates the epoch key
//!   (one wrapped slot per remaining reader) and delivers the current key to a newly
//!   authorised reader. Its state is serialisable ([`ChannelWriterState`]) so it can be
//!   persisted before every publish.
//! - A provider holds a [`ChannelReader`], created from a key delivery. It verifies every
//!   record (signature, sequence, hash link, epoch, AEAD) and keeps only the current
//!   epoch key.
//!
//! Every input is treated as hostile: parsing is bounds-checked, sizes are limited and
//! every failure is a typed [`OpenError`]. A failed `open` never changes the reader's
//! state, with one documented exception: a valid rotation that has no slot for this
//! reader moves it to the terminal "not authorised" state.

use std::collections::VecDeque;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{
    self, CryptoError, KEY_LEN, KemPublicKey, KemSecretKey, KemSuite, NONCE_LEN, OpaqueId,
    PUBLIC_ID_LEN, PublicId, SIGNATURE_LEN, SYMMETRIC_SUITE, SigningIdentity, SymmetricKey,
    TAG_LEN, WrappedSecret,
};
use crate::wire::{Reader, VERSION, WireError, Writer};

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

/// Message type byte of a channel record (data or rotation).
pub const MSG_CHANNEL_RECORD: u8 = 0x01;
/// Message type byte of a key delivery.
pub const MSG_KEY_DELIVERY: u8 = 0x02;

/// Record kind byte: data record.
pub const KIND_DATA: u8 = 1;
/// Record kind byte: rotation record.
pub const KIND_ROTATION: u8 = 2;

pub const HASH_LEN: usize = 32;
pub const HINT_LEN: usize = 16;
/// Length of a reader secret (slot hints are derived from it).
pub const READER_SECRET_LEN: usize = 32;

/// type, version, suite, kind, channel_id, seq, epoch, prev_hash, timestamp_ms, body_len.
pub const RECORD_HEADER_LEN: usize = 3 + 1 + 16 + 8 + 4 + HASH_LEN + 8 + 4;
/// Largest data body (nonce + ciphertext + tag).
pub const MAX_DATA_BODY: usize = 64 * 1024;
/// Largest plaintext one data record can carry.
pub const MAX_PLAINTEXT: usize = MAX_DATA_BODY - NONCE_LEN - TAG_LEN;
/// Bytes a data record adds to its plaintext: header, nonce, tag, signature.
pub const DATA_OVERHEAD: usize = RECORD_HEADER_LEN + NONCE_LEN + TAG_LEN + SIGNATURE_LEN;
/// Most reader slots in one rotation record.
pub const MAX_SLOTS: usize = 1024;
/// Size of the sealed epoch key in a slot (key + tag).
const SLOT_SEALED_LEN: usize = KEY_LEN + TAG_LEN;
/// Size of one slot for the largest KEM suite (X25519 + ML-KEM-768).
pub const MAX_SLOT_LEN: usize = HINT_LEN + (1 + 32 + 1088) + NONCE_LEN + 2 + SLOT_SEALED_LEN;
/// Largest rotation body: slot count + slots.
pub const MAX_ROTATION_BODY: usize = 2 + MAX_SLOTS * MAX_SLOT_LEN;
/// Largest channel record accepted (a full rotation record).
pub const MAX_RECORD: usize = RECORD_HEADER_LEN + MAX_ROTATION_BODY + SIGNATURE_LEN;

/// type, version, kem_suite, channel_id, consent_id, epoch, next_seq, prev_hash, timestamp.
pub const DELIVERY_HEADER_LEN: usize = 3 + 16 + 16 + 4 + 8 + HASH_LEN + 8;
const DELIVERY_SECRET_LEN: usize = KEY_LEN + READER_SECRET_LEN;
/// Largest key delivery accepted.
pub const MAX_DELIVERY: usize = 4096;

/// How many recently accepted (seq, hash) pairs a reader remembers to tell a duplicate
/// from a reordered record.
pub const RECENT_WINDOW: usize = 32;

const LABEL_RECORD: &str = "p1consent/v1/channel-record";
const LABEL_GENESIS: &str = "p1consent/v1/channel-genesis";
const LABEL_DATA: &str = "p1consent/v1/channel-data";
const LABEL_HINT: &str = "p1consent/v1/slot-hint";
const LABEL_WRAP: &str = "p1consent/v1/wrap";

/// Local (never on the wire) type bytes of persisted state.
const STATE_WRITER: u8 = 0xC1;
const STATE_READER: u8 = 0xC2;
const STATE_GRANT: u8 = 0xC3;
const STATE_SUITE: u8 = 0x00;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a record or key delivery was not accepted. Each variant is exactly one cause.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenError {
    #[error("malformed message: {0}")]
    Malformed(#[from] WireError),
    #[error("record belongs to another channel")]
    WrongChannel,
    #[error("signature does not verify with the expected device key")]
    BadSignature,
    #[error("records missing: expected seq {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
    #[error("duplicate of already accepted record {seq}")]
    Duplicate { seq: u64 },
    #[error("record out of order: expected seq {expected}, got {got}")]
    Reordered { expected: u64, got: u64 },
    #[error("hash link broken: prev_hash does not match the previous record")]
    BrokenLink,
    #[error("no key for epoch {epoch}")]
    UnknownEpoch { epoch: u32 },
    #[error("decryption failed: record tampered with")]
    Tampered,
    #[error("no longer authorised for this channel")]
    NotAuthorised,
}

/// Errors on the device side (building records).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error("plaintext too large: {size} bytes, limit {limit}")]
    PlaintextTooLarge { size: usize, limit: usize },
    #[error("too many readers: {count}, limit {limit}")]
    TooManyReaders { count: usize, limit: usize },
    #[error("the same reader grant appears twice")]
    DuplicateReader,
    #[error("epoch counter exhausted")]
    EpochExhausted,
    #[error("sequence counter exhausted")]
    SeqExhausted,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

// ---------------------------------------------------------------------------------------
// Hashes and key schedule
// ---------------------------------------------------------------------------------------

/// prev_hash of the first record (seq 0) of a channel.
pub fn genesis_hash(channel_id: &OpaqueId) -> [u8; HASH_LEN] {
    crypto::hash(LABEL_GENESIS, &[&channel_id.0])
}

/// Hash of a whole encoded record (including its signature); the next record's prev_hash.
pub fn record_hash(record: &[u8]) -> [u8; HASH_LEN] {
    crypto::hash(LABEL_RECORD, &[record])
}

/// The slot hint of a reader for one epoch.
pub fn slot_hint(
    reader_secret: &[u8; READER_SECRET_LEN],
    channel_id: &OpaqueId,
    epoch: u32,
) -> [u8; HINT_LEN] {
    let h = crypto::hash(
        LABEL_HINT,
        &[reader_secret, &channel_id.0, &epoch.to_be_bytes()],
    );
    let mut out = [0u8; HINT_LEN];
    out.copy_from_slice(&h[..HINT_LEN]);
    out
}

fn data_key(epoch_key: &SymmetricKey, channel_id: &OpaqueId, epoch: u32) -> SymmetricKey {
    let mut ctx = [0u8; 20];
    ctx[..16].copy_from_slice(&channel_id.0);
    ctx[16..].copy_from_slice(&epoch.to_be_bytes());
    epoch_key.derive(LABEL_DATA, &ctx)
}

/// The data key of `epoch`, derived once per epoch instead of once per record (HKDF was
/// ~7 % of the seal pipeline). The cache is keyed by epoch, and an epoch's key never changes.
fn cached_data_key<'a>(
    cache: &'a mut Option<(u32, SymmetricKey)>,
    epoch_key: &SymmetricKey,
    channel_id: &OpaqueId,
    epoch: u32,
) -> &'a SymmetricKey {
    if cache.as_ref().is_some_and(|(e, _)| *e != epoch) {
        *cache = None;
    }
    &cache
        .get_or_insert_with(|| (epoch, data_key(epoch_key, channel_id, epoch)))
        .1
}

fn slot_context(channel_id: &OpaqueId, epoch: u32, hint: &[u8; HINT_LEN]) -> [u8; 36] {
    let mut ctx = [0u8; 36];
    ctx[..16].copy_from_slice(&channel_id.0);
    ctx[16..20].copy_from_slice(&epoch.to_be_bytes());
    ctx[20..].copy_from_slice(hint);
    ctx
}

/// [`WrappedSecret::wrap`] with explicit randomness (same construction).
fn wrap_with(
    pk: &KemPublicKey,
    secret: &[u8],
    context: &[u8],
    encap_seed: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
) -> Result<WrappedSecret, CryptoError> {
    let (kem, ss) = crypto::encapsulate_deterministic(pk, encap_seed)?;
    let k = ss.derive(LABEL_WRAP, &[]);
    let sealed = crypto::seal_with_nonce(&k, nonce, context, secret);
    Ok(WrappedSecret {
        kem,
        nonce: *nonce,
        sealed,
    })
}

fn wire_of(e: CryptoError) -> WireError {
    match e {
        CryptoError::Wire(w) => w,
        _ => WireError::Invalid {
            field: "wrapped secret",
            reason: "invalid KEM ciphertext",
        },
    }
}

/// Fresh randomness for one wrap: (encapsulation seed, nonce).
fn fresh_wrap_randomness() -> (Zeroizing<[u8; 32]>, [u8; NONCE_LEN]) {
    (
        Zeroizing::new(crypto::random_bytes()),
        crypto::random_bytes(),
    )
}

// ---------------------------------------------------------------------------------------
// Record parsing
// ---------------------------------------------------------------------------------------

/// Data or rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    Data = KIND_DATA,
    Rotation = KIND_ROTATION,
}

/// The clear header of a channel record (what [`peek`] returns, unverified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub channel_id: OpaqueId,
    pub seq: u64,
    pub epoch: u32,
    pub prev_hash: [u8; HASH_LEN],
    pub timestamp_ms: u64,
    pub body_len: u32,
}

fn read_record_header(r: &mut Reader<'_>) -> Result<RecordHeader, WireError> {
    let kind = match r.u8()? {
        KIND_DATA => RecordKind::Data,
        KIND_ROTATION => RecordKind::Rotation,
        _ => {
            return Err(WireError::Invalid {
                field: "kind",
                reason: "must be 1 (data) or 2 (rotation)",
            });
        }
    };
    let channel_id = OpaqueId(r.array()?);
    let seq = r.u64()?;
    if seq == u64::MAX {
        return Err(WireError::Invalid {
            field: "seq",
            reason: "reserved value",
        });
    }
    let epoch = r.u32()?;
    let prev_hash = r.array()?;
    let timestamp_ms = r.u64()?;
    let body_len = r.u32()?;
    let limit = match kind {
        RecordKind::Data => MAX_DATA_BODY,
        RecordKind::Rotation => MAX_ROTATION_BODY,
    };
    if body_len as usize > limit {
        return Err(WireError::TooLarge {
            size: body_len as usize,
            limit,
        });
    }
    Ok(RecordHeader {
        kind,
        channel_id,
        seq,
        epoch,
        prev_hash,
        timestamp_ms,
        body_len,
    })
}

/// Parses the header of a channel record without verifying anything (for routing).
pub fn peek(record: &[u8]) -> Result<RecordHeader, WireError> {
    let (mut r, suite) = Reader::with_header(record, MSG_CHANNEL_RECORD, MAX_RECORD)?;
    if suite != SYMMETRIC_SUITE {
        return Err(WireError::UnsupportedSuite(suite));
    }
    read_record_header(&mut r)
}

struct Slot {
    hint: [u8; HINT_LEN],
    wrapped: WrappedSecret,
}

enum Body<'a> {
    Data {
        nonce: [u8; NONCE_LEN],
        ciphertext: &'a [u8],
    },
    Rotation {
        slots: Vec<Slot>,
    },
}

struct ParsedRecord<'a> {
    header: RecordHeader,
    header_bytes: &'a [u8],
    body: Body<'a>,
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

fn parse_record(bytes: &[u8]) -> Result<ParsedRecord<'_>, WireError> {
    let (mut r, suite) = Reader::with_header(bytes, MSG_CHANNEL_RECORD, MAX_RECORD)?;
    if suite != SYMMETRIC_SUITE {
        return Err(WireError::UnsupportedSuite(suite));
    }
    let header = read_record_header(&mut r)?;
    let header_bytes = r.consumed();
    let body = r.raw(header.body_len as usize)?;
    let signed = r.consumed();
    let signature = r.array()?;
    r.finish()?;
    let body = match header.kind {
        RecordKind::Data => parse_data_body(body)?,
        RecordKind::Rotation => parse_rotation_body(body)?,
    };
    Ok(ParsedRecord {
        header,
        header_bytes,
        body,
        signed,
        signature,
    })
}

fn parse_data_body(body: &[u8]) -> Result<Body<'_>, WireError> {
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(WireError::Invalid {
            field: "data body",
            reason: "shorter than nonce + tag",
        });
    }
    let mut b = Reader::new(body);
    let nonce = b.array()?;
    let ciphertext = b.raw(b.remaining())?;
    b.finish()?;
    Ok(Body::Data { nonce, ciphertext })
}

fn parse_rotation_body(body: &[u8]) -> Result<Body<'_>, WireError> {
    let mut b = Reader::new(body);
    let count = b.u16()? as usize;
    if count > MAX_SLOTS {
        return Err(WireError::Invalid {
            field: "slot_count",
            reason: "over limit",
        });
    }
    let mut slots: Vec<Slot> = Vec::with_capacity(count);
    for _ in 0..count {
        let hint: [u8; HINT_LEN] = b.array()?;
        if let Some(prev) = slots.last()
            && hint <= prev.hint
        {
            return Err(WireError::Invalid {
                field: "slots",
                reason: "hints must be strictly increasing",
            });
        }
        let wrapped = WrappedSecret::read(&mut b).map_err(wire_of)?;
        if wrapped.sealed.len() != SLOT_SEALED_LEN {
            return Err(WireError::Invalid {
                field: "slot",
                reason: "sealed epoch key must be 48 bytes",
            });
        }
        slots.push(Slot { hint, wrapped });
    }
    b.finish()?;
    Ok(Body::Rotation { slots })
}

fn encode_record_header(
    kind: RecordKind,
    channel_id: &OpaqueId,
    seq: u64,
    epoch: u32,
    prev_hash: &[u8; HASH_LEN],
    timestamp_ms: u64,
    body_len: usize,
) -> Writer {
    let mut w = Writer::with_header(MSG_CHANNEL_RECORD, SYMMETRIC_SUITE);
    w.u8(kind as u8)
        .raw(&channel_id.0)
        .u64(seq)
        .u32(epoch)
        .raw(prev_hash)
        .u64(timestamp_ms)
        .u32(body_len as u32);
    w
}

// ---------------------------------------------------------------------------------------
// Reader grants (device side record of an authorised reader)
// ---------------------------------------------------------------------------------------

/// What the device keeps per authorised reader so it can include it in later rotations.
/// Persist it with the consent; drop it on revoke.
#[derive(Clone)]
pub struct ReaderGrant {
    pub consent_id: OpaqueId,
    pub kem_public: KemPublicKey,
    pub reader_secret: Zeroizing<[u8; READER_SECRET_LEN]>,
}

impl std::fmt::Debug for ReaderGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReaderGrant({}, {:?}, ..)",
            self.consent_id, self.kem_public
        )
    }
}

impl ReaderGrant {
    /// Local storage encoding: `0xC3 | 1 | 0 | consent_id[16] | KemPublicKey | reader_secret[32]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let pk = self.kem_public.to_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(3 + 16 + pk.len() + READER_SECRET_LEN));
        out.extend_from_slice(&[STATE_GRANT, VERSION, STATE_SUITE]);
        out.extend_from_slice(&self.consent_id.0);
        out.extend_from_slice(&pk);
        out.extend_from_slice(&self.reader_secret[..]);
        out
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = state_reader(bytes, STATE_GRANT, 4096)?;
        let consent_id = OpaqueId(r.array()?);
        let kem_public = KemPublicKey::read(&mut r).map_err(|e| match e {
            CryptoError::Wire(w) => w,
            _ => WireError::Invalid {
                field: "kem_public",
                reason: "invalid public key",
            },
        })?;
        let reader_secret = Zeroizing::new(r.array()?);
        r.finish()?;
        Ok(Self {
            consent_id,
            kem_public,
            reader_secret,
        })
    }
}

fn state_reader(bytes: &[u8], ty: u8, limit: usize) -> Result<Reader<'_>, WireError> {
    let (r, suite) = Reader::with_header(bytes, ty, limit)?;
    if suite != STATE_SUITE {
        return Err(WireError::UnsupportedSuite(suite));
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Writer (device)
// ---------------------------------------------------------------------------------------

/// Everything the device must persist to continue a channel after a restart.
/// The epoch key is zeroized on drop.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChannelWriterState {
    channel_id: OpaqueId,
    next_seq: u64,
    epoch: u32,
    epoch_key: SymmetricKey,
    prev_hash: [u8; HASH_LEN],
}

const WRITER_STATE_LEN: usize = 3 + 16 + 8 + 4 + KEY_LEN + HASH_LEN;

impl ChannelWriterState {
    /// `0xC1 | 1 | 0 | channel_id[16] | next_seq u64 | epoch u32 | epoch_key[32] | prev_hash[32]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(WRITER_STATE_LEN));
        out.extend_from_slice(&[STATE_WRITER, VERSION, STATE_SUITE]);
        out.extend_from_slice(&self.channel_id.0);
        out.extend_from_slice(&self.next_seq.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.epoch_key.expose());
        out.extend_from_slice(&self.prev_hash);
        out
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = state_reader(bytes, STATE_WRITER, WRITER_STATE_LEN)?;
        let channel_id = OpaqueId(r.array()?);
        let next_seq = r.u64()?;
        let epoch = r.u32()?;
        let epoch_key = SymmetricKey::from_bytes(*Zeroizing::new(r.array()?));
        let prev_hash = r.array()?;
        r.finish()?;
        Ok(Self {
            channel_id,
            next_seq,
            epoch,
            epoch_key,
            prev_hash,
        })
    }
    pub fn channel_id(&self) -> OpaqueId {
        self.channel_id
    }
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn prev_hash(&self) -> [u8; HASH_LEN] {
        self.prev_hash
    }
}

/// The device side of one channel. Persist [`ChannelWriter::state`] after every call that
/// returns bytes and *before* publishing them (see docs/PROTOCOL.md, Sealed channels, "Crash safety").
#[derive(Debug)]
pub struct ChannelWriter {
    st: ChannelWriterState,
    data_key: Option<(u32, SymmetricKey)>,
}

impl ChannelWriter {
    /// A new channel at epoch 0 with a fresh random epoch key.
    pub fn new(channel_id: OpaqueId) -> Self {
        Self::with_epoch_key(channel_id, SymmetricKey::random())
    }

    /// A new channel at epoch 0 with a given key (test vectors; prefer [`Self::new`]).
    #[doc(hidden)]
    pub fn with_epoch_key(channel_id: OpaqueId, epoch_key: SymmetricKey) -> Self {
        Self {
            st: ChannelWriterState {
                channel_id,
                next_seq: 0,
                epoch: 0,
                epoch_key,
                prev_hash: genesis_hash(&channel_id),
            },
            data_key: None,
        }
    }

    pub fn from_state(state: ChannelWriterState) -> Self {
        Self {
            st: state,
            data_key: None,
        }
    }
    pub fn state(&self) -> &ChannelWriterState {
        &self.st
    }
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.st.to_bytes()
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        ChannelWriterState::from_bytes(bytes).map(Self::from_state)
    }
    pub fn channel_id(&self) -> OpaqueId {
        self.st.channel_id
    }
    pub fn next_seq(&self) -> u64 {
        self.st.next_seq
    }
    pub fn epoch(&self) -> u32 {
        self.st.epoch
    }

    fn check_seq(&self) -> Result<u64, ChannelError> {
        if self.st.next_seq >= u64::MAX - 1 {
            return Err(ChannelError::SeqExhausted);
        }
        Ok(self.st.next_seq)
    }

    fn advance(&mut self, record: &[u8]) {
        self.st.prev_hash = record_hash(record);
        self.st.next_seq += 1;
    }

    /// Seals one data record under the current epoch key and advances the chain.
    pub fn seal(
        &mut self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ChannelError> {
        self.seal_with_nonce(device, timestamp_ms, plaintext, &crypto::random_bytes())
    }

    /// [`Self::seal`] with a caller-chosen nonce: test vectors only, never reuse a nonce.
    #[doc(hidden)]
    pub fn seal_with_nonce(
        &mut self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        plaintext: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, ChannelError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(ChannelError::PlaintextTooLarge {
                size: plaintext.len(),
                limit: MAX_PLAINTEXT,
            });
        }
        let seq = self.check_seq()?;
        let key = cached_data_key(
            &mut self.data_key,
            &self.st.epoch_key,
            &self.st.channel_id,
            self.st.epoch,
        );
        let st = &self.st;
        let w = encode_record_header(
            RecordKind::Data,
            &st.channel_id,
            seq,
            st.epoch,
            &st.prev_hash,
            timestamp_ms,
            NONCE_LEN + plaintext.len() + TAG_LEN,
        );
        let ct = crypto::seal_with_nonce(key, nonce, w.as_slice(), plaintext);
        let mut rec = w.into_bytes();
        rec.reserve(NONCE_LEN + ct.len() + SIGNATURE_LEN);
        rec.extend_from_slice(nonce);
        rec.extend_from_slice(&ct);
        let sig = device.sign(&rec);
        rec.extend_from_slice(&sig);
        self.advance(&rec);
        Ok(rec)
    }

    /// Starts a new epoch with a fresh 256-bit key, wrapped to every reader in `readers`
    /// (and only them). Returns the rotation record.
    pub fn rotate(
        &mut self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        readers: &[ReaderGrant],
    ) -> Result<Vec<u8>, ChannelError> {
        self.rotate_with(
            device,
            timestamp_ms,
            readers,
            SymmetricKey::random(),
            &mut |_| fresh_wrap_randomness(),
        )
    }

    /// [`Self::rotate`] with the new key and per-slot randomness derived from `seed`:
    /// test vectors only.
    #[doc(hidden)]
    pub fn rotate_deterministic(
        &mut self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        readers: &[ReaderGrant],
        new_key: SymmetricKey,
        seed: &[u8; 32],
    ) -> Result<Vec<u8>, ChannelError> {
        self.rotate_with(device, timestamp_ms, readers, new_key, &mut |i| {
            test_randomness(seed, i)
        })
    }

    fn rotate_with(
        &mut self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        readers: &[ReaderGrant],
        new_key: SymmetricKey,
        randomness: &mut dyn FnMut(usize) -> (Zeroizing<[u8; 32]>, [u8; NONCE_LEN]),
    ) -> Result<Vec<u8>, ChannelError> {
        if readers.len() > MAX_SLOTS {
            return Err(ChannelError::TooManyReaders {
                count: readers.len(),
                limit: MAX_SLOTS,
            });
        }
        let seq = self.check_seq()?;
        let new_epoch = self
            .st
            .epoch
            .checked_add(1)
            .ok_or(ChannelError::EpochExhausted)?;
        let channel_id = self.st.channel_id;
        let mut slots = Vec::with_capacity(readers.len());
        for (i, grant) in readers.iter().enumerate() {
            let hint = slot_hint(&grant.reader_secret, &channel_id, new_epoch);
            let ctx = slot_context(&channel_id, new_epoch, &hint);
            let (encap_seed, nonce) = randomness(i);
            let wrapped = wrap_with(
                &grant.kem_public,
                new_key.expose(),
                &ctx,
                &encap_seed,
                &nonce,
            )?;
            slots.push(Slot { hint, wrapped });
        }
        slots.sort_by_key(|s| s.hint);
        if slots.windows(2).any(|p| p[0].hint == p[1].hint) {
            return Err(ChannelError::DuplicateReader);
        }
        let mut body = Writer::new();
        body.u16(slots.len() as u16);
        for s in &slots {
            body.raw(&s.hint);
            s.wrapped.write(&mut body);
        }
        let body = body.into_bytes();
        let mut w = encode_record_header(
            RecordKind::Rotation,
            &channel_id,
            seq,
            new_epoch,
            &self.st.prev_hash,
            timestamp_ms,
            body.len(),
        );
        w.raw(&body);
        let sig = device.sign(w.as_slice());
        w.raw(&sig);
        let rec = w.into_bytes();
        self.st.epoch = new_epoch;
        self.st.epoch_key = new_key;
        self.advance(&rec);
        Ok(rec)
    }

    /// Delivers the current epoch key to a newly authorised reader, anchored at the
    /// current chain position (the reader can open records from `next_seq` on).
    /// Returns the delivery message and the grant the device must keep for rotations.
    pub fn deliver(
        &self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        consent_id: OpaqueId,
        reader_kem: &KemPublicKey,
    ) -> Result<(Vec<u8>, ReaderGrant), ChannelError> {
        let (encap_seed, nonce) = fresh_wrap_randomness();
        self.deliver_deterministic(
            device,
            timestamp_ms,
            consent_id,
            reader_kem,
            Zeroizing::new(crypto::random_bytes()),
            &encap_seed,
            &nonce,
        )
    }

    /// [`Self::deliver`] with explicit randomness: test vectors only.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_deterministic(
        &self,
        device: &SigningIdentity,
        timestamp_ms: u64,
        consent_id: OpaqueId,
        reader_kem: &KemPublicKey,
        reader_secret: Zeroizing<[u8; READER_SECRET_LEN]>,
        encap_seed: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<(Vec<u8>, ReaderGrant), ChannelError> {
        let st = &self.st;
        let mut w = Writer::with_header(MSG_KEY_DELIVERY, reader_kem.suite() as u8);
        w.raw(&st.channel_id.0)
            .raw(&consent_id.0)
            .u32(st.epoch)
            .u64(st.next_seq)
            .raw(&st.prev_hash)
            .u64(timestamp_ms);
        let mut secret = Zeroizing::new([0u8; DELIVERY_SECRET_LEN]);
        secret[..KEY_LEN].copy_from_slice(st.epoch_key.expose());
        secret[KEY_LEN..].copy_from_slice(&reader_secret[..]);
        let wrapped = wrap_with(reader_kem, &secret[..], w.as_slice(), encap_seed, nonce)?;
        wrapped.write(&mut w);
        let sig = device.sign(w.as_slice());
        w.raw(&sig);
        let grant = ReaderGrant {
            consent_id,
            kem_public: reader_kem.clone(),
            reader_secret,
        };
        Ok((w.into_bytes(), grant))
    }
}

/// Deterministic per-slot randomness for test vectors.
fn test_randomness(seed: &[u8; 32], i: usize) -> (Zeroizing<[u8; 32]>, [u8; NONCE_LEN]) {
    let idx = (i as u64).to_be_bytes();
    let encap = crypto::hash("p1consent/test/encap-seed", &[seed, &idx]);
    let n = crypto::hash("p1consent/test/nonce", &[seed, &idx]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&n[..NONCE_LEN]);
    (Zeroizing::new(encap), nonce)
}

// ---------------------------------------------------------------------------------------
// Reader (provider)
// ---------------------------------------------------------------------------------------

/// What a successfully opened record was.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    Data {
        seq: u64,
        epoch: u32,
        timestamp_ms: u64,
        plaintext: Zeroizing<Vec<u8>>,
    },
    Rotated {
        seq: u64,
        epoch: u32,
    },
}

/// The clear fields of a key delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryHeader {
    pub kem_suite: KemSuite,
    pub channel_id: OpaqueId,
    pub consent_id: OpaqueId,
    pub epoch: u32,
    pub next_seq: u64,
    pub prev_hash: [u8; HASH_LEN],
    pub timestamp_ms: u64,
}

struct ParsedDelivery<'a> {
    header: DeliveryHeader,
    header_bytes: &'a [u8],
    wrapped: WrappedSecret,
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

fn parse_delivery(bytes: &[u8]) -> Result<ParsedDelivery<'_>, WireError> {
    let (mut r, suite) = Reader::with_header(bytes, MSG_KEY_DELIVERY, MAX_DELIVERY)?;
    let kem_suite = KemSuite::from_byte(suite)?;
    let header = DeliveryHeader {
        kem_suite,
        channel_id: OpaqueId(r.array()?),
        consent_id: OpaqueId(r.array()?),
        epoch: r.u32()?,
        next_seq: r.u64()?,
        prev_hash: r.array()?,
        timestamp_ms: r.u64()?,
    };
    let header_bytes = r.consumed();
    let wrapped = WrappedSecret::read(&mut r).map_err(wire_of)?;
    if wrapped.kem.suite() != kem_suite {
        return Err(WireError::Invalid {
            field: "wrapped secret",
            reason: "KEM suite differs from the header suite",
        });
    }
    if wrapped.sealed.len() != DELIVERY_SECRET_LEN + TAG_LEN {
        return Err(WireError::Invalid {
            field: "wrapped secret",
            reason: "sealed secret must be 80 bytes",
        });
    }
    let signed = r.consumed();
    let signature = r.array()?;
    r.finish()?;
    Ok(ParsedDelivery {
        header,
        header_bytes,
        wrapped,
        signed,
        signature,
    })
}

/// Parses a key delivery's clear header without verifying anything (for routing).
pub fn peek_delivery(bytes: &[u8]) -> Result<DeliveryHeader, WireError> {
    parse_delivery(bytes).map(|p| p.header)
}

/// The provider side of one channel: verifies and opens records in order.
pub struct ChannelReader {
    channel_id: OpaqueId,
    device: PublicId,
    consent_id: OpaqueId,
    kem: KemSecretKey,
    reader_secret: Zeroizing<[u8; READER_SECRET_LEN]>,
    epoch: u32,
    /// `None` once a rotation left this reader out (terminal).
    epoch_key: Option<SymmetricKey>,
    data_key: Option<(u32, SymmetricKey)>,
    next_seq: u64,
    prev_hash: [u8; HASH_LEN],
    recent: VecDeque<(u64, [u8; HASH_LEN])>,
}

impl std::fmt::Debug for ChannelReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReader")
            .field("channel_id", &self.channel_id)
            .field("device", &self.device)
            .field("epoch", &self.epoch)
            .field("authorised", &self.epoch_key.is_some())
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl ChannelReader {
    /// Verifies a key delivery from `expected_device` and unwraps it with `my_kem`.
    /// A delivery for someone else's key is [`OpenError::NotAuthorised`].
    pub fn from_delivery(
        delivery: &[u8],
        expected_device: &PublicId,
        my_kem: &KemSecretKey,
    ) -> Result<Self, OpenError> {
        let p = parse_delivery(delivery)?;
        expected_device
            .verify(p.signed, &p.signature)
            .map_err(|_| OpenError::BadSignature)?;
        if p.header.kem_suite != my_kem.suite() {
            return Err(OpenError::NotAuthorised);
        }
        let secret = p
            .wrapped
            .unwrap(my_kem, p.header_bytes)
            .map_err(|_| OpenError::NotAuthorised)?;
        if secret.len() != DELIVERY_SECRET_LEN {
            return Err(OpenError::Tampered);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&secret[..KEY_LEN]);
        let mut reader_secret = Zeroizing::new([0u8; READER_SECRET_LEN]);
        reader_secret.copy_from_slice(&secret[KEY_LEN..]);
        let h = p.header;
        let mut recent = VecDeque::with_capacity(RECENT_WINDOW);
        if h.next_seq > 0 {
            recent.push_back((h.next_seq - 1, h.prev_hash));
        }
        Ok(Self {
            channel_id: h.channel_id,
            device: *expected_device,
            consent_id: h.consent_id,
            kem: KemSecretKey::from_seed(my_kem.suite(), my_kem.seed()),
            reader_secret,
            epoch: h.epoch,
            epoch_key: Some(SymmetricKey::from_bytes(*key)),
            data_key: None,
            next_seq: h.next_seq,
            prev_hash: h.prev_hash,
            recent,
        })
    }

    pub fn channel_id(&self) -> OpaqueId {
        self.channel_id
    }
    pub fn consent_id(&self) -> OpaqueId {
        self.consent_id
    }
    pub fn device(&self) -> PublicId {
        self.device
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    /// The sequence number the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// False once a rotation left this reader out.
    pub fn is_authorised(&self) -> bool {
        self.epoch_key.is_some()
    }

    /// Verifies and opens the next record. On error the state is unchanged, except
    /// [`OpenError::NotAuthorised`] from a valid rotation, which is terminal.
    pub fn open(&mut self, record: &[u8]) -> Result<Opened, OpenError> {
        self.open_inner(record, false)
    }

    /// Like [`Self::open`], but knowingly accepts a record *after* a gap (lost records):
    /// the hash link to the missing records cannot be checked; everything else is.
    /// Call it only after `open` reported [`OpenError::Gap`] and the loss is accepted.
    pub fn open_accepting_gap(&mut self, record: &[u8]) -> Result<Opened, OpenError> {
        self.open_inner(record, true)
    }

    fn open_inner(&mut self, record: &[u8], accept_gap: bool) -> Result<Opened, OpenError> {
        // 1. size / format
        let p = parse_record(record)?;
        let h = p.header;
        // 2. channel
        if h.channel_id != self.channel_id {
            return Err(OpenError::WrongChannel);
        }
        // 3. signature
        self.device
            .verify(p.signed, &p.signature)
            .map_err(|_| OpenError::BadSignature)?;
        let Some(epoch_key) = &self.epoch_key else {
            return Err(OpenError::NotAuthorised);
        };
        // 4. sequence / link
        let hash = record_hash(record);
        if h.seq < self.next_seq {
            if self.recent.iter().any(|(s, hh)| *s == h.seq && *hh == hash) {
                return Err(OpenError::Duplicate { seq: h.seq });
            }
            return Err(OpenError::Reordered {
                expected: self.next_seq,
                got: h.seq,
            });
        }
        if h.seq > self.next_seq && !accept_gap {
            return Err(OpenError::Gap {
                expected: self.next_seq,
                got: h.seq,
            });
        }
        if h.seq == self.next_seq && h.prev_hash != self.prev_hash {
            return Err(OpenError::BrokenLink);
        }
        // 5. epoch / key, 6. AEAD
        match p.body {
            Body::Data { nonce, ciphertext } => {
                if h.epoch != self.epoch {
                    return Err(OpenError::UnknownEpoch { epoch: h.epoch });
                }
                let key = cached_data_key(&mut self.data_key, epoch_key, &self.channel_id, h.epoch);
                let plaintext = crypto::open(key, &nonce, p.header_bytes, ciphertext)
                    .map_err(|_| OpenError::Tampered)?;
                self.accept(h.seq, hash);
                Ok(Opened::Data {
                    seq: h.seq,
                    epoch: h.epoch,
                    timestamp_ms: h.timestamp_ms,
                    plaintext,
                })
            }
            Body::Rotation { slots } => {
                if Some(h.epoch) != self.epoch.checked_add(1) {
                    return Err(OpenError::UnknownEpoch { epoch: h.epoch });
                }
                let hint = slot_hint(&self.reader_secret, &self.channel_id, h.epoch);
                let Ok(i) = slots.binary_search_by(|s| s.hint.cmp(&hint)) else {
                    // A valid rotation without our slot: we were revoked. Terminal.
                    self.accept(h.seq, hash);
                    self.epoch = h.epoch;
                    self.epoch_key = None;
                    self.data_key = None;
                    return Err(OpenError::NotAuthorised);
                };
                let slot = slots.get(i).ok_or(OpenError::Tampered)?;
                let ctx = slot_context(&self.channel_id, h.epoch, &hint);
                let key = slot
                    .wrapped
                    .unwrap(&self.kem, &ctx)
                    .map_err(|_| OpenError::Tampered)?;
                let key: Zeroizing<[u8; KEY_LEN]> =
                    Zeroizing::new(key.as_slice().try_into().map_err(|_| OpenError::Tampered)?);
                let key = SymmetricKey::from_bytes(*key);
                self.accept(h.seq, hash);
                self.epoch = h.epoch;
                self.epoch_key = Some(key);
                Ok(Opened::Rotated {
                    seq: h.seq,
                    epoch: h.epoch,
                })
            }
        }
    }

    fn accept(&mut self, seq: u64, hash: [u8; HASH_LEN]) {
        self.next_seq = seq + 1;
        self.prev_hash = hash;
        if self.recent.len() >= RECENT_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, hash));
    }

    /// Local storage encoding (see docs/PROTOCOL.md, Sealed channels). The KEM secret key is *not*
    /// included; pass it again to [`Self::from_bytes`].
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            READER_STATE_FIXED + self.recent.len() * (8 + HASH_LEN),
        ));
        out.extend_from_slice(&[STATE_READER, VERSION, STATE_SUITE]);
        out.extend_from_slice(&self.channel_id.0);
        out.extend_from_slice(self.device.as_bytes());
        out.extend_from_slice(&self.consent_id.0);
        out.extend_from_slice(&self.kem.public().fingerprint());
        out.extend_from_slice(&self.reader_secret[..]);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        match &self.epoch_key {
            Some(k) => {
                out.push(1);
                out.extend_from_slice(k.expose());
            }
            None => {
                out.push(0);
                out.extend_from_slice(&[0u8; KEY_LEN]);
            }
        }
        out.extend_from_slice(&self.next_seq.to_be_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.push(self.recent.len() as u8);
        for (s, h) in &self.recent {
            out.extend_from_slice(&s.to_be_bytes());
            out.extend_from_slice(h);
        }
        out
    }

    /// Restores a reader saved with [`Self::to_bytes`]; `my_kem` must be the key the
    /// delivery was for.
    pub fn from_bytes(bytes: &[u8], my_kem: &KemSecretKey) -> Result<Self, WireError> {
        let limit = READER_STATE_FIXED + RECENT_WINDOW * (8 + HASH_LEN);
        let mut r = state_reader(bytes, STATE_READER, limit)?;
        let channel_id = OpaqueId(r.array()?);
        let device = PublicId::from_bytes(r.array()?).map_err(|_| WireError::Invalid {
            field: "device",
            reason: "invalid Ed25519 public key",
        })?;
        let consent_id = OpaqueId(r.array()?);
        let fp: [u8; HASH_LEN] = r.array()?;
        if !crypto::ct_eq(&fp, &my_kem.public().fingerprint()) {
            return Err(WireError::Invalid {
                field: "kem fingerprint",
                reason: "state belongs to another KEM key",
            });
        }
        let reader_secret = Zeroizing::new(r.array()?);
        let epoch = r.u32()?;
        let authorised = r.bool("authorised")?;
        let key = Zeroizing::new(r.array::<KEY_LEN>()?);
        let epoch_key = authorised.then(|| SymmetricKey::from_bytes(*key));
        let next_seq = r.u64()?;
        let prev_hash = r.array()?;
        let n = r.u8()? as usize;
        if n > RECENT_WINDOW {
            return Err(WireError::Invalid {
                field: "recent",
                reason: "over limit",
            });
        }
        let mut recent = VecDeque::with_capacity(RECENT_WINDOW);
        for _ in 0..n {
            recent.push_back((r.u64()?, r.array()?));
        }
        r.finish()?;
        Ok(Self {
            channel_id,
            device,
            consent_id,
            kem: KemSecretKey::from_seed(my_kem.suite(), my_kem.seed()),
            reader_secret,
            epoch,
            epoch_key,
            data_key: None,
            next_seq,
            prev_hash,
            recent,
        })
    }
}

const READER_STATE_FIXED: usize =
    3 + 16 + PUBLIC_ID_LEN + 16 + HASH_LEN + READER_SECRET_LEN + 4 + 1 + KEY_LEN + 8 + HASH_LEN + 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> SigningIdentity {
        SigningIdentity::from_seed(&[1; 32])
    }

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(RECORD_HEADER_LEN, 76);
        assert_eq!(DATA_OVERHEAD, 180);
        assert_eq!(DELIVERY_HEADER_LEN, 87);
        for suite in [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768] {
            assert!(
                HINT_LEN + suite.ciphertext_len() + NONCE_LEN + 2 + SLOT_SEALED_LEN <= MAX_SLOT_LEN
            );
        }
        assert_eq!(
            MAX_SLOT_LEN,
            HINT_LEN + KemSuite::X25519MlKem768.ciphertext_len() + NONCE_LEN + 2 + SLOT_SEALED_LEN
        );
    }

    #[test]
    fn data_record_layout() {
        let dev = device();
        let cid = OpaqueId([7; 16]);
        let mut w = ChannelWriter::with_epoch_key(cid, SymmetricKey::from_bytes([3; 32]));
        let rec = w.seal_with_nonce(&dev, 1234, b"hello", &[9; 24]).unwrap();
        assert_eq!(rec.len(), DATA_OVERHEAD + 5);
        assert_eq!(&rec[..4], &[0x01, VERSION, SYMMETRIC_SUITE, KIND_DATA]);
        assert_eq!(&rec[4..20], &cid.0);
        assert_eq!(&rec[20..28], &0u64.to_be_bytes());
        assert_eq!(&rec[28..32], &0u32.to_be_bytes());
        assert_eq!(&rec[32..64], &genesis_hash(&cid));
        assert_eq!(&rec[64..72], &1234u64.to_be_bytes());
        assert_eq!(&rec[72..76], &(24u32 + 5 + 16).to_be_bytes());
        assert_eq!(&rec[76..100], &[9; 24]);
        let hdr = peek(&rec).unwrap();
        assert_eq!(hdr.kind, RecordKind::Data);
        assert_eq!(hdr.seq, 0);
        assert_eq!(w.state().prev_hash(), record_hash(&rec));
        assert_eq!(w.next_seq(), 1);
    }

    #[test]
    fn writer_refuses_oversized_plaintext() {
        let mut w = ChannelWriter::new(OpaqueId([1; 16]));
        let big = vec![0u8; MAX_PLAINTEXT + 1];
        assert_eq!(
            w.seal(&device(), 0, &big),
            Err(ChannelError::PlaintextTooLarge {
                size: MAX_PLAINTEXT + 1,
                limit: MAX_PLAINTEXT
            })
        );
        assert_eq!(w.next_seq(), 0);
        assert!(w.seal(&device(), 0, &big[..MAX_PLAINTEXT]).is_ok());
    }

    #[test]
    fn rotation_limits_reader_count_before_any_work() {
        let kem = KemSecretKey::from_seed(KemSuite::X25519Sntrup761, &[4; 32]);
        let grant = ReaderGrant {
            consent_id: OpaqueId([0; 16]),
            kem_public: kem.public().clone(),
            reader_secret: Zeroizing::new([0; 32]),
        };
        let many = vec![grant; MAX_SLOTS + 1];
        let mut w = ChannelWriter::new(OpaqueId([1; 16]));
        assert_eq!(
            w.rotate(&device(), 0, &many),
            Err(ChannelError::TooManyReaders {
                count: MAX_SLOTS + 1,
                limit: MAX_SLOTS
            })
        );
        assert_eq!((w.epoch(), w.next_seq()), (0, 0));
    }

    #[test]
    fn rotation_rejects_duplicate_readers() {
        let kem = KemSecretKey::from_seed(KemSuite::X25519MlKem768, &[4; 32]);
        let mut w = ChannelWriter::new(OpaqueId([1; 16]));
        let (_, g) = w
            .deliver(&device(), 0, OpaqueId([2; 16]), kem.public())
            .unwrap();
        assert_eq!(
            w.rotate(&device(), 0, &[g.clone(), g]),
            Err(ChannelError::DuplicateReader)
        );
        assert_eq!(w.epoch(), 0);
        assert_eq!(w.next_seq(), 0);
    }
}
