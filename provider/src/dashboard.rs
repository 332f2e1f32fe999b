//! The provider's live dashboard (`p1consent-provider dashboard`): one local web page with a
//! chart of the power use in the granted stream, the consent (purpose, controller, expiry) and
//! where it stands (waiting for a grant, receiving, revoked, expired).
//!
//! Everything is served by this process (no CDN): `/` (HTML), `/dashboard.js`,
//! `/dashboard.css`, `/request-qr.svg` (the request link as a QR code, when given) and
//! `/api/state` (JSON, polled by the page every second). Requests whose `Host` is not
//! `localhost` or an IP address are refused (no DNS rebinding from other web sites).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use p1consent_shared::{
    crypto::OpaqueId,
    view::{Aggregate, Counter, Reading, ViewPayload},
};
use serde::Serialize;

use crate::{ConsentInfo, ConsentPhase, ProviderEvent};

/// Points kept per consent (a day of minute windows; ten minutes of raw telegrams per second).
pub const MAX_POINTS: usize = 1440;
/// Event lines kept for the page.
pub const MAX_EVENTS: usize = 40;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// What the page shows, updated from the provider's events.
#[derive(Debug, Default)]
pub struct Dashboard {
    provider: String,
    broker: String,
    connected: bool,
    request_link: Option<String>,
    request_qr: Option<String>,
    consents: Vec<ConsentInfo>,
    /// The consent the page is about: the latest granted one.
    focus: Option<String>,
    series: HashMap<String, Series>,
    events: VecDeque<EventLine>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Series {
    label: &'static str,
    /// `[time (Unix ms), kW]`, oldest first.
    points: VecDeque<(u64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
struct EventLine {
    time_ms: u64,
    text: String,
}

/// The JSON of `/api/state`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub provider: String,
    pub broker: String,
    pub connected: bool,
    /// `waiting` (no consent yet), `granted` (no data yet), `receiving`, `revoked`, `expired`,
    /// `ended` (cut off by the device without an end in the consent's log).
    pub state: &'static str,
    /// The state in words.
    pub state_text: String,
    pub consent: Option<ConsentInfo>,
    pub series_label: &'static str,
    pub points: Vec<(u64, f64)>,
    pub events: Vec<EventLineOut>,
    pub request_link: Option<String>,
    pub consents: usize,
    pub now_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct EventLineOut {
    pub time_ms: u64,
    pub text: String,
}

/// One chart point from a payload: net power in kW (delivered minus returned) at a time.
/// Raw readings give the instantaneous power; aggregates the window's mean power, or, when only
/// energy was granted, the average power that the energy counters imply.
pub fn power_point(payload: &ViewPayload) -> Option<(u64, f64, &'static str)> {
    match payload {
        ViewPayload::Reading(r) => reading_power(r).map(|(v, l)| (r.time_ms, v, l)),
        ViewPayload::Aggregate(a) => aggregate_power(a).map(|(v, l)| (a.end_ms, v, l)),
    }
}

fn reading_power(r: &Reading) -> Option<(f64, &'static str)> {
    match (r.power_delivered_kw, r.power_returned_kw) {
        (Some(d), Some(ret)) => Some((d - ret, "net power (kW)")),
        (Some(d), None) => Some((d, "power delivered (kW)")),
        (None, Some(ret)) => Some((-ret, "net power (kW)")),
        (None, None) => None,
    }
    .filter(|(v, _)| v.is_finite())
}

fn aggregate_power(a: &Aggregate) -> Option<(f64, &'static str)> {
    let mean = match (a.power_delivered_kw, a.power_returned_kw) {
        (Some(d), Some(r)) => Some((d.mean - r.mean, "mean net power (kW)")),
        (Some(d), None) => Some((d.mean, "mean power delivered (kW)")),
        (None, Some(r)) => Some((-r.mean, "mean net power (kW)")),
        (None, None) => None,
    };
    if mean.is_some() {
        return mean.filter(|(v, _)| v.is_finite());
    }
    let sum = |total: Option<Counter>, t1: Option<Counter>, t2: Option<Counter>| {
        total.map(|c| c.delta).or_else(|| match (t1, t2) {
            (None, None) => None,
            (a, b) => Some(a.map_or(0.0, |c| c.delta) + b.map_or(0.0, |c| c.delta)),
        })
    };
    let delivered = sum(
        a.energy_delivered_total_kwh,
        a.energy_delivered_tariff1_kwh,
        a.energy_delivered_tariff2_kwh,
    );
    let returned = sum(
        a.energy_returned_total_kwh,
        a.energy_returned_tariff1_kwh,
        a.energy_returned_tariff2_kwh,
    );
    if (delivered.is_none() && returned.is_none()) || a.resolution_s == 0 {
        return None;
    }
    let kwh = delivered.unwrap_or(0.0) - returned.unwrap_or(0.0);
    let kw = kwh * 3600.0 / f64::from(a.resolution_s);
    kw.is_finite()
        .then_some((kw, "average power from the energy counters (kW)"))
}

/// A provider event in words (the page's event list and the log on standard error).
pub fn describe(ev: &ProviderEvent) -> Option<String> {
    Some(match ev {
        ProviderEvent::Reading { .. } | ProviderEvent::Duplicate { .. } => return None,
        ProviderEvent::Connected => "connected to the broker".into(),
        ProviderEvent::Disconnected { reason } => {
            format!("disconnected from the broker ({reason}); reconnecting")
        }
        ProviderEvent::Granted {
            consent,
            fields,
            resolution,
            expires_at,
            ..
        } => format!(
            "GRANTED consent {consent}: {} at {} until {expires_at}",
            fields
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(","),
            resolution.name()
        ),
        ProviderEvent::KeyReceived {
            consent,
            channel,
            epoch,
        } => format!("KEY consent {consent}: channel {channel}, epoch {epoch}"),
        ProviderEvent::Rotated { consent, epoch } => {
            format!("ROTATED consent {consent}: key rotated, now epoch {epoch}")
        }
        ProviderEvent::AccessEnded { consent } => {
            format!("ACCESS ENDED consent {consent}: a key rotation left this provider out")
        }
        ProviderEvent::Revoked {
            consent,
            erase_requested,
        } => format!(
            "REVOKED consent {consent} by the owner{}",
            if *erase_requested {
                "; erasure requested"
            } else {
                ""
            }
        ),
        ProviderEvent::Expired { consent } => format!("EXPIRED consent {consent}"),
        ProviderEvent::Erased { consent } => {
            format!("ERASED consent {consent}: data and keys deleted; confirmation sent")
        }
        ProviderEvent::Gap {
            consent,
            expected,
            got,
        } => format!("GAP consent {consent}: records {expected}..{got} missing"),
        ProviderEvent::Rejected { topic, reason, .. } => {
            format!("REJECTED message on {topic}: {reason}")
        }
    })
}

impl Dashboard {
    /// A dashboard for the provider `provider` (opaque id) on `broker`, with the consents
    /// already known; `request_link` is shown (with its QR code) while no consent is active.
    pub fn new(
        provider: String,
        broker: String,
        consents: Vec<ConsentInfo>,
        request_link: Option<String>,
    ) -> Self {
        let request_qr = request_link
            .as_deref()
            .and_then(|l| p1consent_shared::qr::render_svg(l).ok());
        let focus = consents
            .iter()
            .rev()
            .find(|c| c.phase.is_active())
            .or(consents.last())
            .map(|c| c.consent.clone());
        Self {
            provider,
            broker,
            request_link,
            request_qr,
            consents,
            focus,
            ..Self::default()
        }
    }

    /// Takes in one event and the provider's consents after it.
    pub fn apply(&mut self, ev: &ProviderEvent, consents: Vec<ConsentInfo>, now_ms: u64) {
        self.consents = consents;
        match ev {
            ProviderEvent::Connected => self.connected = true,
            ProviderEvent::Disconnected { .. } => self.connected = false,
            ProviderEvent::Granted { consent, .. } => self.focus = Some(consent.to_hex()),
            // The provider deleted the data on the owner's request: so does the page.
            ProviderEvent::Erased { consent } => {
                self.series.remove(&consent.to_hex());
            }
            ProviderEvent::Reading {
                consent, payload, ..
            } => {
                self.add_point(consent, payload);
                if self.focus.is_none() {
                    self.focus = Some(consent.to_hex());
                }
            }
            _ => {}
        }
        if let Some(text) = describe(ev) {
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(EventLine {
                time_ms: now_ms,
                text,
            });
        }
    }

    fn add_point(&mut self, consent: &OpaqueId, payload: &ViewPayload) {
        let Some((t, v, label)) = power_point(payload) else {
            return;
        };
        let s = self.series.entry(consent.to_hex()).or_default();
        s.label = label;
        if s.points.len() == MAX_POINTS {
            s.points.pop_front();
        }
        s.points.push_back((t, v));
    }

    /// What `/api/state` returns.
    pub fn snapshot(&self, now_ms: u64) -> Snapshot {
        let consent = self
            .focus
            .as_ref()
            .and_then(|f| self.consents.iter().find(|c| &c.consent == f))
            .cloned();
        let series = self.focus.as_ref().and_then(|f| self.series.get(f));
        let points: Vec<(u64, f64)> = series
            .map(|s| s.points.iter().copied().collect())
            .unwrap_or_default();
        let (state, state_text) = match &consent {
            None => (
                "waiting",
                "Waiting for the owner's consent: give them the request link.".to_string(),
            ),
            Some(c) => match c.phase {
                ConsentPhase::Active if points.is_empty() && c.readings == 0 => (
                    "granted",
                    "Consent granted; waiting for the meter's first data.".to_string(),
                ),
                ConsentPhase::Active => (
                    "receiving",
                    format!("Receiving data ({} readings so far).", c.readings),
                ),
                ConsentPhase::Revoked {
                    erase_requested: false,
                } => (
                    "revoked",
                    "Revoked by the owner: no new data can be read.".to_string(),
                ),
                ConsentPhase::Revoked {
                    erase_requested: true,
                } => (
                    "revoked",
                    "Revoked by the owner, who asked for erasure of the data received.".to_string(),
                ),
                ConsentPhase::Erased => (
                    "revoked",
                    "Revoked by the owner: the data received was erased and the erasure \
                     confirmed to the owner."
                        .to_string(),
                ),
                ConsentPhase::Expired => (
                    "expired",
                    "The consent expired: no new data can be read.".to_string(),
                ),
                ConsentPhase::Ended => (
                    "ended",
                    "The meter no longer gives this provider access (e.g. the owner unpaired \
                     it): no new data can be read."
                        .to_string(),
                ),
            },
        };
        Snapshot {
            provider: self.provider.clone(),
            broker: self.broker.clone(),
            connected: self.connected,
            state,
            state_text,
            consent,
            series_label: series.map_or("power (kW)", |s| s.label),
            points,
            events: self
                .events
                .iter()
                .rev()
                .map(|e| EventLineOut {
                    time_ms: e.time_ms,
                    text: e.text.clone(),
                })
                .collect(),
            request_link: self.request_link.clone(),
            consents: self.consents.len(),
            now_ms,
        }
    }
}

/// The dashboard shared between the provider's event loop and the web server.
pub type Shared = Arc<Mutex<Dashboard>>;

fn lock(s: &Shared) -> MutexGuard<'_, Dashboard> {
    // A panic while holding the lock cannot leave the dashboard inconsistent in a way that
    // matters for display: keep serving.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Only `localhost` or IP-literal hosts: a web site that rebinds its own name to 127.0.0.1
/// cannot read the page.
fn host_allowed(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn respond(headers: &HeaderMap, content_type: &'static str, body: String) -> Response {
    if !host_allowed(headers) {
        return (StatusCode::FORBIDDEN, "forbidden host\n").into_response();
    }
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The web server's routes over the shared dashboard.
pub fn router(shared: Shared) -> Router {
    let api = shared.clone();
    let qr = shared;
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { respond(&h, "text/html; charset=utf-8", PAGE.into()) }),
        )
        .route(
            "/dashboard.js",
            get(|h: HeaderMap| async move {
                respond(&h, "text/javascript; charset=utf-8", SCRIPT.into())
            }),
        )
        .route(
            "/dashboard.css",
            get(|h: HeaderMap| async move { respond(&h, "text/css; charset=utf-8", STYLE.into()) }),
        )
        .route(
            "/api/state",
            get(move |h: HeaderMap| {
                let api = api.clone();
                async move {
                    let snap = lock(&api).snapshot(crate::now_ms());
                    match serde_json::to_string(&snap) {
                        Ok(body) => respond(&h, "application/json", body),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route(
            "/request-qr.svg",
            get(move |h: HeaderMap| {
                let qr = qr.clone();
                async move {
                    match lock(&qr).request_qr.clone() {
                        Some(svg) => respond(&h, "image/svg+xml", svg),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        )
}

/// Binds `addr` (port 0: any free port); returns the listener and the address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, shared: Shared) -> std::io::Result<()> {
    axum::serve(listener, router(shared)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use p1consent_shared::view::Stat;

    fn headers(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn only_local_hosts_are_served() {
        assert!(host_allowed(&headers("127.0.0.1:8080")));
        assert!(host_allowed(&headers("localhost:1")));
        assert!(host_allowed(&headers("[::1]:8080")));
        assert!(host_allowed(&headers("192.168.1.5")));
        assert!(!host_allowed(&headers("evil.example:8080")));
        assert!(!host_allowed(&headers("localhost.evil.example")));
        assert!(!host_allowed(&HeaderMap::new()));
    }

    #[test]
    fn power_from_readings_and_aggregates() {
        let r = ViewPayload::Reading(Reading {
            time_ms: 5,
            power_delivered_kw: Some(1.5),
            power_returned_kw: Some(0.5),
            ..Reading::default()
        });
        assert_eq!(power_point(&r), Some((5, 1.0, "net power (kW)")));
        let a = ViewPayload::Aggregate(Aggregate {
            start_ms: 0,
            end_ms: 60_000,
            resolution_s: 60,
            samples: 60,
            energy_delivered_total_kwh: Some(Counter {
                delta: 0.01,
                end: 100.0,
            }),
            ..Aggregate::default()
        });
        let (t, kw, _) = power_point(&a).unwrap();
        assert_eq!(t, 60_000);
        assert!((kw - 0.6).abs() < 1e-9);
        let m = ViewPayload::Aggregate(Aggregate {
            start_ms: 0,
            end_ms: 60_000,
            resolution_s: 60,
            samples: 60,
            power_delivered_kw: Some(Stat {
                mean: 2.0,
                min: 1.0,
                max: 3.0,
            }),
            ..Aggregate::default()
        });
        assert_eq!(power_point(&m).map(|p| p.1), Some(2.0));
        let none = ViewPayload::Reading(Reading {
            time_ms: 1,
            tariff: Some(1),
            ..Reading::default()
        });
        assert_eq!(power_point(&none), None);
    }

    #[test]
    fn waiting_until_a_consent_is_known() {
        let d = Dashboard::new("p".into(), "mqtt://x".into(), vec![], Some("l".into()));
        let s = d.snapshot(1);
        assert_eq!(s.state, "waiting");
        assert!(s.points.is_empty());
        assert_eq!(s.request_link.as_deref(), Some("l"));
    }
}
