//! One MQTT connection for any party (agent, provider, wallet): broker URLs, reconnect with
//! backoff, re-subscription, acknowledgement tracking, and a size limit on what comes in.
//!
//! The link is deliberately at-least-once and stateless across reconnects: each connection
//! attempt starts a fresh rumqttc client, and a publisher that needs durability (the agent's
//! outbox) re-publishes whatever was not acknowledged when it sees [`LinkEvent::Connected`].
//! Readers drop the resulting duplicates by sequence number, so each message is *seen* once.
//!
//! Within one connection nothing accepted is dropped and order is kept: a publish that
//! rumqttc's request queue cannot take yet waits in the link's own queue. A publisher that
//! re-sends in order after every reconnect tags its publishes with the connection they are
//! meant for ([`LinkHandle::publish_on`]); a publish issued for an earlier connection (the
//! publisher had not yet seen the reconnect) is dropped instead of overtaking the re-sent
//! messages that come before it.

use std::{
    collections::HashMap,
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rumqttc::v5::{
    AsyncClient, Event, MqttOptions,
    mqttbytes::{
        QoS,
        v5::{Packet, PubAckReason, PublishProperties, SubscribeReasonCode},
        valid_topic,
    },
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::topics::MAX_PAYLOAD;

/// Where the broker is: `mqtt://[user[:password]@]host[:port]` or `mqtts://…` (TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

/// Displays without the password.
impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match &self.username {
            Some(u) => write!(f, "{scheme}://{u}@{}:{}", self.host, self.port),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("broker URL must start with mqtt:// or mqtts:// (got {0:?})")]
    Scheme(String),
    #[error("broker URL has no host")]
    NoHost,
    #[error("broker URL port {0:?} is not a number from 1 to 65535")]
    Port(String),
    #[error("broker URL is too long")]
    TooLong,
    #[error("mqtts:// needs TLS support, which this build does not include")]
    TlsUnavailable,
}

impl std::str::FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        if s.len() > 512 {
            return Err(UrlError::TooLong);
        }
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(UrlError::Scheme(s.chars().take(40).collect()));
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
                None => (Some(u.to_string()), None),
            },
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(UrlError::NoHost)?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p)?),
                None => (hostport.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(UrlError::NoHost);
        }
        Ok(Self {
            tls,
            host,
            port,
            username,
            password,
        })
    }
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::Port(p.chars().take(10).collect())),
        Ok(n) => Ok(n),
    }
}

/// What a party asks of its connection.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub url: BrokerUrl,
    pub client_id: String,
    /// Keep the session (and queued QoS 1 messages) across reconnects for this long.
    /// `None` = clean session every time.
    pub session_expiry_s: Option<u32>,
    /// Filters subscribed (QoS 1) on every (re)connect.
    pub subscriptions: Vec<String>,
    /// Largest payload accepted from the broker; larger ones are dropped and reported.
    pub max_payload: usize,
    /// First and largest wait between connection attempts.
    pub backoff: (Duration, Duration),
}

impl LinkConfig {
    pub fn new(url: BrokerUrl, client_id: impl Into<String>) -> Self {
        Self {
            url,
            client_id: client_id.into(),
            session_expiry_s: None,
            subscriptions: Vec::new(),
            max_payload: MAX_PAYLOAD,
            backoff: (Duration::from_millis(200), Duration::from_secs(30)),
        }
    }
}

/// A message received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// (Re)connected and subscribed; publishers re-send what is unacknowledged.
    Connected,
    /// Lost the connection; everything unacknowledged is considered lost.
    Disconnected(String),
    Message(Message),
    /// The broker acknowledged the publish with this token. A publish the broker refused
    /// (an error reason in its PUBACK) is never reported: to the publisher it stays
    /// unacknowledged and is sent again after the next reconnect.
    Acked(u64),
    /// A message over the size limit (or with a non-UTF-8 topic) was dropped.
    Dropped {
        topic: String,
        size: usize,
    },
    /// The broker confirmed a subscription to this filter (again after every reconnect):
    /// from now on it delivers what is published there.
    Subscribed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the MQTT link has shut down")]
pub struct LinkClosed;

/// A publish on its way to rumqttc.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Publish {
    token: u64,
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    expiry_s: Option<u32>,
}

enum Command {
    Publish {
        /// Only for this connection (see [`LinkHandle::publish_on`]); `None`: any.
        connection: Option<u64>,
        publish: Publish,
    },
    Subscribe(String),
}

