//! P1 Consent wallet app: a Tauri window over the wallet library (desktop; mobile configured).
//!
//! - [`core`]: the command layer (plain Rust, tested without a window).
//! - [`keyring_store`]: the owner's keys in the operating system's key store (Linux, macOS,
//!   Windows, iOS); [`no_key_store`]: what other platforms (Android) get instead.
//! - [`run`]: the Tauri app (also the mobile entry point): thin `#[tauri::command]`s over
//!   [`core::AppCore`], `p1consent://` links (deep-link plugin, plus single-instance on the
//!   desktop) forwarded to the UI.
//!
//! Settings (environment): `P1CONSENT_DATA_DIR` (default: the platform's app data folder),
//! `P1CONSENT_SECRET_STORE=keyring|file` (default `keyring`; `file` keeps the keys in
//! `secrets.json` in the data folder, as the CLI does), `P1CONSENT_BROKER` (broker URL override).

pub mod core;
// The platforms whose key store `Cargo.toml` enables in the `keyring` crate; keep in sync.
#[cfg(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "ios",
    target_os = "windows"
))]
pub mod keyring_store;
pub mod no_key_store;

use std::{path::PathBuf, sync::Arc};

use p1consent_wallet::{Wallet, WalletOptions, wallet::PairedSummary, wallet::SyncReport};
use tauri::{AppHandle, Emitter, Manager, State};

use crate::core::{
    AppCore, Audit, CmdResult, ConsentList, DeviceView, RequestView, RestoreReport, SecretsFactory,
    Status, is_our_link,
};

/// The event the UI listens to for a `p1consent://` link opened while it runs.
pub const LINK_EVENT: &str = "p1consent-link";

#[tauri::command]
async fn status(core: State<'_, AppCore>) -> CmdResult<Status> {
    core.status().await
}

#[tauri::command]
async fn create_identity(core: State<'_, AppCore>, broker: Option<String>) -> CmdResult<Status> {
    core.create_identity(broker).await
}

#[tauri::command]
async fn pair(core: State<'_, AppCore>, code: String) -> CmdResult<PairedSummary> {
    core.pair(code).await
}

#[tauri::command]
async fn pair_image(core: State<'_, AppCore>, image: Vec<u8>) -> CmdResult<PairedSummary> {
    core.pair_image(image).await
}

/// Header of a `scan_frame` call: the frame's width in pixels.
pub const FRAME_WIDTH_HEADER: &str = "p1c-frame-width";
/// Header of a `scan_frame` call: the frame's height in pixels.
pub const FRAME_HEIGHT_HEADER: &str = "p1c-frame-height";

/// One camera frame from the Pair page: the raw body is `width` × `height` bytes of
/// greyscale (no JSON), width and height in the headers [`FRAME_WIDTH_HEADER`] and
/// [`FRAME_HEIGHT_HEADER`]. Decoded off the async workers; see [`core::scan_frame`].
#[tauri::command]
async fn scan_frame(request: tauri::ipc::Request<'_>) -> CmdResult<core::FrameScan> {
    let tauri::ipc::InvokeBody::Raw(luma) = request.body() else {
        return Err("a camera frame is sent as raw bytes".to_string());
    };
    let dimension = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("a camera frame needs its {name} header (a number)"))
    };
    let (width, height) = (
        dimension(FRAME_WIDTH_HEADER)?,
        dimension(FRAME_HEIGHT_HEADER)?,
    );
    let max = p1consent_shared::qr::MAX_FRAME_DIMENSION as usize;
    if luma.len() > max * max {
        return Err(p1consent_shared::qr::QrError::FrameLength {
            expected: (width as usize).saturating_mul(height as usize),
            got: luma.len(),
        }
        .to_string());
    }
    let luma = luma.clone();
    tauri::async_runtime::spawn_blocking(move || core::scan_frame(width, height, &luma))
        .await
        .map_err(|_| "the camera frame could not be read".to_string())?
        .map_err(|e| format!("camera frame refused: {e}"))
}

