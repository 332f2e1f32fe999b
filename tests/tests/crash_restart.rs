//! Restart safety with real parts: the `pi-agent` binary as a child process killed with
//! SIGKILL, Debian's mosquitto stopped and started again, providers from the provider SDK,
//! and a spy that records every message on the broker to check the channel chain.
//!
//! What must hold after every crash or outage: the channel chain has every sequence number
//! once (republished copies are byte-identical, never a fork) and each record links to the
//! one before; a provider reads every record once, in order; a revoked provider can open
//! nothing sealed after its removal while the others keep reading.

mod common_process;

use std::time::Duration;

use common_process::{
    AgentProcess, Owner, ProviderTask, Spy, assert_consecutive, channel_records, open_as, signal,
    verify_chain,
};
use p1consent_provider::ProviderEvent;
use p1consent_shared::{
    channel::{self, RecordKind},
    consent::log::{EntryHeader, Event, Participants, ThreadLog},
    crypto::{OpaqueId, PublicId, SigningIdentity},
    mqtt::Message,
    topics::{self, InboxItem},
};
use p1consent_testkit::Mosquitto;

/// Index of the provider's first reading of `consent` (records sealed between the key
/// delivery and the provider's subscription are not retained: a Gap before it is honest).
fn first_reading(events: &[ProviderEvent], consent: &OpaqueId) -> usize {
    events
        .iter()
        .position(|e| matches!(e, ProviderEvent::Reading { consent: c, .. } if c == consent))
        .expect("a reading")
}

/// After the first reading: no gap, no rejection for this consent.
fn assert_clean_after_first(events: &[ProviderEvent], consent: &OpaqueId, what: &str) {
    let start = first_reading(events, consent);
    for e in &events[start..] {
        match e {
            ProviderEvent::Gap { consent: c, .. } if c == consent => {
                panic!("{what}: records lost: {e:?}; events: {events:#?}")
            }
            ProviderEvent::Rejected { .. } => {
                panic!("{what}: a message was rejected: {e:?}; events: {events:#?}")
            }
            _ => {}
        }
    }
}

fn key_channel(ev: &ProviderEvent) -> OpaqueId {
    match ev {
        ProviderEvent::KeyReceived { channel, .. } => *channel,
        other => panic!("not a key delivery: {other:?}"),
    }
}

/// The epochs named by the device's `KeyRotated` entries in a consent thread, from the
/// captured messages, each entry verified (signature, hash chain, decryption with the
/// owner's thread key). Stops at the first entry that does not verify yet (an earlier one
/// not captured yet).
fn device_rotation_acks(
    msgs: &[Message],
    owner: &Owner,
    thread: &OpaqueId,
    provider: PublicId,
) -> Vec<u32> {
    let mut log = ThreadLog::new(
        *thread,
        owner.root.thread_key(thread),
        Participants {
            owner: owner.id.public(),
            device: Some(owner.device),
            provider: Some(provider),
        },
    );
    let prefix = format!("{}/log/{}/", topics::PREFIX, thread);
    // Owner entries first, then the device's, each in seq order; retained copies collapse.
    let mut entries = std::collections::BTreeMap::new();
    for m in msgs
        .iter()
        .filter(|m| m.topic.starts_with(&prefix) && !m.payload.is_empty())
    {
        let h = EntryHeader::peek(&m.payload).expect("captured log entry parses");
        entries.insert((h.role as u8, h.seq), m.payload.clone());
    }
    let mut epochs = Vec::new();
    for bytes in entries.values() {
        match log.verify(bytes) {
            Ok(e) => {
                if let Event::KeyRotated { epoch, .. } = &e.event {
                    epochs.push(*epoch);
                }
            }
            Err(_) => break,
        }
    }
    epochs
}

/// Seq of the rotation record that starts `epoch` on the captured channel.
fn rotation_at_epoch(records: &[Vec<u8>], ch: &OpaqueId, epoch: u32) -> Option<u64> {
    records
        .iter()
        .filter_map(|r| channel::peek(r).ok())
        .find(|h| h.channel_id == *ch && h.kind == RecordKind::Rotation && h.epoch == epoch)
        .map(|h| h.seq)
}

