//! The Pair page's camera: reads the meter's pairing QR code live.
//!
//! - Desktop: a preview of the camera (`navigator.mediaDevices.getUserMedia`, video only, the
//!   camera facing away from the owner preferred). About three times a second a frame is
//!   scaled down to at most [`MAX_SIDE`] pixels per side, turned to greyscale and sent as raw
//!   bytes to the app's `scan_frame` command, which decodes it with the shared QR code. The
//!   first meter pairing code stops the camera and is handed to the page, which pairs with it
//!   exactly as with a pasted link.
//! - Android and iOS: the system's barcode scanner (Tauri's barcode-scanner plugin,
//!   `plugin:barcode-scanner|scan`).
//!
//! One camera at a time: the running one is kept here ([`ACTIVE`]) and every way off the page
//! (Stop, a code found, leaving the page) stops its tracks.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::Duration,
};

use leptos::{
    leptos_dom::helpers::{IntervalHandle, set_interval_with_handle},
    prelude::*,
    task::spawn_local,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, prelude::*};

use crate::api::call;

/// Frames are scaled down to at most this many pixels on their longer side.
pub const MAX_SIDE: u32 = 640;
/// How often a frame is read.
const FRAME_EVERY: Duration = Duration::from_millis(300);
/// After this many frames without a code the page says it is still looking, with advice.
const STILL_LOOKING_AFTER: u32 = 20;
/// Headers of `scan_frame` (as in the app's `FRAME_WIDTH_HEADER`, `FRAME_HEIGHT_HEADER`).
const WIDTH_HEADER: &str = "p1c-frame-width";
const HEIGHT_HEADER: &str = "p1c-frame-height";

#[wasm_bindgen]
extern "C" {
    /// `invoke(cmd, body, {headers})` with a raw body (no JSON).
    #[wasm_bindgen(catch, js_namespace = ["window", "__TAURI__", "core"], js_name = invoke)]
    async fn tauri_invoke_raw(
        cmd: &str,
        body: js_sys::Uint8Array,
        options: JsValue,
    ) -> Result<JsValue, JsValue>;
}

/// What the app read in one frame (`scan_frame`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum FrameScan {
    Nothing,
    Other,
    Pairing { code: String },
}

/// Where the camera is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CamState {
    Off,
    Starting,
    /// Frames read so far without a pairing code.
    Looking(u32),
    /// The last code seen is not a pairing code.
    OtherCode,
    Found,
    Failed(String),
}

impl CamState {
    /// The sentence shown under the preview.
    pub fn text(&self) -> String {
        match self {
            CamState::Off => String::new(),
            CamState::Starting => "Opening the camera…".into(),
            CamState::Looking(n) if *n >= STILL_LOOKING_AFTER => "Still looking for a QR code: \
                hold it steady, about 20 cm from the camera, in good light."
                .into(),
            CamState::Looking(_) => {
                "Looking for the QR code: hold it in front of the camera.".into()
            }
            CamState::OtherCode => {
                "That QR code is not a meter's pairing code. Still looking…".into()
            }
            CamState::Found => "Found the meter's pairing code.".into(),
            CamState::Failed(why) => why.clone(),
        }
    }

    fn running(&self) -> bool {
        matches!(
            self,
            CamState::Starting | CamState::Looking(_) | CamState::OtherCode
        )
    }
}