#[tauri::command]
async fn devices(core: State<'_, AppCore>) -> CmdResult<Vec<DeviceView>> {
    core.devices().await
}

#[tauri::command]
async fn own_usage(
    core: State<'_, AppCore>,
    device: String,
    since: u64,
) -> CmdResult<core::OwnUsage> {
    core.own_usage(device, since).await
}

#[tauri::command]
async fn export_own_data(
    core: State<'_, AppCore>,
    device: String,
    format: String,
    path: String,
) -> CmdResult<String> {
    core.export_own_data(device, format, path).await
}

#[tauri::command]
async fn open_request(core: State<'_, AppCore>, link: String) -> CmdResult<RequestView> {
    core.open_request(link).await
}

#[tauri::command]
async fn pending_requests(core: State<'_, AppCore>) -> CmdResult<Vec<RequestView>> {
    core.pending_requests().await
}

#[tauri::command]
async fn grant(core: State<'_, AppCore>, request: String, device: String) -> CmdResult<String> {
    core.grant(request, device).await
}

#[tauri::command]
async fn decline(core: State<'_, AppCore>, request: String) -> CmdResult<RequestView> {
    core.decline(request).await
}

#[tauri::command]
async fn consents(core: State<'_, AppCore>, refresh: bool) -> CmdResult<ConsentList> {
    core.consents(refresh).await
}

#[tauri::command]
async fn revoke(core: State<'_, AppCore>, consent: String, erase: bool) -> CmdResult<String> {
    core.revoke(consent, erase).await
}

#[tauri::command]
async fn audit(core: State<'_, AppCore>) -> CmdResult<Audit> {
    core.audit().await
}

#[tauri::command]
async fn receipt(core: State<'_, AppCore>, consent: String) -> CmdResult<String> {
    core.receipt(consent).await
}

#[tauri::command]
async fn sync(core: State<'_, AppCore>) -> CmdResult<SyncReport> {
    core.sync().await
}

#[tauri::command]
async fn export_recovery(
    core: State<'_, AppCore>,
    passphrase: String,
    path: String,
) -> CmdResult<String> {
    core.export_recovery(passphrase, path).await
}

#[tauri::command]
async fn import_recovery(
    core: State<'_, AppCore>,
    path: String,
    passphrase: String,
    broker: Option<String>,
) -> CmdResult<RestoreReport> {
    core.import_recovery(path, passphrase, broker).await
}

#[tauri::command]
fn take_pending_link(core: State<'_, AppCore>) -> Option<String> {
    core.take_pending_link()
}

/// The commands the UI may call (also listed in `app/build.rs` and allowed in
/// `app/capabilities/default.json`).
pub const COMMANDS: &[&str] = &[
    "status",
    "create_identity",
    "pair",
    "pair_image",
    "scan_frame",
    "devices",
    "own_usage",
    "export_own_data",
    "open_request",
    "pending_requests",
    "grant",
    "decline",
    "consents",
    "revoke",
    "audit",
    "receipt",
    "sync",
    "export_recovery",
    "import_recovery",
    "take_pending_link",
];

/// The secret store chosen by `P1CONSENT_SECRET_STORE` (`keyring`, the default, or `file`).
/// `keyring` is the platform's key store; where there is none (Android) it is [`NoKeyStore`],
/// which refuses to keep keys, never a file in clear.
///
/// [`NoKeyStore`]: no_key_store::NoKeyStore
pub fn secrets_from_env() -> Result<(SecretsFactory, String), String> {
    let kind = std::env::var("P1CONSENT_SECRET_STORE").unwrap_or_else(|_| "keyring".into());
    match kind.as_str() {
        "file" => Ok((Arc::new(|dir| Wallet::file_secrets(dir)), "file".into())),
        "keyring" => Ok(os_key_store()),
        other => Err(format!(
            "P1CONSENT_SECRET_STORE={other} is not supported (use keyring or file)"
        )),
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "ios",
    target_os = "windows"
))]
fn os_key_store() -> (SecretsFactory, String) {
    (
        Arc::new(|dir| {
            Box::new(keyring_store::KeyringSecretStore::new(
                dir.display().to_string(),
            ))
        }),
        "keyring".into(),
    )
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "ios",
    target_os = "windows"
)))]
fn os_key_store() -> (SecretsFactory, String) {
    (
        Arc::new(|_| Box::new(no_key_store::NoKeyStore)),
        "none".into(),
    )
}