fn rotation_seqs(records: &[Vec<u8>], ch: &OpaqueId) -> Vec<u64> {
    verify_chain(records, ch)
        .iter()
        .filter(|h| h.kind == RecordKind::Rotation)
        .map(|h| h.seq)
        .collect()
}

/// (a) SIGKILL while streaming, once with records sealed but not acknowledged (the broker
/// is frozen with SIGSTOP, so they sit in the outbox), then at a few arbitrary moments.
/// After each restart on the same state directory the outbox is published again and the
/// provider reads on without a gap or a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_streaming_loses_and_repeats_nothing() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let spy = Spy::start_persistent(&url, "spy-kill9").await;
    let dir = tempfile::tempdir().unwrap();
    let owner_id = SigningIdentity::generate();
    let (mut agent, device_id) = AgentProcess::prepare(dir.path(), &url, &owner_id.public(), 100);
    agent.start();
    let mut owner = Owner::pair(&url, owner_id, &device_id, "owner-kill9").await;
    let p = ProviderTask::start(&url, "provider-kill9").await;
    let g = owner.grant(&p.keys, "Acme Energy").await;
    let ch = key_channel(
        &p.wait_for("key delivery", |e| {
            matches!(e, ProviderEvent::KeyReceived { .. })
        })
        .await,
    );
    p.wait_for("a first reading", |e| {
        matches!(e, ProviderEvent::Reading { .. })
    })
    .await;
    let first = p.reading_seqs(&g.consent)[0];
    p.wait_readings_past(&g.consent, first + 5, "readings before the crash")
        .await;
    agent.assert_running();

    // Round 1: freeze the broker so nothing the agent publishes is acknowledged, let it
    // seal a few more records, kill it, thaw the broker.
    let broker_pid = broker.pid().expect("broker runs");
    signal(broker_pid, "STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.kill9();
    signal(broker_pid, "CONT");
    let pending: Vec<u64> = agent
        .outbox()
        .into_iter()
        .filter(|(_, m)| m.topic == topics::channel(&ch))
        .map(|(_, m)| channel::peek(&m.payload).expect("outbox record parses").seq)
        .collect();
    assert!(
        !pending.is_empty(),
        "the crash left no sealed-but-unacknowledged record; agent log:\n{}",
        agent.log()
    );
    assert!(pending.windows(2).all(|w| w[1] == w[0] + 1), "{pending:?}");
    let last_pending = *pending.last().unwrap();
    agent.start();
    p.wait_readings_past(&g.consent, last_pending + 3, "readings after restart 1")
        .await;
    agent.assert_running();

    // Rounds 2..: kill at arbitrary moments of the stream.
    for delay_ms in [0u64, 130, 370, 55] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        agent.kill9();
        let last = p.reading_seqs(&g.consent).last().copied().unwrap_or(0);
        agent.start();
        p.wait_readings_past(&g.consent, last + 5, "readings after a restart")
            .await;
        agent.assert_running();
    }
    assert_eq!(agent.starts, 6);

    // Everything the provider read is in order, once, without holes (no rotation happened:
    // one reader all along).
    let events = p.events();
    assert_clean_after_first(&events, &g.consent, "kill -9");
    let seqs: Vec<u64> = p
        .reading_seqs(&g.consent)
        .into_iter()
        .skip_while(|s| *s < first)
        .collect();
    assert_consecutive(&seqs, &[], "kill -9");
    for s in &pending {
        assert!(
            seqs.contains(s),
            "record {s} was in the outbox at the crash and never reached the provider: {seqs:?}"
        );
    }

    // The chain on the broker: complete, linked, no forks, and it covers what was read.
    let top = *seqs.last().unwrap();
    spy.wait_until("the spy saw what the provider read", |m| {
        common_process::max_seq(&channel_records(m, &ch)).is_some_and(|s| s >= top)
    })
    .await;
    let headers = verify_chain(&spy.channel_records(&ch), &ch);
    assert!(headers.len() as u64 > top);
    assert!(
        headers[..=top as usize]
            .iter()
            .all(|h| h.kind == RecordKind::Data),
        "one reader all along: no rotation expected"
    );
}

