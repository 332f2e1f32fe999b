//! Serial source through a real virtual serial line: a socat pty pair.
//!
//! The test writes P1 bytes into one end (`a`), the source reads the other (`b`). socat must be
//! installed (`apt-get install socat`); without it these tests fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use p1consent_shared::dsmr::frame_all;
use pi_agent::source::{
    CancellationToken, RawTelegram, SerialConfig, SerialMode, SerialSource, SourceStatus,
    StopReason,
};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(20);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Good frames of the 1 Hz capture and the raw bytes up to the end of frame `n`.
fn capture_frames() -> (Vec<u8>, Vec<Vec<u8>>) {
    let data = std::fs::read(repo_file(
        "shared/tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt",
    ))
    .unwrap();
    let frames = frame_all(&data)
        .into_iter()
        .filter_map(Result::ok)
        .map(|f| f.bytes().to_vec())
        .collect();
    (data, frames)
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p1-source-serial-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A socat pty pair with stable link paths.
struct Pty {
    child: Child,
    a: PathBuf,
    b: PathBuf,
}

impl Pty {
    async fn start(dir: &Path) -> Pty {
        let a = dir.join("a");
        let b = dir.join("b");
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run socat ({e}): install it (apt-get install socat) to run the serial tests")
            });
        let deadline = tokio::time::Instant::now() + WAIT;
        while !(a.exists() && b.exists()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "socat did not create {a:?} and {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Pty { child, a, b }
    }

    /// Open the writing end; keep it open for the pair's lifetime (socat ends when it closes).
    async fn writer(&self) -> tokio::fs::File {
        tokio::fs::OpenOptions::new()
            .write(true)
            .open(&self.a)
            .await
            .unwrap()
    }

    /// Unplug: stop socat (SIGTERM, so it removes its links) and wait for it.
    async fn unplug(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

async fn write_chunked(w: &mut tokio::fs::File, data: &[u8], chunk: usize) {
    for c in data.chunks(chunk) {
        w.write_all(c).await.unwrap();
        w.flush().await.unwrap();
    }
}

async fn recv(rx: &mut mpsc::Receiver<RawTelegram>) -> RawTelegram {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a telegram within the timeout")
        .expect("source still running")
}

async fn wait_status(
    rx: &mut watch::Receiver<SourceStatus>,
    what: &str,
    f: impl Fn(&SourceStatus) -> bool,
) {
    let ok = tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(ok, "status never became {what}: {:?}", rx.borrow().clone());
}

fn fast_config(path: &Path, mode: SerialMode) -> SerialConfig {
    let mut cfg = SerialConfig::new(path, mode);
    cfg.backoff_initial = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(400);
    cfg.probe_window = Duration::from_millis(400);
    cfg
}

#[tokio::test]
async fn emits_exactly_the_telegrams_written_in_small_chunks() {
    let dir = tmpdir("exact");
    let pty = Pty::start(&dir).await;
    let (data, frames) = capture_frames();
    let (tx, mut rx) = mpsc::channel(64);
    let (st_tx, mut st_rx) = SourceStatus::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        SerialSource::new(fast_config(&pty.b, SerialMode::Dsmr45)).run(tx, st_tx, cancel.clone()),
    );
    wait_status(&mut st_rx, "connected", |s| s.connected).await;
    let mut w = pty.writer().await;

    // The capture from its very first byte (it starts mid-telegram) through telegram 40.
    let n = 40;
    let end = data
        .windows(frames[n - 1].len())
        .position(|win| win == frames[n - 1].as_slice())
        .unwrap()
        + frames[n - 1].len();
    let writer = tokio::spawn(async move {
        write_chunked(&mut w, &data[..end], 61).await;
        w
    });
    for (i, want) in frames.iter().take(n).enumerate() {
        let got = recv(&mut rx).await;
        assert_eq!(&got.bytes, want, "telegram {i}");
    }
    let _w = writer.await.unwrap();
    let st = st_rx.borrow().clone();
    assert_eq!(st.telegrams, n as u64);
    assert_eq!(st.crc_errors, 0);
    assert_eq!(st.framing_errors, 1, "the leading partial telegram");
    assert!(st.connected);
    assert!(st.detail.as_deref().unwrap().contains("115200 8N1"));

    cancel.cancel();
    assert_eq!(task.await.unwrap(), StopReason::Cancelled);
    assert!(!st_rx.borrow().connected);
    pty.unplug().await;
}

#[tokio::test]
async fn reconnects_after_unplug_and_replug() {
    let dir = tmpdir("replug");
    let pty = Pty::start(&dir).await;
    let b = pty.b.clone();
    let (_, frames) = capture_frames();
    let (tx, mut rx) = mpsc::channel(64);
    let (st_tx, mut st_rx) = SourceStatus::channel();
    let task = tokio::spawn(SerialSource::new(fast_config(&b, SerialMode::Dsmr45)).run(
        tx,
        st_tx,
        CancellationToken::new(),
    ));
    wait_status(&mut st_rx, "connected", |s| s.connected).await;
    let mut w = pty.writer().await;
    write_chunked(&mut w, &frames[..5].concat(), 100).await;
    for want in &frames[..5] {
        assert_eq!(&recv(&mut rx).await.bytes, want);
    }

    // Pull the cable.
    drop(w);
    pty.unplug().await;
    wait_status(&mut st_rx, "disconnected", |s| !s.connected).await;
    assert!(st_rx.borrow().last_error.is_some());
    // The source keeps retrying while the device is gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!st_rx.borrow().connected);

    // Plug it back in: the same paths reappear, the source reconnects by itself.
    let pty = Pty::start(&dir).await;
    wait_status(&mut st_rx, "connected again", |s| s.connected).await;
    let mut w = pty.writer().await;
    write_chunked(&mut w, &frames[5..10].concat(), 100).await;
    for want in &frames[5..10] {
        assert_eq!(&recv(&mut rx).await.bytes, want);
    }
    assert_eq!(st_rx.borrow().telegrams, 10);

    // Dropping the receiver stops the source, even while the line is quiet.
    drop(rx);
    let reason = tokio::time::timeout(WAIT, task)
        .await
        .expect("source stops after the receiver is dropped")
        .unwrap();
    assert_eq!(reason, StopReason::ReceiverDropped);
    drop(w);
    pty.unplug().await;
}

/// DSMR 2.2 sample bytes with the parity bit set on every byte, as a 7E1 line delivers them
/// to an 8-bit reader.
fn dsmr22_with_parity_bits() -> (Vec<u8>, Vec<Vec<u8>>) {
    let data = std::fs::read(repo_file(
        "shared/tests/data/p1-samples/dsmr22_iskra-mt382_dsmrparser-example.txt",
    ))
    .unwrap();
    let frames: Vec<Vec<u8>> = frame_all(&data)
        .into_iter()
        .filter_map(Result::ok)
        .map(|f| f.bytes().to_vec())
        .collect();
    assert_eq!(frames.len(), 1);
    assert!(frames[0].contains(&b'!'));
    let high: Vec<u8> = frames[0].iter().map(|b| b | 0x80).collect();
    (high, frames)
}

#[tokio::test]
async fn dsmr22_mode_masks_the_parity_bit() {
    let dir = tmpdir("dsmr22");
    let pty = Pty::start(&dir).await;
    let (high, frames) = dsmr22_with_parity_bits();
    let (tx, mut rx) = mpsc::channel(8);
    let (st_tx, mut st_rx) = SourceStatus::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        SerialSource::new(fast_config(&pty.b, SerialMode::Dsmr22)).run(tx, st_tx, cancel.clone()),
    );
    wait_status(&mut st_rx, "connected", |s| s.connected).await;
    let mut w = pty.writer().await;
    write_chunked(&mut w, &high, 17).await;
    write_chunked(&mut w, &high, 17).await;
    // DSMR 2.2 has no CRC: the frame passes, with the parity bits cleared.
    assert_eq!(recv(&mut rx).await.bytes, frames[0]);
    assert_eq!(recv(&mut rx).await.bytes, frames[0]);
    assert!(
        st_rx
            .borrow()
            .detail
            .as_deref()
            .unwrap()
            .contains("9600 7E1")
    );
    cancel.cancel();
    assert_eq!(task.await.unwrap(), StopReason::Cancelled);
    drop(w);
    pty.unplug().await;
}