/// Hands a `p1consent://` link to the UI: kept until the UI asks (start-up) and sent as an
/// event (already running), and on the desktop the window is brought to the front.
fn forward_link(app: &AppHandle, url: &str) {
    if !is_our_link(url) {
        return;
    }
    app.state::<AppCore>().set_pending_link(url.to_string());
    let _ = app.emit(LINK_EVENT, url.to_string());
    // Window placement is desktop-only in Tauri (on a phone the system brings the app up).
    #[cfg(desktop)]
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
    }
}

/// The D-Bus name base of the single-instance plugin (Linux): one running app per wallet.
/// The default wallet uses the app identifier; a wallet in a data folder of its own
/// (`P1CONSENT_DATA_DIR`) gets a name of its own, so a second wallet (another owner, or a
/// test's second device) is not handed to the first one, including while that one exits.
#[cfg(target_os = "linux")]
fn single_instance_id(identifier: &str, data_dir: Option<&std::ffi::OsStr>) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    match data_dir {
        None => identifier.to_string(),
        Some(dir) => {
            // Same binary, same hasher keys: every start with this folder gets this name.
            let mut h = DefaultHasher::new();
            dir.hash(&mut h);
            format!("{identifier}.w{:016x}", h.finish())
        }
    }
}

/// Lets the Pair page use the camera in WebKitGTK: media streams (`getUserMedia`) are off by
/// default there, and WebKitGTK denies every permission request that no handler answers. The
/// window may use a camera (video, no microphone); every other request (microphone, screen,
/// location, notifications, device list, …) is denied.
#[cfg(target_os = "linux")]
fn allow_camera(view: &webkit2gtk::WebView) {
    use webkit2gtk::{
        PermissionRequestExt, SettingsExt, UserMediaPermissionRequest,
        UserMediaPermissionRequestExt, WebViewExt, glib::prelude::Cast,
    };
    if let Some(settings) = WebViewExt::settings(view) {
        settings.set_enable_media_stream(true);
        // Tests only: WebKit's built-in fake camera (a moving test pattern) instead of a device.
        if std::env::var_os("P1CONSENT_MOCK_CAMERA").is_some_and(|v| v == "1") {
            settings.set_enable_mock_capture_devices(true);
        }
    }
    view.connect_permission_request(|_, request| {
        let media = request
            .downcast_ref::<UserMediaPermissionRequest>()
            .map(|m| (m.is_for_video_device(), m.is_for_audio_device()));
        if camera_permission(media) {
            request.allow();
        } else {
            request.deny();
        }
        true
    });
}

/// The window's answer to a WebKitGTK permission request: `media` is `(video, audio)` of a
/// user-media request, `None` for any other kind. Only a camera without a microphone.
#[cfg(target_os = "linux")]
fn camera_permission(media: Option<(bool, bool)>) -> bool {
    matches!(media, Some((true, false)))
}