/// (b) SIGKILL right after the owner revoked a consent, at several delays (before the
/// agent saw the revocation, while it rotates, after). After the restart the rotation is
/// there, the revoked provider can open nothing sealed after it, the others read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_rotation_completes_it() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let spy = Spy::start_persistent(&url, "spy-rotation").await;
    let dir = tempfile::tempdir().unwrap();
    let owner_id = SigningIdentity::generate();
    let (mut agent, device_id) = AgentProcess::prepare(dir.path(), &url, &owner_id.public(), 100);
    let device = device_id.public();
    agent.start();
    let mut owner = Owner::pair(&url, owner_id, &device_id, "owner-rotation").await;

    // A keeper that stays, and one provider to revoke per kill delay; all share one view.
    let delays = [0u64, 40, 150, 600];
    let keeper = ProviderTask::start(&url, "keeper").await;
    let gk = owner.grant(&keeper.keys, "Keeper").await;
    let ch = key_channel(
        &keeper
            .wait_for("keeper's key", |e| {
                matches!(e, ProviderEvent::KeyReceived { .. })
            })
            .await,
    );
    let mut revoked = Vec::new();
    for (i, _) in delays.iter().enumerate() {
        let p = ProviderTask::start(&url, &format!("revoked-{i}")).await;
        let g = owner.grant(&p.keys, &format!("Provider {i}")).await;
        let got = key_channel(
            &p.wait_for("key", |e| matches!(e, ProviderEvent::KeyReceived { .. }))
                .await,
        );
        assert_eq!(got, ch, "same view, same channel");
        p.wait_for("a reading", |e| matches!(e, ProviderEvent::Reading { .. }))
            .await;
        revoked.push((p, g));
    }
    let keeper_first = keeper.reading_seqs(&gk.consent)[0];
    agent.assert_running();

    // The epoch of the rotation that removed each revoked provider, from the device's ack.
    let mut acked_epochs = Vec::new();
    for (i, delay_ms) in delays.iter().enumerate() {
        let (p, g) = &mut revoked[i];
        owner.revoke(g).await;
        tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
        agent.kill9();
        agent.start();
        let c = g.consent;
        // The provider learns of the revocation from the consent thread and drops its
        // reader; the cryptographic cut-off is checked on the captured records below.
        p.wait_for(
            "revocation",
            move |e| matches!(e, ProviderEvent::Revoked { consent, .. } if *consent == c),
        )
        .await;
        // The device acknowledged the removal rotation in the consent thread: wait for that
        // KeyRotated entry itself (its KeyDelivered is there since the grant).
        let provider = p.keys.public();
        spy.wait_until("the device's KeyRotated acknowledgement", |m| {
            !device_rotation_acks(m, &owner, &g.thread, provider).is_empty()
        })
        .await;
        let acks = device_rotation_acks(&spy.messages(), &owner, &g.thread, provider);
        assert_eq!(
            acks.len(),
            1,
            "provider {i}: one removal, one ack: {acks:?}"
        );
        let epoch = acks[0];
        // The rotation it names is on the channel, and the keeper reads records sealed
        // after it.
        spy.wait_until("the acknowledged rotation on the channel", |m| {
            rotation_at_epoch(&channel_records(m, &ch), &ch, epoch).is_some()
        })
        .await;
        let rotation = rotation_at_epoch(&spy.channel_records(&ch), &ch, epoch)
            .expect("the acknowledged rotation");
        keeper
            .wait_readings_past(&gk.consent, rotation, "keeper reads after the rotation")
            .await;
        acked_epochs.push(epoch);
        agent.assert_running();
    }

    // Let a few more records be sealed, then check everything on captured messages.
    let last = *keeper.reading_seqs(&gk.consent).last().unwrap();
    keeper
        .wait_readings_past(&gk.consent, last + 3, "keeper reads at the end")
        .await;
    let top = *keeper.reading_seqs(&gk.consent).last().unwrap();
    spy.wait_until("the spy saw what the keeper read", |m| {
        common_process::max_seq(&channel_records(m, &ch)).is_some_and(|s| s >= top)
    })
    .await;
    let msgs = spy.messages();
    let records = channel_records(&msgs, &ch);
    let rotations = rotation_seqs(&records, &ch);
    let mut cuts = Vec::new();
    for (i, (p, g)) in revoked.iter().enumerate() {
        let delivery = msgs
            .iter()
            .find(|m| {
                m.topic == topics::inbox(&p.keys.public().opaque_id(), &InboxItem::Key(g.consent))
                    && !m.payload.is_empty()
            })
            .expect("captured key delivery")
            .payload
            .clone();
        let cut = open_as(&delivery, &device, &p.keys, &records);
        let at = cut
            .cut_at
            .unwrap_or_else(|| panic!("provider {i}: no rotation left it out"));
        assert!(cut.opened >= 1, "provider {i} opened records before");
        assert!(
            cut.refused_after >= 3,
            "provider {i}: records sealed after its removal exist and stay closed"
        );
        // The provider itself read nothing sealed after its removal.
        assert!(
            !p.reading_seqs(&g.consent).iter().any(|s| *s > at),
            "provider {i} read after its removal"
        );
        assert!(rotations.contains(&at));
        assert_eq!(
            rotation_at_epoch(&records, &ch, acked_epochs[i]),
            Some(at),
            "provider {i}: cut off by the rotation the device acknowledged"
        );
        cuts.push(at);
        // The retained key delivery was cleared.
        assert!(msgs.iter().any(|m| m.topic
            == topics::inbox(&p.keys.public().opaque_id(), &InboxItem::Key(g.consent))
            && m.payload.is_empty()));
    }
    // One removal rotation per revocation. Their order is not checked: revocations still
    // pending at a restart may be handled in either order.
    let mut distinct = cuts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        cuts.len(),
        "one removal rotation per revocation: {cuts:?}"
    );
    // The keeper read every data record from its first on, once, in order.
    let events = keeper.events();
    assert_clean_after_first(&events, &gk.consent, "keeper");
    let seqs: Vec<u64> = keeper
        .reading_seqs(&gk.consent)
        .into_iter()
        .skip_while(|s| *s < keeper_first)
        .collect();
    assert_consecutive(&seqs, &rotations, "keeper");
    let epochs = events
        .iter()
        .filter(|e| matches!(e, ProviderEvent::Rotated { consent, .. } if *consent == gk.consent))
        .count();
    assert!(
        epochs >= delays.len() * 2,
        "keeper followed every rotation (one per added and one per removed reader): {epochs}"
    );
}

