//! Real parts for tests: Debian's mosquitto started on a free loopback port with a temporary
//! config (persistence on, so a SIGKILL keeps retained messages), stopped on drop.
//!
//! A missing `mosquitto` binary is a test failure with a clear message, never a silent pass:
//! `.ci/run` installs it (`apt-get install mosquitto`).

pub mod spy;
pub use spy::{Spy, WAIT, channel_records, wait_for};

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn find_mosquitto() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("mosquitto not found: install it with `apt-get install mosquitto` (.ci/run does)")
}

/// A running mosquitto with its own directory (config, persistence, log).
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut m = Self {
            port: free_port(),
            dir,
            child: None,
        };
        m.spawn();
        m
    }

    /// `mqtt://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap_or_else(|e| panic!("config: {e}"));
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {dir}/\nautosave_interval 1\nautosave_on_changes true\n\
             max_queued_messages 100000\nmax_inflight_messages 100\n\
             log_dest file {dir}/mosquitto.log\nmessage_size_limit 8388608\n",
            port = self.port,
            dir = self.dir.path().display()
        );
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("config: {e}"));
        // Started as root, mosquitto switches to the `mosquitto` user, which cannot write in
        // this private directory: no persistence file (sessions and queued messages are lost
        // on restart) and no log. Keep the user that owns the directory.
        if owned_by_root(self.dir.path()) {
            f.write_all(b"user root\n")
                .unwrap_or_else(|e| panic!("config: {e}"));
        }
        let child = Command::new(find_mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto: {e}"));
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "mosquitto did not listen on port {}; log: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
        );
    }

    /// SIGKILL, as a crash or power loss would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same persistence directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The broker's process id while it runs (for SIGSTOP/SIGCONT in tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A clean stop: SIGTERM, as systemd does; mosquitto writes its persistence file
    /// (retained messages, sessions and their queued messages) on the way out.
    /// Falls back to SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts the stopped (or killed) broker again on the same port with the same
    /// persistence directory.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

#[cfg(unix)]
fn owned_by_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).is_ok_and(|m| m.uid() == 0)
}

#[cfg(not(unix))]
fn owned_by_root(_dir: &Path) -> bool {
    false
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_starts_restarts_and_stops() {
        let mut m = Mosquitto::start();
        assert!(TcpStream::connect(("127.0.0.1", m.port)).is_ok());
        m.restart();
        assert!(TcpStream::connect(("127.0.0.1", m.port)).is_ok());
        let port = m.port;
        m.stop();
        assert!(m.pid().is_none());
        // Persistence and log really work (also when the tests run as root).
        assert!(
            m.dir().join("mosquitto.db").exists(),
            "no persistence file; log: {}",
            m.log()
        );
        assert!(m.log().contains("mosquitto version"), "no log");
        m.start_again();
        assert!(TcpStream::connect(("127.0.0.1", m.port)).is_ok());
        drop(m);
        std::thread::sleep(Duration::from_millis(100));
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