/// Starts the app (blocks until the window closes); on Android and iOS the entry point the
/// generated mobile project calls.
#[cfg_attr(mobile, tauri::mobile_entry_point)]
pub fn run() {
    let (secrets, kind) = match secrets_from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("p1consent-app: {e}");
            std::process::exit(2);
        }
    };
    let opts = WalletOptions {
        broker: std::env::var("P1CONSENT_BROKER")
            .ok()
            .filter(|b| !b.is_empty()),
        ..WalletOptions::default()
    };
    let context = tauri::generate_context!("../tauri.conf.json");
    let builder = tauri::Builder::default();
    // Desktop only (mobile systems keep one instance themselves). Must come first: a second
    // start hands its arguments (the link) to this one.
    #[cfg(desktop)]
    let builder = {
        let single = tauri_plugin_single_instance::Builder::new().callback(|app, argv, _cwd| {
            if let Some(url) = argv.iter().find(|a| is_our_link(a)) {
                forward_link(app, url);
            }
        });
        #[cfg(target_os = "linux")]
        let single = single.dbus_id(single_instance_id(
            &context.config().identifier,
            std::env::var_os("P1CONSENT_DATA_DIR").as_deref(),
        ));
        builder.plugin(single.build())
    };
    // Android and iOS: the system's barcode scanner reads the pairing QR code (the UI calls
    // `plugin:barcode-scanner|scan`; allowed by capabilities/mobile.json).
    #[cfg(mobile)]
    let builder = builder.plugin(tauri_plugin_barcode_scanner::init());
    builder
        .plugin(tauri_plugin_deep_link::init())
        .setup(move |app| {
            #[cfg(target_os = "linux")]
            if let Some(window) = app.get_webview_window("main") {
                // Runs on the main thread before the page can ask for the camera.
                window.with_webview(|w| allow_camera(&w.inner()))?;
            }
            let dir = match std::env::var_os("P1CONSENT_DATA_DIR") {
                Some(d) => PathBuf::from(d),
                None => app.path().app_data_dir()?,
            };
            app.manage(AppCore::new(
                dir,
                secrets.clone(),
                kind.clone(),
                opts.clone(),
            ));
            use tauri_plugin_deep_link::DeepLinkExt;
            #[cfg(any(target_os = "linux", all(debug_assertions, windows)))]
            {
                // Installed packages register the scheme through their desktop entry; this
                // also makes `cargo run` builds the handler.
                let _ = app.deep_link().register_all();
            }
            if let Ok(Some(urls)) = app.deep_link().get_current()
                && let Some(u) = urls.first()
            {
                forward_link(app.handle(), u.as_str());
            }
            let handle = app.handle().clone();
            app.deep_link().on_open_url(move |event| {
                if let Some(u) = event.urls().first() {
                    forward_link(&handle, u.as_str());
                }
            });
            // Started as `p1consent-app <link>` without the desktop entry.
            if let Some(arg) = std::env::args().skip(1).find(|a| is_our_link(a)) {
                forward_link(app.handle(), &arg);
            }
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            status,
            create_identity,
            pair,
            pair_image,
            scan_frame,
            devices,
            own_usage,
            export_own_data,
            open_request,
            pending_requests,
            grant,
            decline,
            consents,
            revoke,
            audit,
            receipt,
            sync,
            export_recovery,
            import_recovery,
            take_pending_link
        ])
        .run(context)
        .expect("error while running the P1 Consent app");
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::single_instance_id;
    use std::ffi::OsStr;

    #[test]
    fn only_a_camera_without_microphone_is_allowed() {
        use super::camera_permission;
        assert!(camera_permission(Some((true, false))));
        // Camera and microphone, microphone alone, screen capture (neither), other requests.
        assert!(!camera_permission(Some((true, true))));
        assert!(!camera_permission(Some((false, true))));
        assert!(!camera_permission(Some((false, false))));
        assert!(!camera_permission(None));
    }

    #[test]
    fn each_wallet_folder_has_its_own_valid_single_instance_name() {
        let id = "org.p1consent.wallet";
        assert_eq!(single_instance_id(id, None), id);
        let a = single_instance_id(id, Some(OsStr::new("/home/a/wallet")));
        let b = single_instance_id(id, Some(OsStr::new("/home/b/wallet")));
        assert_eq!(
            a,
            single_instance_id(id, Some(OsStr::new("/home/a/wallet")))
        );
        assert_ne!(a, b);
        assert_ne!(a, id);
        // A D-Bus well-known name: dot-separated elements of [A-Za-z0-9_-], none starting
        // with a digit, at most 255 bytes (with the plugin's ".SingleInstance").
        let full = format!("{a}.SingleInstance");
        assert!(full.len() <= 255);
        for element in full.split('.') {
            assert!(!element.is_empty() && !element.starts_with(|c: char| c.is_ascii_digit()));
            assert!(
                element
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            );
        }
    }
}