/// The running camera: its stream and the timer that reads frames.
struct Running {
    stream: web_sys::MediaStream,
    timer: Option<IntervalHandle>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Running>> = const { RefCell::new(None) };
    /// Changes at every start and stop: an answer that arrives for an older camera (the
    /// permission prompt answered after the owner left, a frame decoded after a stop) is
    /// dropped.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

fn generation() -> u64 {
    GENERATION.with(Cell::get)
}

fn next_generation() -> u64 {
    GENERATION.with(|g| {
        g.set(g.get().wrapping_add(1));
        g.get()
    })
}

fn stop_tracks(stream: &web_sys::MediaStream) {
    for track in stream.get_tracks().iter() {
        if let Ok(t) = track.dyn_into::<web_sys::MediaStreamTrack>() {
            t.stop();
        }
    }
}

/// Stops the camera (every track) and the frame timer, if any. Safe to call at any time.
pub fn stop_camera() {
    next_generation();
    if let Some(r) = ACTIVE.with(|a| a.borrow_mut().take()) {
        if let Some(t) = r.timer {
            t.clear();
        }
        stop_tracks(&r.stream);
    }
}

/// True on Android and iOS (also iPadOS, which calls itself a Mac with a touch screen).
pub fn is_mobile() -> bool {
    let Some(nav) = web_sys::window().map(|w| w.navigator()) else {
        return false;
    };
    let ua = nav.user_agent().unwrap_or_default();
    ua.contains("Android")
        || ua.contains("iPhone")
        || ua.contains("iPad")
        || ua.contains("iPod")
        || (ua.contains("Macintosh") && nav.max_touch_points() > 1)
}

fn prop(v: &JsValue, name: &str) -> Option<JsValue> {
    js_sys::Reflect::get(v, &JsValue::from_str(name))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// The owner-facing sentence for a failed `getUserMedia` (its DOMException's name).
pub fn camera_error(name: &str, message: &str) -> String {
    match name {
        "NotAllowedError" | "SecurityError" | "PermissionDeniedError" => {
            "The camera permission was refused. Allow the camera for P1 Consent, or paste the \
             link or choose a picture of the QR code instead."
                .into()
        }
        "NotFoundError" | "DevicesNotFoundError" | "OverconstrainedError" => {
            "No camera found on this device. Paste the link or choose a picture of the QR code \
             instead."
                .into()
        }
        "NotReadableError" | "TrackStartError" | "AbortError" => {
            "The camera is in use by another program or could not be started.".into()
        }
        _ => format!("The camera could not be started ({name}: {message})."),
    }
}

/// `{ video: { facingMode: { ideal: "environment" } }, audio: false }`
fn constraints() -> JsValue {
    let facing = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&facing, &"ideal".into(), &"environment".into());
    let video = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&video, &"facingMode".into(), &facing);
    let c = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&c, &"video".into(), &video);
    let _ = js_sys::Reflect::set(&c, &"audio".into(), &JsValue::FALSE);
    c.into()
}

/// Asks for the camera. Errors are the sentence to show.
async fn open_stream() -> Result<web_sys::MediaStream, String> {
    let nav: JsValue = web_sys::window()
        .ok_or_else(|| "no window".to_string())?
        .navigator()
        .into();
    let no_camera = || {
        "No camera found on this device (this window offers none). Paste the link or choose a \
         picture of the QR code instead."
            .to_string()
    };
    let devices = prop(&nav, "mediaDevices").ok_or_else(no_camera)?;
    let get = prop(&devices, "getUserMedia")
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(no_camera)?;
    let promise = get
        .call1(&devices, &constraints())
        .map_err(|e| describe(&e))?
        .dyn_into::<js_sys::Promise>()
        .map_err(|_| "the camera did not answer".to_string())?;
    let stream = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(|e| describe(&e))?;
    stream
        .dyn_into::<web_sys::MediaStream>()
        .map_err(|_| "the camera gave no video".to_string())
}

fn describe(e: &JsValue) -> String {
    let name = prop(e, "name")
        .and_then(|n| n.as_string())
        .unwrap_or_default();
    let message = prop(e, "message")
        .and_then(|n| n.as_string())
        .or_else(|| e.as_string())
        .unwrap_or_default();
    camera_error(&name, &message)
}

/// Rec. 601 luma of RGBA pixels, one byte per pixel.
pub fn rgba_to_luma(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .map(|p| {
            let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
            // Weights sum to 1000: the result is at most 255.
            u8::try_from((299 * r + 587 * g + 114 * b) / 1000).unwrap_or(u8::MAX)
        })
        .collect()
}

/// The size a `w` × `h` frame is scaled to (longer side at most [`MAX_SIDE`], never 0).
pub fn scaled(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h).max(1);
    if long <= MAX_SIDE {
        return (w.max(1), h.max(1));
    }
    let s = |v: u32| (u64::from(v) * u64::from(MAX_SIDE) / u64::from(long)).max(1) as u32;
    (s(w), s(h))
}