/// Cheap to clone; sends requests to the connection task.
#[derive(Clone)]
pub struct LinkHandle {
    tx: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<LinkState>,
    connections: Arc<AtomicU64>,
}

impl LinkHandle {
    /// Publishes at QoS 1. `token` comes back in [`LinkEvent::Acked`] once the broker has it.
    /// A publish issued while disconnected is dropped: the caller re-sends on `Connected`.
    pub fn publish(
        &self,
        token: u64,
        topic: impl Into<String>,
        payload: Vec<u8>,
        retain: bool,
        expiry_s: Option<u32>,
    ) -> Result<(), LinkClosed> {
        self.send_publish(
            None,
            Publish {
                token,
                topic: topic.into(),
                payload,
                retain,
                expiry_s,
            },
        )
    }

    /// Like [`Self::publish`], but only on connection number `connection` (from
    /// [`Self::connection`], read when handling its [`LinkEvent::Connected`]): if the link
    /// has reconnected since, the publish is dropped, because the publisher will see the new
    /// `Connected` and re-send everything in order.
    pub fn publish_on(
        &self,
        connection: u64,
        token: u64,
        topic: impl Into<String>,
        payload: Vec<u8>,
        retain: bool,
        expiry_s: Option<u32>,
    ) -> Result<(), LinkClosed> {
        self.send_publish(
            Some(connection),
            Publish {
                token,
                topic: topic.into(),
                payload,
                retain,
                expiry_s,
            },
        )
    }

    fn send_publish(&self, connection: Option<u64>, publish: Publish) -> Result<(), LinkClosed> {
        self.tx
            .send(Command::Publish {
                connection,
                publish,
            })
            .map_err(|_| LinkClosed)
    }