/// (c) The broker stops cleanly (its persistence file kept) and starts again on the same
/// port while the agent streams, twice: the agent reconnects by itself and the provider
/// reads every record once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_while_streaming_loses_and_repeats_nothing() {
    let mut broker = Mosquitto::start();
    let url = broker.url();
    let spy = Spy::start_persistent(&url, "spy-broker").await;
    let dir = tempfile::tempdir().unwrap();
    let owner_id = SigningIdentity::generate();
    let (mut agent, device_id) = AgentProcess::prepare(dir.path(), &url, &owner_id.public(), 100);
    agent.start();
    let mut owner = Owner::pair(&url, owner_id, &device_id, "owner-broker").await;
    let p = ProviderTask::start(&url, "provider-broker").await;
    let g = owner.grant(&p.keys, "Acme Energy").await;
    let ch = key_channel(
        &p.wait_for("key delivery", |e| {
            matches!(e, ProviderEvent::KeyReceived { .. })
        })
        .await,
    );
    p.wait_for("a first reading", |e| {
        matches!(e, ProviderEvent::Reading { .. })
    })
    .await;
    let first = p.reading_seqs(&g.consent)[0];
    p.wait_readings_past(&g.consent, first + 5, "readings before the outage")
        .await;

    for outage_ms in [2000u64, 5000] {
        broker.stop();
        tokio::time::sleep(Duration::from_millis(outage_ms)).await;
        // The agent kept sealing into its outbox meanwhile.
        agent.assert_running();
        broker.start_again();
        let last = p.reading_seqs(&g.consent).last().copied().unwrap_or(0);
        // ~10 records per second were sealed during the outage; they all arrive.
        let expected = last + outage_ms / 100 / 2;
        p.wait_readings_past(&g.consent, expected, "readings after the broker restart")
            .await;
    }
    agent.assert_running();
    let log = agent.log();
    assert!(log.contains("lost the broker"), "{log}");
    assert!(log.matches("connected to the broker").count() >= 3, "{log}");

    let events = p.events();
    assert_clean_after_first(&events, &g.consent, "broker restart");
    let seqs: Vec<u64> = p
        .reading_seqs(&g.consent)
        .into_iter()
        .skip_while(|s| *s < first)
        .collect();
    assert_consecutive(&seqs, &[], "broker restart");
    let top = *seqs.last().unwrap();
    spy.wait_until("the spy saw what the provider read", |m| {
        common_process::max_seq(&channel_records(m, &ch)).is_some_and(|s| s >= top)
    })
    .await;
    let headers = verify_chain(&spy.channel_records(&ch), &ch);
    assert!(headers.len() as u64 > top);
}