/// The current video frame, scaled down, as greyscale: (width, height, luma).
fn grab(
    video: &web_sys::HtmlVideoElement,
    canvas: &web_sys::HtmlCanvasElement,
) -> Option<(u32, u32, Vec<u8>)> {
    // HAVE_CURRENT_DATA: a frame is there to draw.
    if video.ready_state() < 2 || video.video_width() == 0 || video.video_height() == 0 {
        return None;
    }
    let (w, h) = scaled(video.video_width(), video.video_height());
    canvas.set_width(w);
    canvas.set_height(h);
    let opts = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&opts, &"willReadFrequently".into(), &JsValue::TRUE);
    let ctx = canvas
        .get_context_with_context_options("2d", &opts)
        .ok()??
        .dyn_into::<web_sys::CanvasRenderingContext2d>()
        .ok()?;
    ctx.draw_image_with_html_video_element_and_dw_and_dh(video, 0.0, 0.0, w.into(), h.into())
        .ok()?;
    let data = ctx
        .get_image_data(0.0, 0.0, w.into(), h.into())
        .ok()?
        .data();
    Some((w, h, rgba_to_luma(&data)))
}

/// Sends one frame to the app.
async fn scan(width: u32, height: u32, luma: &[u8]) -> Result<FrameScan, String> {
    let headers = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&headers, &WIDTH_HEADER.into(), &width.to_string().into());
    let _ = js_sys::Reflect::set(&headers, &HEIGHT_HEADER.into(), &height.to_string().into());
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"headers".into(), &headers);
    let body = js_sys::Uint8Array::from(luma);
    match tauri_invoke_raw("scan_frame", body, options.into()).await {
        Ok(v) => serde_wasm_bindgen::from_value(v).map_err(|e| e.to_string()),
        Err(e) => Err(e
            .as_string()
            .unwrap_or_else(|| "the app did not answer".to_string())),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScanOptions {
    formats: Vec<&'static str>,
    windowed: bool,
    camera_direction: &'static str,
}

#[derive(Deserialize)]
struct Scanned {
    content: String,
}

/// Android and iOS: the system scanner (full screen) reads one code.
async fn scan_mobile(state: RwSignal<CamState>, on_code: Callback<String>) {
    state.set(CamState::Starting);
    let opts = ScanOptions {
        formats: vec!["QR_CODE"],
        windowed: false,
        camera_direction: "back",
    };
    match call::<Scanned>("plugin:barcode-scanner|scan", opts).await {
        Ok(s) if s.content.trim().starts_with("p1consent://pair?") => {
            state.try_set(CamState::Found);
            on_code.run(s.content.trim().to_string());
        }
        Ok(_) => {
            state.try_set(CamState::Failed(
                "That QR code is not a meter's pairing code. Try again with the code your meter \
                 reader shows."
                    .into(),
            ));
        }
        Err(e) => {
            state.try_set(CamState::Failed(format!(
                "The camera could not read a code: {e}"
            )));
        }
    }
}

/// Desktop: opens the camera into `video` and reads frames until a pairing code is found.
async fn scan_desktop(
    video: web_sys::HtmlVideoElement,
    state: RwSignal<CamState>,
    on_code: Callback<String>,
) {
    stop_camera();
    let gen_at_start = next_generation();
    state.set(CamState::Starting);
    let stream = match open_stream().await {
        Ok(s) => s,
        Err(why) => {
            if generation() == gen_at_start {
                state.set(CamState::Failed(why));
            }
            return;
        }
    };
    if generation() != gen_at_start {
        // Stopped, or the page was left, while the camera was being opened.
        stop_tracks(&stream);
        return;
    }
    video.set_muted(true);
    video.set_autoplay(true);
    let _ = video.set_attribute("playsinline", "");
    video.set_src_object(Some(&stream));
    if let Ok(p) = video.play() {
        // A refused autoplay still leaves frames to read once data is there.
        let _ = wasm_bindgen_futures::JsFuture::from(p).await;
    }
    if generation() != gen_at_start {
        stop_tracks(&stream);
        return;
    }
    let Some(canvas) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.create_element("canvas").ok())
        .and_then(|c| c.dyn_into::<web_sys::HtmlCanvasElement>().ok())
    else {
        stop_tracks(&stream);
        state.set(CamState::Failed(
            "the camera preview could not be read".into(),
        ));
        return;
    };
    state.set(CamState::Looking(0));
    let in_flight = Rc::new(Cell::new(false));
    let frames = Rc::new(Cell::new(0u32));
    let tick = move || {
        if in_flight.get() || generation() != gen_at_start {
            return;
        }
        let Some((w, h, luma)) = grab(&video, &canvas) else {
            return;
        };
        in_flight.set(true);
        let (in_flight, frames) = (in_flight.clone(), frames.clone());
        spawn_local(async move {
            let r = scan(w, h, &luma).await;
            in_flight.set(false);
            if generation() != gen_at_start {
                return;
            }
            match r {
                Ok(FrameScan::Pairing { code }) => {
                    stop_camera();
                    state.set(CamState::Found);
                    on_code.run(code);
                }
                Ok(FrameScan::Other) => state.set(CamState::OtherCode),
                Ok(FrameScan::Nothing) => {
                    frames.set(frames.get().saturating_add(1));
                    state.set(CamState::Looking(frames.get()));
                }
                Err(e) => {
                    stop_camera();
                    state.set(CamState::Failed(format!(
                        "The camera picture could not be read: {e}"
                    )));
                }
            }
        });
    };
    let timer = set_interval_with_handle(tick, FRAME_EVERY).ok();
    ACTIVE.with(|a| *a.borrow_mut() = Some(Running { stream, timer }));
}

