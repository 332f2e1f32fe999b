//! End to end with real parts: Debian's mosquitto (testkit), a real pi-agent in-process
//! (simulated meter, external broker), the owner side written with shared's APIs, and the
//! provider SDK. A spy client captures every message on the broker for assertions.

use std::time::Duration;

use p1consent_provider::{
    ConsentPhase, Provider, ProviderEvent, ProviderKeys, ProviderOptions, RequestBuilder,
};
use p1consent_shared::{
    channel::{self, ChannelReader, OpenError, Opened, RecordKind},
    consent::{
        Field, FieldSet, OwnerRoot, Resolution, Role, SignedRequest, ThreadEnvelope,
        log::{Event, Grant, LogWriter, Participants, ThreadLog},
    },
    crypto::{KemPublicKey, KemSuite, OpaqueId, PublicId, SigningIdentity},
    mqtt::{self, LinkConfig, LinkEvent, LinkHandle, Message},
    topics::{self, InboxItem},
};
use p1consent_testkit::{Mosquitto, Spy, channel_records};
use pi_agent::{
    config::{AgentConfig, SourceKind},
    identity::DeviceIdentity,
    store::Store,
};
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    p1consent_provider::now_ms()
}

/// The owner's MQTT client: publishes retained messages and waits for the broker's ack.
struct OwnerLink {
    handle: LinkHandle,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    token: u64,
}

impl OwnerLink {
    async fn connect(url: &str) -> Self {
        let link = mqtt::connect(LinkConfig::new(url.parse().unwrap(), "owner")).unwrap();
        let mut o = Self {
            handle: link.handle,
            events: link.events,
            token: 0,
        };
        o.wait(|e| *e == LinkEvent::Connected).await;
        o
    }

    async fn wait(&mut self, pred: impl Fn(&LinkEvent) -> bool) {
        tokio::time::timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                if pred(&ev) {
                    return;
                }
            }
            panic!("owner link closed");
        })
        .await
        .expect("owner link event in time");
    }

    async fn publish(&mut self, topic: String, payload: Vec<u8>) {
        self.publish_as(topic, payload, true).await
    }

    async fn publish_as(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.token += 1;
        let t = self.token;
        self.handle
            .publish(t, topic, payload, retain, None)
            .unwrap();
        self.wait(|e| *e == LinkEvent::Acked(t)).await;
    }

    /// Creates thread `tid` for its members (role, KEM key, and the identity whose inbox gets
    /// the envelope, if any) and delivers the envelope, as the wallet does.
    async fn open_thread(
        &mut self,
        owner: &SigningIdentity,
        root: &OwnerRoot,
        tid: OpaqueId,
        members: &[(Role, &KemPublicKey, Option<&PublicId>)],
    ) {
        let recipients: Vec<(Role, &KemPublicKey)> =
            members.iter().map(|(role, kem, _)| (*role, *kem)).collect();
        let env = ThreadEnvelope::create(owner, root, tid, &recipients).unwrap();
        for inbox in members.iter().filter_map(|(_, _, inbox)| *inbox) {
            self.publish(
                topics::inbox(&inbox.opaque_id(), &InboxItem::Thread(tid)),
                env.clone(),
            )
            .await;
        }
    }
}

