//! Calls into the app (Tauri commands) and the link event. The UI holds no keys: every
//! operation is a command of the app, which owns the wallet.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(catch, js_namespace = ["window", "__TAURI__", "core"], js_name = invoke)]
    async fn tauri_invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(catch, js_namespace = ["window", "__TAURI__", "event"], js_name = listen)]
    async fn tauri_listen(event: &str, handler: &js_sys::Function) -> Result<JsValue, JsValue>;
}

/// The event the app sends when a `p1consent://` link is opened while the window is up.
pub const LINK_EVENT: &str = "p1consent-link";

/// Runs a command; an error is the plain sentence the app wrote.
pub async fn call<T: DeserializeOwned>(cmd: &str, args: impl Serialize) -> Result<T, String> {
    let args = serde_wasm_bindgen::to_value(&args).map_err(|e| e.to_string())?;
    match tauri_invoke(cmd, args).await {
        Ok(v) => serde_wasm_bindgen::from_value(v).map_err(|e| e.to_string()),
        Err(e) => Err(e
            .as_string()
            .unwrap_or_else(|| "the app did not answer".to_string())),
    }
}

/// Calls `f` with every link the app forwards while the window is open.
pub async fn on_link(f: impl Fn(String) + 'static) {
    let closure = Closure::<dyn Fn(JsValue)>::new(move |ev: JsValue| {
        if let Some(url) = js_sys::Reflect::get(&ev, &JsValue::from_str("payload"))
            .ok()
            .and_then(|p| p.as_string())
        {
            f(url);
        }
    });
    let _ = tauri_listen(LINK_EVENT, closure.as_ref().unchecked_ref()).await;
    // Lives as long as the window.
    closure.forget();
}

#[derive(Serialize)]
pub struct NoArgs {}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Status {
    pub initialised: bool,
    pub owner: Option<String>,
    pub data_dir: String,
    pub secret_store: String,
    pub broker: Option<String>,
    pub devices: usize,
    pub pending_requests: usize,
    /// Where a recovery kit is offered to be saved.
    #[serde(default)]
    pub kit_hint: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Paired {
    pub label: String,
    pub device_id: String,
    /// Why the owner's own view of the meter could not be set up yet (the pairing stands).
    #[serde(default)]
    pub own_view_note: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Device {
    pub device: String,
    pub device_id: String,
    pub label: String,
    pub paired: bool,
    pub paired_at: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FieldLine {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Request {
    pub request_id: String,
    pub controller: String,
    pub contact: String,
    pub purpose: String,
    pub policy_url: Option<String>,
    pub jurisdiction: String,
    pub fields: Vec<FieldLine>,
    pub resolution_description: String,
    pub retention: String,
    pub consent_expires: String,
    pub link_expires: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Consent {
    pub consent_id: String,
    pub controller: String,
    pub purpose: String,
    pub device: String,
    pub fields: Vec<String>,
    pub resolution: String,
    pub status: String,
    pub erase_requested: bool,
    pub erasure_confirmed: bool,
    pub key_delivered_epoch: Option<u32>,
    pub expires: String,
    #[serde(default)]
    pub key_changed: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConsentList {
    pub consents: Vec<Consent>,
    pub offline: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SyncReport {
    pub threads: usize,
    pub entries: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RestoreReport {
    pub status: Status,
    pub sync: Option<SyncReport>,
    pub offline: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Rejected {
    pub error: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Thread {
    pub thread_id: String,
    pub kind: String,
    /// The meter's label, or the provider's name and the meter.
    #[serde(default)]
    pub title: String,
    pub entries: Vec<serde::de::IgnoredAny>,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Audit {
    pub verified: bool,
    pub entries: usize,
    pub rejected: usize,
    pub threads: Vec<Thread>,
}

/// The owner's own use of one meter (`own_usage`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OwnUsage {
    pub power_kw: Option<f64>,
    pub returned_kw: Option<f64>,
    pub updated_ms: Option<u64>,
    pub today_kwh: Option<f64>,
    pub chart: Vec<(u64, f64)>,
    pub problem: Option<String>,
}