/// "Scan with the camera", the live preview, "Stop", and what the camera is doing.
/// `on_code` gets the first meter pairing code read; `busy` disables the start button.
#[component]
pub fn CameraScan(on_code: Callback<String>, busy: RwSignal<bool>) -> impl IntoView {
    let state = RwSignal::new(CamState::Off);
    let video = NodeRef::<leptos::html::Video>::new();
    // Leaving the page (or anything that removes this part) stops the camera.
    on_cleanup(stop_camera);
    let start = move |_| {
        if is_mobile() {
            spawn_local(scan_mobile(state, on_code));
            return;
        }
        let Some(v) = video.get_untracked() else {
            return;
        };
        spawn_local(scan_desktop(v, state, on_code));
    };
    let stop = move |_| {
        stop_camera();
        state.set(CamState::Off);
    };
    let running = move || state.with(CamState::running);
    view! {
        <div class="camera">
            <button id="camera-start" on:click=start disabled=move || busy.get() || running()>
                "Scan with the camera"
            </button>
            <button id="camera-stop" on:click=stop hidden=move || !running()>
                "Stop"
            </button>
            <video
                id="camera-preview"
                node_ref=video
                aria-label="Camera preview"
                style=move || {
                    let shown = if running() && !is_mobile() { "block" } else { "none" };
                    format!("display: {shown}; max-width: 100%; max-height: 50vh; background: #000;")
                }
            ></video>
            <p id="camera-status" role="status">
                {move || state.with(CamState::text)}
            </p>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_scaled_to_at_most_640_pixels() {
        assert_eq!(scaled(1920, 1080), (640, 360));
        assert_eq!(scaled(1080, 1920), (360, 640));
        assert_eq!(scaled(640, 480), (640, 480));
        assert_eq!(scaled(320, 240), (320, 240));
        assert_eq!(scaled(0, 0), (1, 1));
        assert_eq!(scaled(100_000, 1), (640, 1));
    }

    #[test]
    fn luma_weights() {
        assert_eq!(
            rgba_to_luma(&[
                255, 255, 255, 255, 0, 0, 0, 255, 255, 0, 0, 255, 0, 255, 0, 0
            ]),
            vec![255, 0, 76, 149]
        );
        // A cut pixel at the end is ignored.
        assert_eq!(rgba_to_luma(&[10, 10, 10, 255, 1, 2]), vec![10]);
    }

    #[test]
    fn camera_errors_in_words() {
        assert!(camera_error("NotAllowedError", "").contains("permission was refused"));
        assert!(camera_error("NotFoundError", "").contains("No camera found"));
        assert!(camera_error("NotReadableError", "").contains("in use"));
        assert_eq!(
            camera_error("TypeError", "bad"),
            "The camera could not be started (TypeError: bad)."
        );
        assert!(
            CamState::Looking(STILL_LOOKING_AFTER)
                .text()
                .starts_with("Still looking")
        );
        assert!(CamState::Looking(0).text().starts_with("Looking"));
    }
}
