//! Starts the telegram source the configuration asks for.

use tokio::sync::{mpsc, watch};

use crate::{
    config::{AgentConfig, SourceKind},
    source::{
        CancellationToken, RawTelegram, ReplayConfig, ReplayPace, ReplaySource, SerialConfig,
        SerialMode, SerialSource, SimConfig, Simulator, SourceStatus, now_unix_ms,
    },
};

pub async fn run_configured(
    cfg: AgentConfig,
    tx: mpsc::Sender<RawTelegram>,
    status: watch::Sender<SourceStatus>,
    cancel: CancellationToken,
) {
    match cfg.meter.source {
        SourceKind::Serial => {
            let mode = match cfg.meter.serial_mode.as_str() {
                "dsmr45" => SerialMode::Dsmr45,
                "dsmr22" => SerialMode::Dsmr22,
                _ => SerialMode::Auto,
            };
            let src = SerialSource::new(SerialConfig::new(cfg.meter.serial_path.clone(), mode));
            let reason = src.run(tx, status, cancel).await;
            tracing::info!(?reason, "serial source stopped");
        }
        SourceKind::Replay => {
            let Some(path) = cfg.meter.replay_file.clone() else {
                tracing::error!("replay source without a file");
                return;
            };
            let mut rc = ReplayConfig::new(path);
            rc.pace = if cfg.meter.replay_recorded_pace {
                ReplayPace::RecordedPace
            } else {
                ReplayPace::AsFastAsPossible
            };
            rc.looping = cfg.meter.replay_loop;
            match ReplaySource::new(rc).run(tx, status, cancel).await {
                Ok(reason) => tracing::info!(?reason, "replay source stopped"),
                Err(e) => tracing::error!(error = %e, "replay source failed"),
            }
        }
        SourceKind::Simulator => {
            let mut sc = SimConfig::new(now_unix_ms(), now_unix_ms());
            sc.interval_ms = cfg.meter.simulator_interval_ms;
            match Simulator::new(sc).run(tx, status, cancel).await {
                Ok(reason) => tracing::info!(?reason, "simulator stopped"),
                Err(e) => tracing::error!(error = %e, "simulator failed"),
            }
        }
    }
}
