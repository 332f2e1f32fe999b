//! Replay source: capture files in, exact telegrams out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p1consent_shared::dsmr::frame_all;
use pi_agent::source::{
    CancellationToken, RawTelegram, ReplayConfig, ReplayPace, ReplaySource, SourceError,
    SourceStatus, StopReason, pace_delay, telegram_time_s,
};
use tokio::sync::mpsc;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn capture() -> PathBuf {
    repo_file("shared/tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p1-source-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Good frames of `data` (CRC valid or absent), as the source should emit them.
fn expected_frames(data: &[u8]) -> Vec<Vec<u8>> {
    frame_all(data)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|f| f.verify_crc().is_ok())
        .map(|f| f.bytes().to_vec())
        .collect()
}

async fn run_to_end(
    cfg: ReplayConfig,
) -> (
    Result<StopReason, SourceError>,
    Vec<RawTelegram>,
    SourceStatus,
) {
    let (tx, mut rx) = mpsc::channel(16);
    let (st_tx, st_rx) = SourceStatus::channel();
    let task = tokio::spawn(ReplaySource::new(cfg).run(tx, st_tx, CancellationToken::new()));
    let mut got = Vec::new();
    while let Some(t) = rx.recv().await {
        got.push(t);
    }
    let r = task.await.unwrap();
    let st = st_rx.borrow().clone();
    (r, got, st)
}

#[tokio::test]
async fn fast_replay_emits_all_566_capture_telegrams_in_order() {
    let data = std::fs::read(capture()).unwrap();
    let expected = expected_frames(&data);
    assert_eq!(expected.len(), 566);
    let (r, got, st) = run_to_end(ReplayConfig::new(capture())).await;
    assert_eq!(r.unwrap(), StopReason::EndOfInput);
    assert_eq!(got.len(), 566);
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(&g.bytes, e);
        assert!(g.received_at_ms > 0);
    }
    assert_eq!(st.telegrams, 566);
    assert_eq!(st.crc_errors, 0);
    // The capture starts mid-telegram: that tail is one framing error.
    assert_eq!(st.framing_errors, 1);
    assert!(!st.connected);
    assert!(st.last_telegram_at_ms.is_some());
    // Recorded pace: the capture is 1 Hz with one missed second (a 2 s gap).
    let times: Vec<_> = got.iter().map(|t| telegram_time_s(&t.bytes)).collect();
    let delays: Vec<_> = times.windows(2).map(|w| pace_delay(w[0], w[1])).collect();
    assert_eq!(delays.len(), 565);
    assert_eq!(
        delays
            .iter()
            .filter(|d| **d == Duration::from_secs(2))
            .count(),
        1
    );
    assert_eq!(delays.iter().sum::<Duration>(), Duration::from_secs(566));
}

#[tokio::test]
async fn bad_crc_is_dropped_and_counted() {
    let data = std::fs::read(capture()).unwrap();
    let frames = expected_frames(&data);
    let mut bad = frames[1].clone();
    // Change a digit of the power reading: the CRC no longer matches.
    let pos = bad.windows(10).position(|w| w == b"1-0:1.7.0(").unwrap() + 11;
    bad[pos] = if bad[pos] == b'9' { b'8' } else { b'9' };
    let mut file = Vec::new();
    file.extend_from_slice(&frames[0]);
    file.extend_from_slice(&bad);
    file.extend_from_slice(b"\x00\xff garbage \xfe\r\n");
    file.extend_from_slice(&frames[2]);
    file.extend_from_slice(&frames[3][..200]); // cut off at end of file
    let path = scratch("bad-crc.txt");
    std::fs::write(&path, &file).unwrap();
    let (r, got, st) = run_to_end(ReplayConfig::new(&path)).await;
    assert_eq!(r.unwrap(), StopReason::EndOfInput);
    let got: Vec<_> = got.into_iter().map(|t| t.bytes).collect();
    assert_eq!(got, vec![frames[0].clone(), frames[2].clone()]);
    assert_eq!(st.crc_errors, 1);
    assert_eq!(st.framing_errors, 2); // the garbage and the unterminated tail
    assert!(st.last_error.is_some());
}