/// Collects provider events until one matches.
async fn wait_event(
    p: &mut Provider,
    log: &mut Vec<ProviderEvent>,
    what: &str,
    pred: impl Fn(&ProviderEvent) -> bool,
) -> ProviderEvent {
    let res = tokio::time::timeout(WAIT, async {
        loop {
            let ev = p.next_event().await.expect("provider stream");
            log.push(ev.clone());
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await;
    match res {
        Ok(ev) => ev,
        Err(_) => panic!("timed out waiting for {what}; events so far: {log:#?}"),
    }
}

fn start_agent(
    url: &str,
    dir: &std::path::Path,
    owner: &PublicId,
) -> (DeviceIdentity, watch::Sender<bool>) {
    let mut cfg = AgentConfig {
        state_dir: dir.to_path_buf(),
        ..AgentConfig::default()
    };
    cfg.meter.source = SourceKind::Simulator;
    cfg.meter.simulator_interval_ms = 200;
    cfg.broker.url = Some(url.to_string());
    // The agent is "paired" already: identity on disk and the owner in its store (what the
    // pairing exchange leaves behind; pairing itself is the wallet's and agent's business).
    let id = DeviceIdentity::generate(KemSuite::DEFAULT);
    id.save(&cfg.identity_path()).unwrap();
    {
        let store = Store::open(&cfg.db_path()).unwrap();
        store
            .put(
                "owner",
                &serde_json::json!({"owner": owner.to_hex(), "paired_at": now_ms() / 1000}),
            )
            .unwrap();
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if let Err(e) = pi_agent::agent::run(cfg, rx).await {
            panic!("agent failed: {e}");
        }
    });
    (id, tx)
}

/// The device a consent is granted for.
enum GrantedDevice<'a> {
    /// The agent under test: the consent thread's envelope goes to its inbox too.
    Agent(&'a DeviceIdentity),
    /// No agent runs: only the provider's inbox gets the envelope.
    Absent(PublicId, &'a KemPublicKey),
}

/// The owner grants `request` (every requested field, raw) until `expires_at`, as the wallet
/// does: the consent thread's envelope to its members' inboxes, then ConsentGranted as the
/// thread's first entry. Returns the thread and its log writer (for later entries).
async fn grant(
    ol: &mut OwnerLink,
    owner: &SigningIdentity,
    root: &OwnerRoot,
    request: &SignedRequest,
    keys: &ProviderKeys,
    device: GrantedDevice<'_>,
    expires_at: u64,
) -> (OpaqueId, LogWriter) {
    let (device, device_kem, device_inbox) = match device {
        GrantedDevice::Agent(d) => (d.public(), d.kem.public(), true),
        GrantedDevice::Absent(id, kem) => (id, kem, false),
    };
    let provider = keys.public();
    let ctid = root.consent_thread_id(&device, &provider);
    ol.open_thread(
        owner,
        root,
        ctid,
        &[
            (Role::Device, device_kem, device_inbox.then_some(&device)),
            (Role::Provider, keys.kem_public(), Some(&provider)),
        ],
    )
    .await;
    let fields = request.content().fields;
    let grant = Grant::new(request, device, fields, Resolution::Raw, expires_at).unwrap();
    let mut writer = LogWriter::new(ctid, Role::Owner);
    let granted = writer
        .append(
            owner,
            &root.thread_key(&ctid),
            now_ms(),
            &Event::ConsentGranted(Box::new(grant)),
        )
        .unwrap();
    ol.publish(topics::log_entry(&ctid, 1, 0), granted).await;
    (ctid, writer)
}

fn options() -> ProviderOptions {
    ProviderOptions {
        client_id: Some("provider-under-test".into()),
        ..ProviderOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_read_restart_revoke_erase_with_real_agent() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let spy = Spy::start(&url, "spy").await;
    let agent_dir = tempfile::tempdir().unwrap();
    let provider_dir = tempfile::tempdir().unwrap();

    // Owner.
    let owner = SigningIdentity::generate();
    let root = OwnerRoot::from_identity(&owner);
    let (device_id, _agent_shutdown) = start_agent(&url, agent_dir.path(), &owner.public());
    let device = device_id.public();
    let mut ol = OwnerLink::connect(&url).await;

    // Device thread: envelope to the device, DevicePaired.
    let dtid = root.device_thread_id(&device);
    ol.open_thread(
        &owner,
        &root,
        dtid,
        &[(Role::Device, device_id.kem.public(), Some(&device))],
    )
    .await;
    let mut dw = LogWriter::new(dtid, Role::Owner);
    let paired = dw
        .append(
            &owner,
            &root.thread_key(&dtid),
            now_ms(),
            &Event::DevicePaired {
                device,
                device_kem: device_id.kem.public().clone(),
                label: "test meter".into(),
            },
        )
        .unwrap();
    ol.publish(topics::log_entry(&dtid, 1, 0), paired.clone())
        .await;

    // Provider: keys and request; the owner verifies the link.
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let fields = FieldSet::empty()
        .with(Field::EnergyDelivered)
        .with(Field::PowerDelivered);
    let link = RequestBuilder::new("Acme Energy", "dpo@acme.example")
        .purpose("Live energy dashboard")
        .fields(fields)
        .resolution(Resolution::Raw)
        .retention_days(7)
        .valid_for(3600)
        .build(&keys)
        .unwrap()
        .to_link();
    let request: SignedRequest = SignedRequest::from_link(&link, now_ms() / 1000)
        .unwrap()
        .into_signed();
    let consent = request.consent_id();

    let mut provider =
        Provider::connect_with(keys.duplicate(), &url, provider_dir.path(), options()).unwrap();
    let mut log = Vec::new();
    wait_event(&mut provider, &mut log, "connected", |e| {
        matches!(e, ProviderEvent::Connected)
    })
    .await;

    // Grant: consent thread to device and provider, ConsentGranted.
    let (ctid, mut cw) = grant(
        &mut ol,
        &owner,
        &root,
        &request,
        &keys,
        GrantedDevice::Agent(&device_id),
        now_ms() / 1000 + 1800,
    )
    .await;
    let ckey = root.thread_key(&ctid);

    let ev = wait_event(&mut provider, &mut log, "grant", |e| {
        matches!(e, ProviderEvent::Granted { .. })
    })
    .await;
    assert!(
        matches!(ev, ProviderEvent::Granted { consent: c, device: d, .. } if c == consent && d == device)
    );
    let ev = wait_event(&mut provider, &mut log, "key", |e| {
        matches!(e, ProviderEvent::KeyReceived { .. })
    })
    .await;
    let ProviderEvent::KeyReceived { channel: ch, .. } = ev else {
        unreachable!()
    };

    // Readings flow and carry exactly the granted fields.
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let ev = wait_event(&mut provider, &mut log, "reading", |e| {
            matches!(e, ProviderEvent::Reading { .. })
        })
        .await;
        let ProviderEvent::Reading {
            consent: c,
            seq,
            payload,
            ..
        } = ev
        else {
            unreachable!()
        };
        assert_eq!(c, consent);
        let r = payload.as_reading().expect("raw view gives readings");
        assert!(r.power_delivered_kw.is_some());
        assert!(r.energy_delivered_total_kwh.is_some() || r.energy_delivered_tariff1_kwh.is_some());
        assert!(
            r.voltage_l1_v.is_none(),
            "a field that was not granted arrived"
        );
        assert!(r.gas.is_none(), "a field that was not granted arrived");
        seqs.push(seq);
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let data_file = provider.data_file(&consent);
    let stored = std::fs::read_to_string(&data_file).unwrap();
    assert!(stored.lines().count() >= 5);

    // Restart: drop the provider, let the device seal more, connect again from the data dir.
    // A clean close keeps what the link already received.
    for ev in provider.close().unwrap() {
        if let ProviderEvent::Reading { seq, .. } = ev {
            seqs.push(seq);
        }
        log.push(ev);
    }
    let last = *seqs.last().unwrap();
    spy.wait_until("records sealed while the provider is away", |m| {
        channel_records(m, &ch)
            .iter()
            .filter_map(|r| channel::peek(r).ok())
            .any(|h| h.seq >= last + 4)
    })
    .await;
    let restart_at = log.len();
    let mut provider =
        Provider::connect_with(keys.duplicate(), &url, provider_dir.path(), options()).unwrap();
    let mut after = Vec::new();
    while after.len() < 6 {
        let ev = wait_event(&mut provider, &mut log, "reading after restart", |e| {
            matches!(e, ProviderEvent::Reading { .. })
        })
        .await;
        if let ProviderEvent::Reading { seq, .. } = ev {
            after.push(seq);
        }
    }
    assert_eq!(
        after[0],
        last + 1,
        "the restart must continue right after the last reading: {after:?}"
    );
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    // The stream starts at the first record after the key delivery (nothing sealed before
    // the channel subscription is a loss), and the restart continues it: no Gap anywhere.
    assert!(
        !log.iter().any(|e| matches!(e, ProviderEvent::Gap { .. })),
        "no gaps expected: {log:#?}"
    );
    assert!(
        !log[restart_at..]
            .iter()
            .any(|e| matches!(e, ProviderEvent::Duplicate { .. })),
        "no duplicates expected after the restart: {:#?}",
        &log[restart_at..]
    );
    assert!(
        !log.iter()
            .any(|e| matches!(e, ProviderEvent::Duplicate { .. }))
    );
    assert!(
        !log.iter()
            .any(|e| matches!(e, ProviderEvent::Rejected { .. })),
        "nothing should be rejected: {log:#?}"
    );

    // A second provider asks for the same view: it shares the channel. The device rotates
    // to a fresh epoch for the newcomer; provider A stays a reader and follows the rotation.
    let keys_b = ProviderKeys::generate(KemSuite::DEFAULT);
    let provider_b_dir = tempfile::tempdir().unwrap();
    let request_b = SignedRequest::from_link(
        &RequestBuilder::new("Beta Grid", "privacy@beta.example")
            .purpose("Grid congestion research")
            .fields(fields)
            .resolution(Resolution::Raw)
            .retention_days(1)
            .valid_for(3600)
            .build(&keys_b)
            .unwrap()
            .to_link(),
        now_ms() / 1000,
    )
    .unwrap()
    .into_signed();
    let consent_b = request_b.consent_id();
    let mut provider_b = Provider::connect_with(
        keys_b.duplicate(),
        &url,
        provider_b_dir.path(),
        ProviderOptions {
            client_id: Some("provider-b".into()),
            ..ProviderOptions::default()
        },
    )
    .unwrap();
    let mut log_b = Vec::new();
    wait_event(&mut provider_b, &mut log_b, "B connected", |e| {
        matches!(e, ProviderEvent::Connected)
    })
    .await;
    grant(
        &mut ol,
        &owner,
        &root,
        &request_b,
        &keys_b,
        GrantedDevice::Agent(&device_id),
        now_ms() / 1000 + 1800,
    )
    .await;
    wait_event(
        &mut provider_b,
        &mut log_b,
        "B's key",
        |e| matches!(e, ProviderEvent::KeyReceived { channel: c, .. } if *c == ch),
    )
    .await;
    wait_event(
        &mut provider,
        &mut log,
        "A follows the rotation",
        |e| matches!(e, ProviderEvent::Rotated { consent: c, epoch: 1 } if *c == consent),
    )
    .await;
    wait_event(&mut provider, &mut log, "A reads in the new epoch", |e| {
        matches!(e, ProviderEvent::Reading { .. })
    })
    .await;
    wait_event(
        &mut provider_b,
        &mut log_b,
        "B reads",
        |e| matches!(e, ProviderEvent::Reading { consent: c, .. } if *c == consent_b),
    )
    .await;

    // Revoke A with erasure.
    let revoked_at = now_ms();
    let revoke = cw
        .append(
            &owner,
            &ckey,
            revoked_at,
            &Event::ConsentRevoked {
                consent_id: consent,
                erase_requested: true,
            },
        )
        .unwrap();
    ol.publish(topics::log_entry(&ctid, 1, 1), revoke).await;
    wait_event(&mut provider, &mut log, "revocation", |e| {
        matches!(e, ProviderEvent::Revoked { consent: c, erase_requested: true } if *c == consent)
    })
    .await;
    wait_event(
        &mut provider,
        &mut log,
        "erasure",
        |e| matches!(e, ProviderEvent::Erased { consent: c } if *c == consent),
    )
    .await;
    provider.flush(WAIT).await.unwrap();
    assert!(!data_file.exists(), "stored data must be deleted");
    let info = provider
        .consents()
        .into_iter()
        .find(|c| c.consent == consent.to_hex())
        .unwrap();
    assert_eq!(info.phase, ConsentPhase::Erased);
    assert!(!provider.has_active());
    let on_disk = p1consent_provider::read_state(&keys, provider_dir.path()).unwrap();
    assert!(
        on_disk
            .iter()
            .all(|c| c.channel.is_none() && c.phase == ConsentPhase::Erased)
    );

    // The ErasureConfirmed entry verifies as the owner reads it.
    let entry_prefix = format!("{}/log/{ctid}/", topics::PREFIX);
    spy.wait_until("erasure confirmation on the broker", |m| {
        m.iter()
            .any(|x| x.topic == topics::log_entry(&ctid, 3, 0) && !x.payload.is_empty())
    })
    .await;
    spy.wait_until("device's KeyRotated acknowledgement", |m| {
        m.iter()
            .filter(|x| x.topic.starts_with(&format!("{entry_prefix}2/")))
            .count()
            >= 2
    })
    .await;
    let mut entries: Vec<Message> = spy
        .messages()
        .into_iter()
        .filter(|m| m.topic.starts_with(&entry_prefix) && !m.payload.is_empty())
        .collect();
    entries.sort_by(|a, b| a.topic.cmp(&b.topic));
    entries.dedup_by(|a, b| a.topic == b.topic);
    let mut verifier = ThreadLog::new(
        ctid,
        root.thread_key(&ctid),
        Participants {
            owner: owner.public(),
            device: Some(device),
            provider: Some(keys.public()),
        },
    );
    for e in &entries {
        verifier.verify(&e.payload).unwrap();
    }
    let confirmed = verifier.entries().iter().any(|e| {
        e.role == Role::Provider
            && e.author == keys.public()
            && e.event
                == Event::ErasureConfirmed {
                    consent_id: consent,
                }
    });
    assert!(confirmed, "ErasureConfirmed by the provider verifies");
    let mut device_log = ThreadLog::new(
        dtid,
        root.thread_key(&dtid),
        Participants {
            owner: owner.public(),
            device: Some(device),
            provider: None,
        },
    );
    device_log.verify(&paired).unwrap();
    let state = p1consent_shared::consent::ConsentState::fold(
        device_log.entries().iter().chain(verifier.entries()),
        now_ms() / 1000,
    );
    assert!(state.consents[&consent].erasure_confirmed_at_ms.is_some());

    // Cryptographic cut-off, on captured messages: a reader built from the captured key
    // delivery opens everything up to the rotation that removed A and nothing sealed after
    // it (provider B keeps the channel alive).
    spy.wait_until("A's removal rotation and two records after it", |m| {
        let hs: Vec<_> = channel_records(m, &ch)
            .iter()
            .filter_map(|r| channel::peek(r).ok())
            .collect();
        let rotations: Vec<u64> = hs
            .iter()
            .filter(|h| h.kind == RecordKind::Rotation)
            .map(|h| h.seq)
            .collect();
        rotations.len() >= 2
            && hs
                .iter()
                .filter(|h| h.seq > rotations[rotations.len() - 1])
                .count()
                >= 2
    })
    .await;
    let msgs = spy.messages();
    let delivery = msgs
        .iter()
        .find(|m| {
            m.topic == topics::inbox(&keys.public().opaque_id(), &InboxItem::Key(consent))
                && !m.payload.is_empty()
        })
        .expect("captured key delivery")
        .payload
        .clone();
    let mut reader = ChannelReader::from_delivery(&delivery, &device, keys.kem()).unwrap();
    let start = reader.next_seq();
    let mut cut: Option<u64> = None;
    let mut opened_before = 0;
    let mut refused_after = 0;
    let mut seen = std::collections::BTreeSet::new();
    for r in channel_records(&msgs, &ch) {
        let h = channel::peek(&r).unwrap();
        if h.seq < start || !seen.insert(h.seq) {
            continue;
        }
        let res = if cut.is_none() {
            reader.open_accepting_gap(&r)
        } else {
            reader.open(&r)
        };
        match (cut, res) {
            (None, Ok(Opened::Data { .. })) | (None, Ok(Opened::Rotated { .. })) => {
                opened_before += 1
            }
            (None, Err(OpenError::NotAuthorised)) => {
                assert_eq!(h.kind, RecordKind::Rotation);
                cut = Some(h.seq);
            }
            (Some(_), Err(OpenError::NotAuthorised))
            | (Some(_), Err(OpenError::UnknownEpoch { .. })) => refused_after += 1,
            (c, res) => panic!("record {} (cut {c:?}): unexpected {res:?}", h.seq),
        }
    }
    let rotation_seq = cut.expect("a rotation left A out");
    assert!(opened_before >= 5);
    assert!(
        refused_after >= 2,
        "records sealed after the rotation exist"
    );
    // And the provider itself produced no reading sealed after the rotation.
    assert!(
        !log.iter()
            .any(|e| matches!(e, ProviderEvent::Reading { seq, .. } if *seq > rotation_seq))
    );
    // B follows the rotation that removed A and keeps reading.
    wait_event(
        &mut provider_b,
        &mut log_b,
        "B follows A's removal",
        |e| matches!(e, ProviderEvent::Rotated { consent: c, epoch: 2 } if *c == consent_b),
    )
    .await;
    wait_event(
        &mut provider_b,
        &mut log_b,
        "B reads after A's removal",
        |e| matches!(e, ProviderEvent::Reading { seq, .. } if *seq > rotation_seq),
    )
    .await;
    // The device cleared the retained key delivery.
    spy.wait_until("retained key delivery cleared", |m| {
        m.iter().any(|x| {
            x.topic == topics::inbox(&keys.public().opaque_id(), &InboxItem::Key(consent))
                && x.payload.is_empty()
        })
    })
    .await;

    // A restart after erasure: nothing comes back, no second confirmation.
    drop(provider);
    let mut provider =
        Provider::connect_with(keys.duplicate(), &url, provider_dir.path(), options()).unwrap();
    let mut log2 = Vec::new();
    wait_event(&mut provider, &mut log2, "connected", |e| {
        matches!(e, ProviderEvent::Connected)
    })
    .await;
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let ev = provider.next_event().await.unwrap();
            log2.push(ev);
        }
    })
    .await;
    assert!(quiet.is_err());
    assert!(
        !log2.iter().any(|e| matches!(
            e,
            ProviderEvent::Reading { .. }
                | ProviderEvent::KeyReceived { .. }
                | ProviderEvent::Revoked { .. }
                | ProviderEvent::Erased { .. }
        )),
        "{log2:#?}"
    );
    assert!(!data_file.exists());
}

/// The CLI's `listen` against the real agent: JSON lines per reading, and a clear message
/// and exit code 4 when the consent expires (by the provider's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_listen_prints_readings_and_exits_on_expiry() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let agent_dir = tempfile::tempdir().unwrap();
    let cli_dir = tempfile::tempdir().unwrap();
    let owner = SigningIdentity::generate();
    let root = OwnerRoot::from_identity(&owner);
    let (device_id, _agent_shutdown) = start_agent(&url, agent_dir.path(), &owner.public());
    let device = device_id.public();
    let mut ol = OwnerLink::connect(&url).await;
    let dtid = root.device_thread_id(&device);
    ol.open_thread(
        &owner,
        &root,
        dtid,
        &[(Role::Device, device_id.kem.public(), Some(&device))],
    )
    .await;
    let paired = LogWriter::new(dtid, Role::Owner)
        .append(
            &owner,
            &root.thread_key(&dtid),
            now_ms(),
            &Event::DevicePaired {
                device,
                device_kem: device_id.kem.public().clone(),
                label: "meter".into(),
            },
        )
        .unwrap();
    ol.publish(topics::log_entry(&dtid, 1, 0), paired).await;

    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    keys.save(
        &cli_dir.path().join("provider.key"),
        p1consent_provider::Protection::Unprotected,
    )
    .unwrap();
    let fields = FieldSet::empty().with(Field::PowerDelivered);
    let request = SignedRequest::from_link(
        &RequestBuilder::new("Acme", "dpo@acme.example")
            .purpose("Short trial")
            .fields(fields)
            .resolution(Resolution::Raw)
            .valid_for(600)
            .build(&keys)
            .unwrap()
            .to_link(),
        now_ms() / 1000,
    )
    .unwrap()
    .into_signed();
    let consent = request.consent_id();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_p1consent-provider"))
        .args([
            "--dir",
            cli_dir.path().to_str().unwrap(),
            "--insecure-no-passphrase",
            "listen",
            "--broker",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_task = tokio::task::spawn_blocking(move || std::io::read_to_string(stdout));
    let err_task = tokio::task::spawn_blocking(move || std::io::read_to_string(stderr));

    let expires_at = now_ms() / 1000 + 6;
    grant(
        &mut ol,
        &owner,
        &root,
        &request,
        &keys,
        GrantedDevice::Agent(&device_id),
        expires_at,
    )
    .await;

    let status =
        tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait())).await;
    let status = match status {
        Ok(s) => s.unwrap().unwrap(),
        Err(_) => {
            // Stop the process this test started, by its id.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!("listen did not end when the consent expired");
        }
    };
    let out = out_task.await.unwrap().unwrap();
    let err = err_task.await.unwrap().unwrap();
    assert_eq!(status.code(), Some(4), "stderr: {err}");
    assert!(err.contains("GRANTED"), "{err}");
    assert!(err.contains("EXPIRED"), "{err}");
    assert!(err.contains("consent expired"), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "no readings printed; stderr: {err}");
    for l in &lines {
        assert_eq!(l["consent"], consent.to_hex());
        assert!(l["payload"]["power_delivered_kw"].is_number(), "{l}");
        assert!(l["payload"].get("energy_delivered_total_kwh").is_none());
        assert!(l["timestamp_ms"].as_u64().unwrap() <= expires_at * 1000 + 1000);
    }
}

