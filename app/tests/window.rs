//! The real app window, end to end: the `p1consent-app` binary started by `tauri-driver`
//! (WebKitWebDriver) in an X server, keys in the real gnome-keyring, a real broker
//! (mosquitto), a real pi-agent with a simulated meter and a provider on the provider SDK.
//! The test clicks and types as the owner does; each step leaves a screenshot in
//! `target/e2e-screenshots/`.
//!
//! Needs `DISPLAY` (Xvfb), a D-Bus session with an unlocked gnome-keyring, `tauri-driver` and
//! `WebKitWebDriver`: run it with `scripts/test-app-e2e.sh`, which sets all of that up.
#![cfg(target_os = "linux")]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use p1consent_app_lib::keyring_store::SERVICE;
use p1consent_scenarios::{
    BrokerKind, Meter, Prov, WAIT, World, provider::ProviderEvent, shared::consent::Field,
    shared::consent::FieldSet, shared::consent::Resolution,
};
use p1consent_wallet::identity::SIGNING_SECRET;

/// `tauri-driver` on free ports, stopped (with the WebKitWebDriver it started) when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(env: &[(&str, &Path)]) -> Self {
        let port = p1consent_testkit::free_port();
        let native = p1consent_testkit::free_port();
        let mut cmd = Command::new(tauri_driver());
        cmd.args(["--port", &port.to_string()])
            .args(["--native-port", &native.to_string()])
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tauri-driver: {e}"));
        let me = Self { child, port };
        // tauri-driver listens at once but forwards to WebKitWebDriver, which starts later.
        for p in [port, native] {
            assert!(
                p1consent_testkit::wait_for_port(p, WAIT),
                "tauri-driver or WebKitWebDriver does not listen on {p}"
            );
        }
        me
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SIGTERM: tauri-driver then stops its WebKitWebDriver.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tauri_driver() -> PathBuf {
    if let Some(p) = std::env::var_os("TAURI_DRIVER") {
        return p.into();
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin/tauri-driver"));
    match cargo_bin {
        Some(p) if p.exists() => p,
        _ => "tauri-driver".into(),
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("e2e-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// The window as the owner sees it, with helpers that wait for conditions (never for time).
struct Window {
    c: Client,
    shots: PathBuf,
    /// What the last wait was for (reported when a WebDriver call hangs).
    step: Arc<Mutex<String>>,
}

impl Window {
    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// The current message line (status or error), if any.
    async fn message(&self) -> String {
        match self.c.find(Locator::Css("#message")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the element `css` exists and `ok(text)` holds; fails with the page's
    /// message and a screenshot otherwise.
    async fn wait_text(&self, what: &str, css: &str, ok: impl Fn(&str) -> bool) -> Element {
        *self.step.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.c.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
                && ok(&t)
            {
                return e;
            }
            if Instant::now() >= deadline {
                self.shot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "timed out waiting for {what} ({css}); message: {:?}",
                    self.message().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_message(&self, what: &str, contains: &str) {
        self.wait_text(what, "#message", |t| t.contains(contains))
            .await;
    }

    async fn click(&self, css: &str) {
        self.wait_text(css, css, |_| true)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_text(css, css, |_| true).await;
        e.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
        // The field must hold exactly what was typed (a re-render must not have eaten it).
        let value = e
            .prop("value")
            .await
            .unwrap_or_else(|e| panic!("value of {css}: {e}"));
        assert_eq!(value.as_deref(), Some(text), "{css} after typing");
    }

    /// Clicks `button_css` until the element `css` shows `ok` (a refresh button).
    async fn refresh_until(&self, what: &str, button_css: &str, css: &str, ok: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.c.find(Locator::Css(css)).await
                && e.text().await.is_ok_and(|t| t.contains(ok))
            {
                return;
            }
            if Instant::now() >= deadline {
                self.shot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "timed out waiting for {what}; message: {:?}",
                    self.message().await
                );
            }
            if let Ok(b) = self.c.find(Locator::Css(button_css)).await {
                let _ = b.click().await;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
}

/// The app's environment: its data folder, and a home of its own for the files it writes
/// besides (desktop entry for the link scheme, WebKit caches).
fn app_env(home: &Path, data: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("P1CONSENT_DATA_DIR", data.to_path_buf()),
        ("HOME", home.to_path_buf()),
        ("XDG_DATA_HOME", home.join("share")),
        ("XDG_CONFIG_HOME", home.join("config")),
        ("XDG_CACHE_HOME", home.join("cache")),
    ]
}

/// Runs `steps` in a fresh app window (its own tauri-driver and app process). The steps run
/// in their own task so that a failed step still closes the window.
async fn in_window<T, Fut>(env: &[(&'static str, PathBuf)], steps: impl FnOnce(Window) -> Fut) -> T
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let env_refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let driver = Driver::start(&env_refs);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "tauri:options".into(),
        serde_json::json!({ "application": env!("CARGO_BIN_EXE_p1consent-app") }),
    );
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    let url = driver.url();
    let client = tokio::time::timeout(WAIT, builder.connect(&url))
        .await
        .expect("no WebDriver session within the deadline")
        .expect("WebDriver session with the app window");
    let step = Arc::new(Mutex::new("the start".to_string()));
    let window = Window {
        c: client.clone(),
        shots: screenshot_dir(),
        step: step.clone(),
    };
    // WebDriver calls have no deadline of their own: a hung one must not hang the test.
    let task = tokio::spawn(steps(window));
    let abort = task.abort_handle();
    let result = tokio::time::timeout(WAIT * 5, task).await;
    abort.abort();
    let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
    drop(driver);
    match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!(
            "the window steps did not finish within {:?} (a WebDriver call hung) while waiting for {}",
            WAIT * 5,
            step.lock().unwrap_or_else(|p| p.into_inner())
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Xvfb, a D-Bus session with gnome-keyring, tauri-driver and WebKitWebDriver: run scripts/test-app-e2e.sh"]
async fn owner_pairs_approves_sees_data_and_withdraws_in_the_window() {
    assert!(
        std::env::var_os("DISPLAY").is_some(),
        "no DISPLAY: run scripts/test-app-e2e.sh (Xvfb)"
    );
    let world = World::start(BrokerKind::Mosquitto, Meter::fast_simulator()).await;
    let prov = Prov::connect(&world.url, "Wattt").await;

    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("wallet");
    let kit = home.path().join("kit.p1ck");
    let (d, k) = (data.clone(), kit.clone());
    let url = world.url.clone();
    let world = in_window(&app_env(home.path(), &data), move |w| async move {
        scenario(w, world, prov, d, k).await
    })
    .await;

    // Another device: a new home and data folder, restored from the kit.
    let home2 = tempfile::tempdir().unwrap();
    let data2 = home2.path().join("wallet");
    let d2 = data2.clone();
    // This device gets WebKit's fake camera (P1CONSENT_MOCK_CAMERA=1): no getUserMedia is
    // replaced here, the request goes through WebKitGTK's capture pipeline.
    let mut env2 = app_env(home2.path(), &data2);
    env2.push(("P1CONSENT_MOCK_CAMERA", PathBuf::from("1")));
    in_window(&env2, move |w| async move {
        restore(w, kit, d2, url).await;
        drop(world);
    })
    .await;
}

/// Replaces the camera (only it) with a canvas: `navigator.mediaDevices.getUserMedia` returns
/// `canvas.captureStream()`; the canvas shows nothing (`show = 'none'`), a QR code that is not
/// a pairing code (`'other'`) or the meter's pairing QR code (`'pairing'`), redrawn ten times
/// a second. Every stream handed out and every constraint asked for are kept in
/// `window.__fakeCamera`. Returns what `typeof navigator.mediaDevices` was before.
async fn fake_camera(w: &Window, pairing: &str) -> String {
    let png = |text: &str| {
        let bytes = p1consent_shared::qr::render_png(text, 6).expect("QR picture");
        format!("data:image/png;base64,{}", base64(&bytes))
    };
    let script = r#"
        const [pairing, other] = arguments;
        const had = typeof navigator.mediaDevices;
        const canvas = document.createElement('canvas');
        canvas.width = 640;
        canvas.height = 480;
        const g = canvas.getContext('2d');
        const load = (src) => { const i = new Image(); i.src = src; return i; };
        const codes = { pairing: load(pairing), other: load(other) };
        const fake = { show: 'none', asked: [], streams: [], frames: 0 };
        window.__fakeCamera = fake;
        const draw = () => {
            fake.frames++;
            g.fillStyle = fake.frames % 2 ? '#8a8a8a' : '#888888';
            g.fillRect(0, 0, 640, 480);
            const img = codes[fake.show];
            if (img && img.complete && img.naturalWidth) {
                g.drawImage(img, (640 - img.naturalWidth) / 2, (480 - img.naturalHeight) / 2);
            }
        };
        draw();
        setInterval(draw, 100);
        if (!navigator.mediaDevices) {
            Object.defineProperty(navigator, 'mediaDevices', { value: {}, configurable: true });
        }
        navigator.mediaDevices.getUserMedia = (constraints) => {
            fake.asked.push(constraints);
            const s = canvas.captureStream(10);
            fake.streams.push(s);
            return Promise.resolve(s);
        };
        return had;
    "#;
    let had =
        w.c.execute(
            script,
            vec![
                serde_json::Value::String(png(pairing)),
                serde_json::Value::String(png("https://example.org/not-a-meter")),
            ],
        )
        .await
        .expect("install the fake camera");
    had.as_str().unwrap_or_default().to_string()
}

/// Evaluates `expr` in the window, as a string.
async fn fake_camera_state(w: &Window, expr: &str) -> String {
    let v =
        w.c.execute(&format!("return String({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
    v.as_str().unwrap_or_default().to_string()
}

/// Waits until `expr` is true in the window.
async fn wait_js(w: &Window, what: &str, expr: &str) {
    *w.step.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        if fake_camera_state(w, expr).await == "true" {
            return;
        }
        if Instant::now() >= deadline {
            w.shot(&format!("failed-{}", what.replace(' ', "-"))).await;
            let camera = match w.c.find(Locator::Css("#camera-status")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!(
                "timed out waiting for {what} ({expr}); camera: {camera:?}; message: {:?}",
                w.message().await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Standard base64 with padding (for a data: URL).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The owner's first device, from the first start to a withdrawal. Returns the world, which
/// the restored device reads from.
async fn scenario(w: Window, world: World, mut prov: Prov, data: PathBuf, kit: PathBuf) -> World {
    // 1. First start: the Welcome page.
    w.wait_text("the welcome page", "#page-title", |t| t == "Welcome")
        .await;
    w.shot("01-welcome").await;

    // 2. Create the identity: keys in the real keyring, none on disk.
    w.click("#create-identity").await;
    w.wait_message("the identity", "Your identity is ready")
        .await;
    let seed = keyring::Entry::new(SERVICE, &format!("{}/{SIGNING_SECRET}", data.display()))
        .expect("keyring entry")
        .get_secret()
        .expect("the owner key is in gnome-keyring");
    assert_eq!(seed.len(), 32);
    assert!(!data.join("secrets.json").exists(), "no key file");

    // 3. First start offers the recovery kit: save it.
    w.wait_text("the settings page", "#page-title", |t| t == "Settings")
        .await;
    w.shot("02-identity-and-recovery-offer").await;
    w.type_into("#kit-pass", "a long passphrase").await;
    w.type_into("#kit-pass2", "a long passphrase").await;
    w.type_into("#kit-path", &kit.display().to_string()).await;
    w.click("#kit-save").await;
    w.wait_message("the saved kit", "Recovery kit saved").await;
    assert!(kit.exists());
    w.shot("03-recovery-kit-saved").await;

    // 4. Pair with the camera. This machine has none, so the test fakes only the camera:
    // `getUserMedia` returns the stream of a canvas (`captureStream`) that shows first no
    // code, then another QR code, then the meter's pairing QR code. Everything after that is
    // the app's: the preview, frames sent to `scan_frame`, decoding, pairing.
    w.click("#go-pair").await;
    let pairing = world.pairing_link().await;
    let media = fake_camera(&w, &pairing).await;
    assert_eq!(
        media, "object",
        "navigator.mediaDevices exists: the app enabled media streams in WebKitGTK"
    );
    w.click("#camera-start").await;
    w.wait_text("the camera looking", "#camera-status", |t| {
        t.starts_with("Looking for the QR code")
    })
    .await;
    let asked = fake_camera_state(&w, "JSON.stringify(window.__fakeCamera.asked[0])").await;
    assert_eq!(
        asked, r#"{"video":{"facingMode":{"ideal":"environment"}},"audio":false}"#,
        "the app asks for video only, the camera facing away preferred"
    );
    // Stop: the camera's tracks end and the preview goes away.
    w.click("#camera-stop").await;
    wait_js(
        &w,
        "the stopped camera",
        "window.__fakeCamera.streams[0].getTracks().every(t => t.readyState === 'ended')",
    )
    .await;
    wait_js(
        &w,
        "the hidden preview",
        "getComputedStyle(document.querySelector('#camera-preview')).display === 'none'",
    )
    .await;
    // Again, now showing a QR code that is not a pairing code: the app keeps looking.
    fake_camera_state(&w, "window.__fakeCamera.show = 'other'").await;
    w.click("#camera-start").await;
    w.wait_text("the other code", "#camera-status", |t| {
        t.contains("not a meter's pairing code")
    })
    .await;
    wait_js(&w, "the live preview", "(() => { const v = document.querySelector('#camera-preview'); return v.readyState >= 2 && v.videoWidth === 640 && getComputedStyle(v).display !== 'none'; })()").await;
    w.shot("04a-camera-preview").await;
    // The meter's code: the app stops the camera and pairs.
    fake_camera_state(&w, "window.__fakeCamera.show = 'pairing'").await;
    w.wait_message("the pairing", "Paired with Meter hall")
        .await;
    wait_js(&w, "the camera stopped after pairing", "window.__fakeCamera.streams.every(s => s.getTracks().every(t => t.readyState === 'ended'))").await;
    assert_eq!(
        fake_camera_state(&w, "String(window.__fakeCamera.asked.length)").await,
        "2",
        "one camera opened per click"
    );
    w.wait_text("the meter list", "ul.cards", |t| t.contains("Meter hall"))
        .await;
    // The owner's own view: current power, today's use and a live chart of the meter.
    w.wait_text("the meter's current power", "ul.cards .usage", |t| {
        (t.contains("right now") || t.contains("back to the grid")) && t.contains("Used today")
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let points = match w.c.find(Locator::Css("ul.cards svg.chart polyline")).await {
            Ok(e) => e.attr("points").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        };
        if points.split_whitespace().count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the live chart has no line");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    w.shot("04-paired").await;

    // 4b. The paste path reaches the wallet too: the same code again is refused in words.
    w.click("#nav-pair").await;
    w.type_into("#pair-code", &pairing).await;
    w.click("#pair-button").await;
    w.wait_message("the second pairing", "already paired with this wallet")
        .await;

    // 5a. A request link opened from a web page: the desktop starts the app with the link
    // (`%u`); that second start hands it to this window over D-Bus and exits. The owner
    // reads it and declines.
    w.click("#nav-devices").await;
    let declined = prov.request(
        FieldSet::empty().with(Field::PowerDelivered),
        Resolution::Raw,
        600,
    );
    let second = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_p1consent-app"))
                .arg(&declined)
                .env("P1CONSENT_DATA_DIR", &data)
                .stdin(Stdio::null())
                .status()
        })
    };
    let second = tokio::time::timeout(WAIT, second)
        .await
        .expect("the second start did not hand over its link and exit")
        .expect("join")
        .expect("start the app a second time");
    assert!(second.success(), "second start: {second}");
    w.wait_message("the forwarded request", "is genuine").await;
    w.wait_text("the forwarded request card", "article.card", |t| {
        t.contains("Wattt B.V.") && t.contains("Why")
    })
    .await;
    w.shot("05a-request-from-a-link").await;
    w.click("article.card .actions button:not(.primary)").await;
    w.wait_message("the decline", "You declined").await;
    w.wait_text("no request waiting", "main", |t| {
        t.contains("No request is waiting.")
    })
    .await;

    // 5. Open a provider's request link: shown in plain words.
    let link = prov.request(
        FieldSet::empty().with(Field::PowerDelivered),
        Resolution::Raw,
        3600,
    );
    let consent = Prov::consent_of(&link);
    w.click("#nav-requests").await;
    w.type_into("#request-link", &link).await;
    w.click("#check-request").await;
    w.wait_message("the verified request", "is genuine").await;
    w.wait_text("the request card", "article.card", |t| {
        t.contains("Wattt B.V.") && t.contains("Why")
    })
    .await;
    w.shot("05-request").await;

    // 6. Approve: the provider receives the key and readings.
    w.click("article.card button.primary").await;
    w.wait_message("the approval", "may now receive").await;
    prov.wait(
        "the grant",
        |e| matches!(e, ProviderEvent::Granted { consent: c, .. } if *c == consent),
    )
    .await;
    let readings = prov.readings(&consent, 2).await;
    assert_eq!(readings.len(), 2);
    w.click("#nav-consents").await;
    w.refresh_until(
        "data flowing",
        "#check-updates",
        "li.card .detail",
        "Your meter is sending the data.",
    )
    .await;
    w.shot("06-data-flowing").await;

    // 7. Withdraw (and ask for erasure): the provider is told, the meter changes the key.
    w.click("li.card .confirm-open").await;
    w.click("li.card input[type=checkbox]").await;
    w.click("li.card button.danger").await;
    w.wait_message("the withdrawal", "no longer receives").await;
    prov.wait("the revocation", |e| {
        matches!(e, ProviderEvent::Revoked { consent: c, erase_requested: true } if *c == consent)
    })
    .await;
    w.refresh_until(
        "the key change",
        "#check-updates",
        "li.card .key-changed",
        "changed its data key",
    )
    .await;
    w.wait_text("the withdrawn badge", "li.card .badge", |t| {
        t == "Withdrawn"
    })
    .await;
    w.shot("07-withdrawn-key-changed").await;
    world
}

/// A new device restores the wallet from the kit: keys into its keyring, the state from the
/// signed logs.
async fn restore(w: Window, kit: PathBuf, data: PathBuf, broker: String) {
    w.wait_text("the welcome page", "#page-title", |t| t == "Welcome")
        .await;
    w.type_into("#restore-path", &kit.display().to_string())
        .await;
    w.type_into("#restore-pass", "a long passphrase").await;
    // The kit was saved at first start, before the pairing taught the wallet its broker.
    w.type_into("#restore-broker", &broker).await;
    w.click("#restore").await;
    w.wait_message("the restore", "Your wallet is restored")
        .await;
    keyring::Entry::new(SERVICE, &format!("{}/{SIGNING_SECRET}", data.display()))
        .expect("keyring entry")
        .get_secret()
        .expect("the restored owner key is in gnome-keyring");
    w.wait_text("the withdrawn consent", "li.card .badge", |t| {
        t == "Withdrawn"
    })
    .await;
    w.wait_text("the key change", "li.card .key-changed", |t| {
        t.contains("changed its data key")
    })
    .await;
    w.shot("08-restored-on-another-device").await;

    // The real camera path in WebKitGTK, with WebKit's mock camera: getUserMedia, the preview
    // and frame reading without any replacement. (WebKit grants its mock devices without
    // asking, so this does not reach the app's permission handler; a unit test covers its
    // decision.)
    w.click("#nav-pair").await;
    w.click("#camera-start").await;
    wait_js(&w, "the mock camera's preview", "(() => { const v = document.querySelector('#camera-preview'); return v.readyState >= 2 && v.videoWidth > 0 && getComputedStyle(v).display !== 'none'; })()").await;
    w.wait_text("the mock camera looking", "#camera-status", |t| {
        t.starts_with("Looking for the QR code") || t.starts_with("Still looking")
    })
    .await;
    w.shot("09-camera-webkit-mock-device").await;
    let tracks = fake_camera_state(&w, "document.querySelector('#camera-preview').srcObject.getTracks().map(t => t.kind + ':' + t.readyState).join(',')").await;
    assert_eq!(tracks, "video:live", "one live video track, no audio");
    w.click("#camera-stop").await;
    wait_js(&w, "the mock camera stopped", "document.querySelector('#camera-preview').srcObject.getTracks().every(t => t.readyState === 'ended')").await;
    w.wait_text("the camera off", "#camera-status", str::is_empty)
        .await;
}
