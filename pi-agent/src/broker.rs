//! The embedded MQTT 5 broker (rumqttd), so a home LAN needs nothing else.
//!
//! rumqttd keeps everything in memory and has no shutdown API: it lives as long as the
//! agent process. Consent records that must outlive a restart are kept by the agent itself
//! (redb) and by the wallet; see docs/AGENT.md.

use std::net::SocketAddr;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("embedded broker configuration: {0}")]
    Config(String),
    #[error("embedded broker cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// Starts rumqttd on `listen` (MQTT 5) on a background thread and waits until it accepts
/// connections.
pub fn start_embedded(listen: SocketAddr) -> Result<(), BrokerError> {
    // Fail early with a clear message if the port is taken (rumqttd would only log it).
    std::net::TcpListener::bind(listen).map_err(|e| BrokerError::Listen {
        addr: listen,
        reason: e.to_string(),
    })?;
    let cfg = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v5.1]
name = "v5-1"
listen = "{listen}"
next_connection_delay_ms = 1
[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = {max_payload}
max_inflight_count = 200
"#,
        max_payload = p1consent_shared::topics::MAX_PAYLOAD + 64 * 1024,
    );
    let config: rumqttd::Config =
        toml::from_str(&cfg).map_err(|e| BrokerError::Config(e.to_string()))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    let connect_to = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(connect_to).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(BrokerError::Listen {
        addr: listen,
        reason: "did not start listening within 2 s".into(),
    })
}