/// The stream of a consent starts at the first record the provider receives after its key
/// delivery: records the device sealed before the provider's channel subscription took effect
/// (never delivered: channel records are not retained) are no Gap. A record lost after that is.
/// The device here is hand-made (shared's `ChannelWriter`), so the test decides what is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_is_reported_inside_the_stream_not_before_it() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let provider_dir = tempfile::tempdir().unwrap();
    let owner = SigningIdentity::generate();
    let root = OwnerRoot::from_identity(&owner);
    let device = SigningIdentity::generate();
    let device_kem = p1consent_shared::crypto::KemSecretKey::generate(KemSuite::DEFAULT);
    let mut ol = OwnerLink::connect(&url).await;

    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let fields = FieldSet::empty().with(Field::PowerDelivered);
    let link = RequestBuilder::new("Acme Energy", "dpo@acme.example")
        .purpose("Live power")
        .fields(fields)
        .resolution(Resolution::Raw)
        .retention_days(7)
        .valid_for(3600)
        .build(&keys)
        .unwrap()
        .to_link();
    let request = SignedRequest::from_link(&link, now_ms() / 1000)
        .unwrap()
        .into_signed();
    let consent = request.consent_id();
    let mut provider =
        Provider::connect_with(keys.duplicate(), &url, provider_dir.path(), options()).unwrap();
    let mut log = Vec::new();
    wait_event(&mut provider, &mut log, "connected", |e| {
        matches!(e, ProviderEvent::Connected)
    })
    .await;

    // No agent here: only the provider's inbox gets the envelope.
    grant(
        &mut ol,
        &owner,
        &root,
        &request,
        &keys,
        GrantedDevice::Absent(device.public(), device_kem.public()),
        now_ms() / 1000 + 1800,
    )
    .await;
    wait_event(&mut provider, &mut log, "grant", |e| {
        matches!(e, ProviderEvent::Granted { .. })
    })
    .await;

    // The device delivers the key and seals two records before the provider has subscribed
    // (it subscribes when it handles the delivery, in next_event).
    let ch = OpaqueId::random();
    let mut w = channel::ChannelWriter::new(ch);
    let (delivery, _) = w
        .deliver(&device, now_ms(), consent, keys.kem_public())
        .unwrap();
    ol.publish(
        topics::inbox(&keys.public().opaque_id(), &InboxItem::Key(consent)),
        delivery,
    )
    .await;
    let payload = |kw: f64| {
        let t = p1consent_shared::dsmr::Telegram {
            power_delivered_kw: Some(kw),
            ..Default::default()
        };
        p1consent_shared::view::project(&t, fields, now_ms())
            .to_bytes()
            .unwrap()
    };
    for _ in 0..2 {
        let r = w.seal(&device, now_ms(), &payload(0.1)).unwrap();
        ol.publish_as(topics::channel(&ch), r, false).await;
    }
    wait_event(&mut provider, &mut log, "key", |e| {
        matches!(e, ProviderEvent::KeyReceived { .. })
    })
    .await;
    // Records until the provider's subscription is in place and one arrives.
    let first = loop {
        let r = w.seal(&device, now_ms(), &payload(0.2)).unwrap();
        ol.publish_as(topics::channel(&ch), r, false).await;
        let got = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                let ev = provider.next_event().await.expect("provider stream");
                log.push(ev.clone());
                if let ProviderEvent::Reading { seq, .. } = ev {
                    return seq;
                }
            }
        })
        .await;
        if let Ok(seq) = got {
            break seq;
        }
        assert!(w.next_seq() < 300, "no record arrived: {log:#?}");
    };
    assert!(
        first >= 2,
        "the first two records were sealed before the subscription"
    );
    // Then: one record published, one lost, one published.
    let sealed_before = w.next_seq();
    let lost = sealed_before + 1;
    for seq in sealed_before..sealed_before + 3 {
        let r = w.seal(&device, now_ms(), &payload(0.3)).unwrap();
        if seq != lost {
            ol.publish_as(topics::channel(&ch), r, false).await;
        }
    }
    let last = lost + 1;
    wait_event(
        &mut provider,
        &mut log,
        "the record after the lost one",
        |e| matches!(e, ProviderEvent::Reading { seq, .. } if *seq == last),
    )
    .await;
    let gaps: Vec<&ProviderEvent> = log
        .iter()
        .filter(|e| matches!(e, ProviderEvent::Gap { .. }))
        .collect();
    assert_eq!(
        gaps,
        [&ProviderEvent::Gap {
            consent,
            expected: lost,
            got: last
        }],
        "{log:#?}"
    );
    let seqs: Vec<u64> = log
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::Reading { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let want: Vec<u64> = (first..last).filter(|s| *s != lost).chain([last]).collect();
    assert_eq!(seqs, want, "{log:#?}");
}