#[tokio::test]
async fn auto_mode_finds_the_7bit_setting() {
    let dir = tmpdir("auto");
    let pty = Pty::start(&dir).await;
    let (high, frames) = dsmr22_with_parity_bits();
    let (tx, mut rx) = mpsc::channel(8);
    let (st_tx, mut st_rx) = SourceStatus::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        SerialSource::new(fast_config(&pty.b, SerialMode::Auto)).run(tx, st_tx, cancel.clone()),
    );
    wait_status(&mut st_rx, "connected", |s| s.connected).await;
    let w = pty.writer().await;
    // A meter sends every few seconds; send every 150 ms until the source locks on.
    let stop = CancellationToken::new();
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut w = w;
            while !stop.is_cancelled() {
                write_chunked(&mut w, &high, 64).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            w
        }
    });
    // At 115200 8N1 the high-bit bytes contain no '/', so nothing can be framed until the
    // source switches to 9600 7E1 and masks.
    assert_eq!(recv(&mut rx).await.bytes, frames[0]);
    assert!(
        st_rx
            .borrow()
            .detail
            .as_deref()
            .unwrap()
            .contains("9600 7E1")
    );
    // It stays there.
    assert_eq!(recv(&mut rx).await.bytes, frames[0]);
    assert_eq!(recv(&mut rx).await.bytes, frames[0]);
    assert!(
        st_rx
            .borrow()
            .detail
            .as_deref()
            .unwrap()
            .contains("9600 7E1")
    );
    stop.cancel();
    let w = writer.await.unwrap();
    cancel.cancel();
    assert_eq!(task.await.unwrap(), StopReason::Cancelled);
    drop(w);
    pty.unplug().await;
}

#[tokio::test]
async fn missing_device_keeps_retrying_until_cancelled() {
    let dir = tmpdir("missing");
    let (tx, _rx) = mpsc::channel(8);
    let (st_tx, mut st_rx) = SourceStatus::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(
        SerialSource::new(fast_config(&dir.join("nope"), SerialMode::Auto)).run(
            tx,
            st_tx,
            cancel.clone(),
        ),
    );
    wait_status(&mut st_rx, "an open error", |s| s.last_error.is_some()).await;
    assert!(!st_rx.borrow().connected);
    assert!(
        st_rx
            .borrow()
            .last_error
            .as_deref()
            .unwrap()
            .contains("nope")
    );
    cancel.cancel();
    assert_eq!(task.await.unwrap(), StopReason::Cancelled);
}