#[tokio::test]
async fn looping_replays_again_until_receiver_dropped() {
    let data = std::fs::read(capture()).unwrap();
    let frames = expected_frames(&data);
    let path = scratch("three.txt");
    std::fs::write(&path, frames[..3].concat()).unwrap();
    let cfg = ReplayConfig {
        path: path.clone(),
        pace: ReplayPace::AsFastAsPossible,
        looping: true,
    };
    let (tx, mut rx) = mpsc::channel(1);
    let (st_tx, _st_rx) = SourceStatus::channel();
    let task = tokio::spawn(ReplaySource::new(cfg).run(tx, st_tx, CancellationToken::new()));
    for i in 0..8 {
        let t = rx.recv().await.unwrap();
        assert_eq!(t.bytes, frames[i % 3], "telegram {i}");
    }
    drop(rx);
    assert_eq!(task.await.unwrap().unwrap(), StopReason::ReceiverDropped);

    // A file with nothing playable does not loop forever.
    let empty = scratch("garbage.txt");
    std::fs::write(&empty, b"no telegram here\r\n!!!!").unwrap();
    let cfg = ReplayConfig {
        path: empty,
        pace: ReplayPace::RecordedPace,
        looping: true,
    };
    let (r, got, st) = run_to_end(cfg).await;
    assert_eq!(r.unwrap(), StopReason::EndOfInput);
    assert!(got.is_empty());
    assert!(st.last_error.is_some());
}

#[tokio::test]
async fn cancel_stops_a_paced_replay() {
    let cfg = ReplayConfig {
        path: capture(),
        pace: ReplayPace::RecordedPace,
        looping: true,
    };
    let (tx, mut rx) = mpsc::channel(4);
    let (st_tx, _st_rx) = SourceStatus::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(ReplaySource::new(cfg).run(tx, st_tx, cancel.clone()));
    assert!(rx.recv().await.is_some());
    cancel.cancel();
    assert_eq!(task.await.unwrap().unwrap(), StopReason::Cancelled);
}

#[tokio::test]
async fn missing_file_is_an_error() {
    let (r, got, st) = run_to_end(ReplayConfig::new(scratch("does-not-exist.txt"))).await;
    assert!(matches!(r, Err(SourceError::File { .. })));
    assert!(got.is_empty());
    assert!(st.last_error.is_some());
}

#[test]
fn telegram_time_uses_the_dst_flag() {
    let data = std::fs::read(capture()).unwrap();
    let frames = expected_frames(&data);
    // First full telegram: 0-0:1.0.0(190324150519W) = 2019-03-24 14:05:19 UTC.
    assert_eq!(telegram_time_s(&frames[0]), Some(1_553_436_319));
    // DSMR 2.2 has no timestamp.
    let d22 = std::fs::read(repo_file(
        "shared/tests/data/p1-samples/dsmr22_iskra-mt382_dsmrparser-example.txt",
    ))
    .unwrap();
    assert_eq!(telegram_time_s(&d22), None);
    // Clock not set (placeholder year 2000) counts as absent.
    let unset = b"/ISK5\\2M550T-1012\r\n\r\n0-0:1.0.0(000101010000W)\r\n!\r\n";
    assert_eq!(telegram_time_s(unset), None);
    assert_eq!(telegram_time_s(b"\xff\xfe garbage"), None);
}

#[test]
fn pace_delay_rules() {
    let s = Duration::from_secs;
    assert_eq!(pace_delay(Some(100), Some(101)), s(1));
    assert_eq!(pace_delay(Some(100), Some(110)), s(10));
    assert_eq!(pace_delay(Some(100), Some(105)), s(5));
    // Capped at 10 s.
    assert_eq!(pace_delay(Some(100), Some(100_000)), s(10));
    // Fallback 1 s: unknown, equal or backwards times (e.g. loop wrap-around).
    assert_eq!(pace_delay(None, Some(100)), s(1));
    assert_eq!(pace_delay(Some(100), None), s(1));
    assert_eq!(pace_delay(None, None), s(1));
    assert_eq!(pace_delay(Some(100), Some(100)), s(1));
    assert_eq!(pace_delay(Some(200), Some(100)), s(1));
    assert_eq!(pace_delay(Some(i64::MIN), Some(i64::MAX)), s(10));
}