    /// Number of the current (or last) connection: 0 before the first, then counting up
    /// with every [`LinkEvent::Connected`] (it is already updated when the event arrives).
    pub fn connection(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Adds a subscription, kept across reconnects.
    pub fn subscribe(&self, filter: impl Into<String>) -> Result<(), LinkClosed> {
        self.tx
            .send(Command::Subscribe(filter.into()))
            .map_err(|_| LinkClosed)
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    pub fn state_watch(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }
}

/// A running connection: a handle to send with and the stream of what happens.
pub struct Link {
    pub handle: LinkHandle,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
}

/// Starts the connection task on the current tokio runtime. It ends when every
/// [`LinkHandle`] and the event receiver are dropped.
pub fn connect(config: LinkConfig) -> Result<Link, UrlError> {
    if config.url.tls && !cfg!(feature = "mqtt-tls") {
        return Err(UrlError::TlsUnavailable);
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
    let connections = Arc::new(AtomicU64::new(0));
    tokio::spawn(run(config, cmd_rx, ev_tx, state_tx, connections.clone()));
    Ok(Link {
        handle: LinkHandle {
            tx: cmd_tx,
            state: state_rx,
            connections,
        },
        events: ev_rx,
    })
}

fn options(config: &LinkConfig) -> MqttOptions {
    let mut o = MqttOptions::new(&config.client_id, &config.url.host, config.url.port);
    o.set_keep_alive(Duration::from_secs(15));
    // rumqttc preallocates one slot per allowed in-flight publish (default 65,535: ~13 MB per
    // connection); the agent's outbox window (256) is the most any party keeps in flight.
    o.set_outgoing_inflight_upper_limit(256);
    o.set_clean_start(config.session_expiry_s.is_none());
    o.set_session_expiry_interval(config.session_expiry_s);
    let limit = u32::try_from(config.max_payload.saturating_add(64 * 1024)).unwrap_or(u32::MAX);
    o.set_max_packet_size(Some(limit));
    if let Some(user) = &config.url.username {
        o.set_credentials(user, config.url.password.clone().unwrap_or_default());
    }
    #[cfg(feature = "mqtt-tls")]
    if config.url.tls {
        o.set_transport(rumqttc::Transport::Tls(tls::configuration()));
    }
    o
}

#[cfg(feature = "mqtt-tls")]
mod tls {
    use std::sync::Arc;

    /// TLS with the platform's root certificates (plus `P1C_MQTT_CA_FILE`, PEM, if set).
    pub fn configuration() -> rumqttc::TlsConfiguration {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Ok(path) = std::env::var("P1C_MQTT_CA_FILE")
            && let Ok(pem) = std::fs::read(&path)
        {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
                let _ = roots.add(cert);
            }
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        rumqttc::TlsConfiguration::Rustls(Arc::new(config))
    }
}

/// The publishes of one connection, from the publisher to the broker's acknowledgement.
#[derive(Debug, Default)]
struct Tracker {
    /// Accepted but not yet taken by rumqttc (its request queue was full), in order.
    queued: VecDeque<Publish>,
    /// Taken by rumqttc, in order, until it assigns a packet id.
    unassigned: VecDeque<u64>,
    inflight: HashMap<u16, u64>,
}

impl Tracker {
    /// Queues a publish behind any still waiting, so order is kept. A topic rumqttc would
    /// never take (wildcards, empty) is dropped: it would block everything behind it.
    fn push(&mut self, p: Publish) {
        if valid_topic(&p.topic) {
            self.queued.push_back(p);
        }
    }

    /// Hands queued publishes to `send`, in order, until it refuses one (that one stays
    /// first in line for the next call).
    fn flush(&mut self, mut send: impl FnMut(&Publish) -> bool) {
        while let Some(p) = self.queued.front() {
            if !send(p) {
                break;
            }
            if let Some(p) = self.queued.pop_front() {
                self.unassigned.push_back(p.token);
            }
        }
    }

    /// rumqttc wrote the next publish with this packet id.
    fn on_sent(&mut self, pkid: u16) {
        if let Some(token) = self.unassigned.pop_front() {
            self.inflight.insert(pkid, token);
        }
    }

    /// The broker answered the publish with this packet id; the token if it accepted it.
    fn on_puback(&mut self, pkid: u16, reason: &PubAckReason) -> Option<u64> {
        let token = self.inflight.remove(&pkid)?;
        matches!(
            reason,
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        )
        .then_some(token)
    }
}

async fn run(
    mut config: LinkConfig,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<LinkEvent>,
    state: watch::Sender<LinkState>,
    connections: Arc<AtomicU64>,
) {
    let mut backoff = config.backoff.0;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options(&config), 1024);
        let mut tracker = Tracker::default();
        // Subscriptions handed to rumqttc, in order, until it assigns a packet id; then by id
        // until the broker's SUBACK.
        let mut subs_unassigned: VecDeque<String> = VecDeque::new();
        let mut subs_inflight: HashMap<u16, String> = HashMap::new();
        let subscribe = |f: &String, unassigned: &mut VecDeque<String>| {
            if client.try_subscribe(f.clone(), QoS::AtLeastOnce).is_ok() {
                unassigned.push_back(f.clone());
            }
        };
        // This connection's number once the broker accepted it.
        let mut connected: Option<u64> = None;
        let reason = loop {
            tracker.flush(|p| {
                let props = PublishProperties {
                    message_expiry_interval: p.expiry_s,
                    ..Default::default()
                };
                client
                    .try_publish_with_properties(
                        p.topic.clone(),
                        QoS::AtLeastOnce,
                        p.retain,
                        p.payload.clone(),
                        props,
                    )
                    .is_ok()
            });
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &config.subscriptions {
                            subscribe(f, &mut subs_unassigned);
                        }
                        connected = Some(connections.fetch_add(1, Ordering::SeqCst) + 1);
                        backoff = config.backoff.0;
                        state.send_replace(LinkState::Connected);
                        if events.send(LinkEvent::Connected).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8(p.topic.to_vec());
                        let ev = match topic {
                            Ok(topic) if p.payload.len() <= config.max_payload => {
                                LinkEvent::Message(Message { topic, payload: p.payload.to_vec(), retain: p.retain })
                            }
                            Ok(topic) => LinkEvent::Dropped { topic, size: p.payload.len() },
                            Err(_) => LinkEvent::Dropped { topic: String::new(), size: p.payload.len() },
                        };
                        if events.send(ev).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(token) = tracker.on_puback(ack.pkid, &ack.reason)
                            && events.send(LinkEvent::Acked(token)).is_err() {
                                return;
                            }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => tracker.on_sent(pkid),
                    Ok(Event::Outgoing(rumqttc::Outgoing::Subscribe(pkid))) => {
                        if let Some(f) = subs_unassigned.pop_front() {
                            subs_inflight.insert(pkid, f);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted = ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                        if let Some(f) = subs_inflight.remove(&ack.pkid)
                            && granted
                            && events.send(LinkEvent::Subscribed(f)).is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break e.to_string(),
                },
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Command::Subscribe(f)) => {
                        if connected.is_some() {
                            subscribe(&f, &mut subs_unassigned);
                        }
                        if !config.subscriptions.contains(&f) {
                            config.subscriptions.push(f);
                        }
                    }
                    Some(Command::Publish { connection, publish }) => {
                        // Not connected, or meant for an earlier connection: the publisher
                        // re-sends after Connected.
                        if connected.is_some() && connection.is_none_or(|c| Some(c) == connected) {
                            tracker.push(publish);
                        }
                    }
                },
            }
        };
        state.send_replace(LinkState::Disconnected);
        if events.send(LinkEvent::Disconnected(reason)).is_err() {
            return;
        }
        // Wait before the next attempt; keep subscriptions asked for meanwhile, drop
        // publishes (the publisher re-sends after Connected).
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Command::Subscribe(f)) => {
                        if !config.subscriptions.contains(&f) {
                            config.subscriptions.push(f);
                        }
                    }
                    Some(Command::Publish { .. }) => {}
                },
            }
        }
        backoff = (backoff * 2).min(config.backoff.1);
        state.send_replace(LinkState::Connecting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(token: u64, topic: &str) -> Publish {
        Publish {
            token,
            topic: topic.into(),
            payload: vec![token as u8],
            retain: false,
            expiry_s: None,
        }
    }

    #[test]
    fn a_full_request_queue_delays_publishes_in_order_and_drops_none() {
        let mut t = Tracker::default();
        for token in 1..=5 {
            t.push(publish(token, "p1c/v1/ch/x"));
        }
        // rumqttc takes two, then its queue is full.
        let mut taken = Vec::new();
        t.flush(|p| {
            if taken.len() < 2 {
                taken.push(p.token);
                true
            } else {
                false
            }
        });
        assert_eq!(taken, vec![1, 2]);
        // A later publish queues behind the waiting ones.
        t.push(publish(6, "p1c/v1/ch/x"));
        t.flush(|p| {
            taken.push(p.token);
            true
        });
        assert_eq!(taken, vec![1, 2, 3, 4, 5, 6]);
        // Packet ids are assigned in the order rumqttc took them; acks map back to tokens.
        for pkid in 1..=6u16 {
            t.on_sent(pkid);
        }
        assert_eq!(t.on_puback(3, &PubAckReason::Success), Some(3));
        assert_eq!(
            t.on_puback(1, &PubAckReason::NoMatchingSubscribers),
            Some(1)
        );
        assert_eq!(t.on_puback(3, &PubAckReason::Success), None, "acked once");
    }

    #[test]
    fn a_refused_publish_is_not_reported_as_acknowledged() {
        let mut t = Tracker::default();
        t.push(publish(7, "p1c/v1/ch/x"));
        t.push(publish(8, "p1c/v1/ch/x"));
        t.flush(|_| true);
        t.on_sent(1);
        t.on_sent(2);
        assert_eq!(t.on_puback(1, &PubAckReason::QuotaExceeded), None);
        assert_eq!(t.on_puback(2, &PubAckReason::NotAuthorized), None);
        assert!(t.inflight.is_empty());
    }

    #[test]
    fn a_topic_rumqttc_cannot_take_does_not_block_the_queue() {
        let mut t = Tracker::default();
        t.push(publish(1, "p1c/v1/ch/+"));
        t.push(publish(2, "p1c/v1/ch/x"));
        let mut taken = Vec::new();
        t.flush(|p| {
            taken.push(p.token);
            true
        });
        assert_eq!(taken, vec![2]);
    }

    #[test]
    fn broker_urls_parse_strictly() {
        let u: BrokerUrl = "mqtt://localhost".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "localhost", 1883));
        let u: BrokerUrl = "mqtts://alice:s3cr:t@broker.example:8884/".parse().unwrap();
        assert_eq!(u.port, 8884);
        assert!(u.tls);
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("s3cr:t"));
        assert_eq!(u.to_string(), "mqtts://alice@broker.example:8884");
        let u: BrokerUrl = "mqtt://[::1]:1999".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1999));
        assert!(matches!(
            "http://x".parse::<BrokerUrl>(),
            Err(UrlError::Scheme(_))
        ));
        assert_eq!("mqtt://".parse::<BrokerUrl>(), Err(UrlError::NoHost));
        assert!(matches!(
            "mqtt://h:0".parse::<BrokerUrl>(),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            "mqtt://h:99999".parse::<BrokerUrl>(),
            Err(UrlError::Port(_))
        ));
        assert_eq!(
            format!("mqtt://{}", "a".repeat(600)).parse::<BrokerUrl>(),
            Err(UrlError::TooLong)
        );
    }
}
