//! A broker client that records everything under `p1c/v1/#` (what a broker operator, or
//! anyone with broker access, can capture), and a polling wait for test conditions.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use p1consent_shared::{
    channel,
    crypto::OpaqueId,
    mqtt::{self, LinkConfig, LinkEvent, Message},
    topics,
};
use tokio::{sync::mpsc, time::Instant};

/// How long a test waits for a condition before it fails. Generous: CI machines are slow and
/// shared; nothing asserts on time.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Spy {
    seen: Arc<Mutex<Vec<Message>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Spy {
    /// A spy with a clean session: it sees what is published while it is connected.
    pub async fn start(url: &str, client_id: &str) -> Self {
        Self::start_with(url, client_id, None).await
    }

    /// A spy with a persistent session, so that a broker restart loses nothing the broker
    /// kept for it.
    pub async fn start_persistent(url: &str, client_id: &str) -> Self {
        Self::start_with(url, client_id, Some(3600)).await
    }

    async fn start_with(url: &str, client_id: &str, session_expiry_s: Option<u32>) -> Self {
        let mut lc = LinkConfig::new(url.parse().expect("broker url"), client_id);
        lc.subscriptions = vec![format!("{}/#", topics::PREFIX)];
        lc.session_expiry_s = session_expiry_s;
        let mut link = mqtt::connect(lc).expect("spy link");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _handle = link.handle;
            while let Some(ev) = link.events.recv().await {
                match ev {
                    LinkEvent::Message(m) => {
                        s2.lock().unwrap_or_else(PoisonError::into_inner).push(m)
                    }
                    LinkEvent::Connected => {
                        let _ = ready_tx.send(());
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx.recv())
            .await
            .expect("spy connects");
        Self { seen, task }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub async fn wait_until(&self, what: &str, pred: impl Fn(&[Message]) -> bool) {
        wait_for(what, || async { pred(&self.messages()).then_some(()) }).await
    }

    /// Non-empty payloads seen on a channel's record topic, in arrival order.
    pub fn channel_records(&self, ch: &OpaqueId) -> Vec<Vec<u8>> {
        channel_records(&self.messages(), ch)
    }

    /// The highest seq among the last records captured on a channel (without copying the
    /// capture).
    pub fn max_channel_seq(&self, ch: &OpaqueId) -> Option<u64> {
        let t = topics::channel(ch);
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .filter(|m| m.topic == t && !m.payload.is_empty())
            .take(64)
            .filter_map(|m| channel::peek(&m.payload).ok())
            .map(|h| h.seq)
            .max()
    }

    /// The last non-empty payload seen on `topic`.
    pub fn last_payload(&self, topic: &str) -> Option<Vec<u8>> {
        self.messages()
            .into_iter()
            .rev()
            .find(|m| m.topic == topic && !m.payload.is_empty())
            .map(|m| m.payload)
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Non-empty payloads on a channel's record topic among `msgs`, in order.
pub fn channel_records(msgs: &[Message], ch: &OpaqueId) -> Vec<Vec<u8>> {
    let t = topics::channel(ch);
    msgs.iter()
        .filter(|m| m.topic == t && !m.payload.is_empty())
        .map(|m| m.payload.clone())
        .collect()
}