/// (d) A source faster than the broker: the capture replayed at full speed while the broker
/// is frozen (SIGSTOP), so nothing is acknowledged. The agent stops reading the replay when
/// its outbox is full (back-pressure) instead of sealing into it without bound; after the
/// broker thaws, the provider reads on without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_replay_into_a_frozen_broker_keeps_the_outbox_bounded() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let owner_id = SigningIdentity::generate();
    let (mut agent, device_id) = AgentProcess::prepare(dir.path(), &url, &owner_id.public(), 100);
    agent.start();
    let mut owner = Owner::pair(&url, owner_id, &device_id, "owner-bound").await;
    let p = ProviderTask::start(&url, "provider-bound").await;
    let g = owner.grant(&p.keys, "Acme Energy").await;
    p.wait_for("a first reading", |e| {
        matches!(e, ProviderEvent::Reading { .. })
    })
    .await;
    let first = p.reading_seqs(&g.consent)[0];
    agent.kill9();
    let capture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt");
    agent.use_fast_replay_loop(&capture, &url);
    agent.start();
    let last = p.reading_seqs(&g.consent).last().copied().unwrap_or(0);
    p.wait_readings_past(&g.consent, last + 50, "replayed readings")
        .await;

    let broker_pid = broker.pid().expect("broker runs");
    signal(broker_pid, "STOP");
    // One view, one record per telegram: the outbox may pass the mark by one batch.
    let bound = pi_agent::agent::OUTBOX_HIGH + pi_agent::agent::TELEGRAM_BATCH as u64;
    let status_path = agent.state_dir.join("status.json");
    let read_status = || -> Option<pi_agent::status::Status> {
        serde_json::from_slice(&std::fs::read(&status_path).ok()?).ok()
    };
    // Wait until the agent stopped sealing (two status writes with the same count and the
    // outbox at the mark), failing as soon as the outbox grows past the bound.
    let deadline = tokio::time::Instant::now() + common_process::WAIT;
    let mut previous: Option<(u64, u64)> = None;
    loop {
        if let Some(s) = read_status() {
            assert!(
                s.outbox_depth <= bound,
                "outbox grew to {} while the broker was frozen (bound {bound})",
                s.outbox_depth
            );
            if s.outbox_depth >= pi_agent::agent::OUTBOX_HIGH
                && previous.is_some_and(|(at, sealed)| at != s.updated_ms && sealed == s.sealed)
            {
                break;
            }
            previous = Some((s.updated_ms, s.sealed));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not stop at a full outbox; status: {:?}; log:\n{}",
            read_status(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    agent.assert_running();
    // The agent's own database agrees (read after a kill: it is not shared while running).
    agent.kill9();
    let depth = agent.outbox_depth();
    assert!(
        (pi_agent::agent::OUTBOX_HIGH..=bound).contains(&depth),
        "outbox depth {depth}"
    );
    let pending_top = agent
        .outbox()
        .into_iter()
        .filter_map(|(_, m)| channel::peek(&m.payload).ok())
        .map(|h| h.seq)
        .max()
        .expect("sealed records wait in the outbox");
    signal(broker_pid, "CONT");
    agent.start();
    p.wait_readings_past(&g.consent, pending_top, "readings after the thaw")
        .await;
    agent.assert_running();
    let events = p.events();
    assert_clean_after_first(&events, &g.consent, "frozen broker");
    let seqs: Vec<u64> = p
        .reading_seqs(&g.consent)
        .into_iter()
        .skip_while(|s| *s < first)
        .collect();
    assert_consecutive(&seqs, &[], "frozen broker");
}

/// Not a test: the figures of docs/PERFORMANCE.md ("Agent"). Run by
/// `scripts/measure-agent.sh` with the release binary in `P1C_AGENT_BIN`:
/// 1. the agent at 1 Hz (simulator) with one grant for `P1C_MEASURE_SECS` (default 180):
///    resident memory (VmRSS sampled, VmHWM) and CPU (utime + stime);
/// 2. the agent replaying the 1 Hz capture in a loop as fast as it can, with the same grant:
///    channel records per second arriving at the broker over `P1C_MEASURE_REPLAY_SECS`
///    (default 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; scripts/measure-agent.sh runs it"]
async fn measure_agent() {
    let secs: u64 = std::env::var("P1C_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let replay_secs: u64 = std::env::var("P1C_MEASURE_REPLAY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let broker = Mosquitto::start();
    let url = broker.url();
    let spy = Spy::start_persistent(&url, "spy-measure").await;
    let dir = tempfile::tempdir().unwrap();
    let owner_id = SigningIdentity::generate();
    let (mut agent, device_id) = AgentProcess::prepare(dir.path(), &url, &owner_id.public(), 1000);
    agent.start();
    let mut owner = Owner::pair(&url, owner_id, &device_id, "owner-measure").await;
    let p = ProviderTask::start(&url, "provider-measure").await;
    let g = owner.grant(&p.keys, "Acme Energy").await;
    let ch = key_channel(
        &p.wait_for("key delivery", |e| {
            matches!(e, ProviderEvent::KeyReceived { .. })
        })
        .await,
    );
    p.wait_for("a first reading", |e| {
        matches!(e, ProviderEvent::Reading { .. })
    })
    .await;

    // 1. Steady state at 1 Hz.
    let pid = agent.pid();
    let hz = common_process::clock_ticks_per_s();
    let readings0 = p.reading_seqs(&g.consent).len();
    let cpu0 = common_process::cpu_ticks(pid).expect("/proc stat");
    let t0 = std::time::Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some((r, _)) = common_process::memory_kb(pid) {
            rss.push(r);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let cpu1 = common_process::cpu_ticks(pid).expect("/proc stat");
    let elapsed = t0.elapsed().as_secs_f64();
    let (rss_end, hwm) = common_process::memory_kb(pid).expect("/proc status");
    let readings = p.reading_seqs(&g.consent).len() - readings0;
    let cpu_s = (cpu1 - cpu0) as f64 / hz as f64;
    println!(
        "MEASURE 1Hz: {elapsed:.0} s, {readings} readings at the provider, \
         VmRSS min/max/end {}/{}/{rss_end} kB, VmHWM {hwm} kB, \
         CPU {cpu_s:.2} s = {:.3} % of one core",
        rss.iter().min().copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
        100.0 * cpu_s / elapsed
    );

    // 2. Full speed: the capture replayed in a loop into the same channel.
    agent.kill9();
    let capture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt");
    agent.use_fast_replay_loop(&capture, &url);
    let before = spy.max_channel_seq(&ch).unwrap_or(0);
    // The provider (a debug build in this harness) would compete for the CPU.
    drop(p);
    agent.start();
    let pid = agent.pid();
    // Start the clock at the first new record, stop it after replay_secs.
    let deadline = std::time::Instant::now() + common_process::WAIT;
    while spy.max_channel_seq(&ch).unwrap_or(0) <= before + 10 {
        assert!(std::time::Instant::now() < deadline, "no replayed records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s0 = spy.max_channel_seq(&ch).unwrap_or(0);
    let cpu0 = common_process::cpu_ticks(pid).expect("/proc stat");
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(replay_secs)).await;
    let s1 = spy.max_channel_seq(&ch).unwrap_or(0);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = common_process::cpu_ticks(pid).expect("/proc stat");
    let (_, hwm) = common_process::memory_kb(pid).expect("/proc status");
    agent.assert_running();
    println!(
        "MEASURE replay: {} records in {elapsed:.1} s at the broker = {:.0} telegrams/s, \
         agent CPU {:.0} % of one core, VmHWM {hwm} kB",
        s1 - s0,
        (s1 - s0) as f64 / elapsed,
        100.0 * (cpu1 - cpu0) as f64 / hz as f64 / elapsed
    );
    // The chain stays intact at full speed.
    verify_chain(&spy.channel_records(&ch), &ch);
}
