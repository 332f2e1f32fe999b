//! The wallet's use of the shared MQTT link: connect with a deadline, publish and wait for
//! the broker's acknowledgements, and read everything retained under some filters.
//!
//! Reading retained messages uses a *barrier*: after subscribing, the wallet publishes one
//! non-retained message to a private random topic it is also subscribed to. The broker sends
//! a subscription's retained messages when it handles the SUBSCRIBE, before it handles the
//! later PUBLISH from the same connection, so once the barrier comes back everything retained
//! under the earlier filters has been received.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use p1consent_shared::{
    crypto::OpaqueId,
    mqtt::{self, BrokerUrl, LinkConfig, LinkEvent, LinkHandle, Message},
    topics,
};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::{Result, WalletError};

/// A message to publish (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub expiry_s: Option<u32>,
}

pub struct Session {
    handle: LinkHandle,
    events: UnboundedReceiver<LinkEvent>,
    timeout: Duration,
    next_token: u64,
    /// Messages that arrived while waiting for something else.
    buffered: Vec<Message>,
}

impl Session {
    /// Connects and waits (up to `timeout`) until the broker accepted the connection;
    /// `subscriptions` are in place before anything is published.
    pub async fn connect(
        url: &BrokerUrl,
        subscriptions: Vec<String>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut cfg = LinkConfig::new(url.clone(), format!("p1c-wallet-{}", OpaqueId::random()));
        cfg.subscriptions = subscriptions;
        cfg.backoff = (Duration::from_millis(100), Duration::from_secs(2));
        let link = mqtt::connect(cfg)?;
        let mut s = Self {
            handle: link.handle,
            events: link.events,
            timeout,
            next_token: 1,
            buffered: Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match s.next_event(deadline).await? {
                Some(LinkEvent::Connected) => return Ok(s),
                Some(LinkEvent::Message(m)) => s.buffered.push(m),
                Some(_) => {}
                None => {
                    return Err(WalletError::BrokerUnreachable {
                        url: url.to_string(),
                        secs: timeout.as_secs(),
                    });
                }
            }
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn next_event(&mut self, deadline: Instant) -> Result<Option<LinkEvent>> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        match tokio::time::timeout(deadline - now, self.events.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(WalletError::LinkClosed),
            Ok(Some(ev)) => Ok(Some(ev)),
        }
    }

    pub fn subscribe(&self, filter: impl Into<String>) -> Result<()> {
        self.handle
            .subscribe(filter)
            .map_err(|_| WalletError::LinkClosed)
    }

    /// Publishes without waiting for anything (pairing messages).
    pub fn send(&mut self, m: &Outgoing) -> Result<()> {
        let token = self.token();
        self.handle
            .publish(token, m.topic.clone(), m.payload.clone(), m.retain, m.expiry_s)
            .map_err(|_| WalletError::LinkClosed)
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Publishes all messages and waits until the broker acknowledged every one (re-sending
    /// after a reconnect). Returns how many were acknowledged before the deadline.
    pub async fn publish_all(&mut self, msgs: &[Outgoing]) -> Result<()> {
        let mut pending: BTreeMap<u64, &Outgoing> = BTreeMap::new();
        for m in msgs {
            let token = self.token();
            self.handle
                .publish(token, m.topic.clone(), m.payload.clone(), m.retain, m.expiry_s)
                .map_err(|_| WalletError::LinkClosed)?;
            pending.insert(token, m);
        }
        let deadline = Instant::now() + self.timeout;
        while !pending.is_empty() {
            match self.next_event(deadline).await? {
                None => {
                    return Err(WalletError::NotAcknowledged {
                        pending: pending.len(),
                        secs: self.timeout.as_secs(),
                    });
                }
                Some(LinkEvent::Acked(t)) => {
                    pending.remove(&t);
                }
                Some(LinkEvent::Connected) => {
                    // Everything unacknowledged was lost with the old connection.
                    let again: Vec<&Outgoing> = pending.values().copied().collect();
                    pending.clear();
                    for m in again {
                        let token = self.token();
                        self.handle
                            .publish(token, m.topic.clone(), m.payload.clone(), m.retain, m.expiry_s)
                            .map_err(|_| WalletError::LinkClosed)?;
                        pending.insert(token, m);
                    }
                }
                Some(LinkEvent::Message(m)) => self.buffered.push(m),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The next message from the broker before `deadline` (buffered ones first).
    pub async fn next_message(&mut self, deadline: Instant) -> Result<Option<Message>> {
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.remove(0)));
        }
        loop {
            match self.next_event(deadline).await? {
                None => return Ok(None),
                Some(LinkEvent::Message(m)) => return Ok(Some(m)),
                Some(_) => {}
            }
        }
    }

    /// Subscribes to `filters` and returns every message received until the barrier came
    /// back: all retained messages under the filters (and whatever else arrived meanwhile).
    pub async fn read_retained(&mut self, filters: &[String]) -> Result<Vec<Message>> {
        let barrier = format!("{}/wallet-barrier/{}", topics::PREFIX, OpaqueId::random());
        for f in filters {
            self.subscribe(f.clone())?;
        }
        self.subscribe(barrier.clone())?;
        let probe = Outgoing {
            topic: barrier.clone(),
            payload: b"barrier".to_vec(),
            retain: false,
            expiry_s: Some(60),
        };
        self.send(&probe)?;
        let mut out = std::mem::take(&mut self.buffered);
        let deadline = Instant::now() + self.timeout;
        let mut last_probe = Instant::now();
        loop {
            let wait_until = deadline.min(last_probe + Duration::from_secs(2));
            match self.next_event(wait_until).await? {
                Some(LinkEvent::Message(m)) if m.topic == barrier => return Ok(out),
                Some(LinkEvent::Message(m)) => out.push(m),
                Some(LinkEvent::Connected) => {
                    // Reconnected: subscriptions were renewed, so retained messages come again.
                    self.send(&probe)?;
                    last_probe = Instant::now();
                }
                Some(_) => {}
                None if Instant::now() >= deadline => {
                    return Err(WalletError::NoResponse {
                        what: "the broker",
                        secs: self.timeout.as_secs(),
                    });
                }
                None => {
                    // The probe may have been lost (published while reconnecting).
                    self.send(&probe)?;
                    last_probe = Instant::now();
                }
            }
        }
    }
}
