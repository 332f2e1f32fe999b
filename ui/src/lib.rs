//! The P1 Consent wallet's window: Leptos (client-side rendering) compiled to wasm.
//!
//! Pages: Welcome (create the identity, or restore it from a recovery kit), Pair, Devices,
//! Request review, Consents, Audit, Settings (recovery kit).
//! Every action is a command of the app ([`api::call`]); the UI never sees a key.

pub mod api;
pub mod camera;

use leptos::{prelude::*, task::spawn_local};

use camera::CameraScan;

use api::{
    Audit, ConsentList, Device, NoArgs, OwnUsage, Paired, Request, RestoreReport, Status, call,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Welcome,
    Pair,
    Devices,
    Request,
    Consents,
    Audit,
    Settings,
}

impl Page {
    pub fn title(self) -> &'static str {
        match self {
            Page::Welcome => "Welcome",
            Page::Pair => "Pair a meter",
            Page::Devices => "Your meters",
            Page::Request => "Requests",
            Page::Consents => "Who has access",
            Page::Audit => "Check the records",
            Page::Settings => "Settings",
        }
    }

    /// Stable element id of the page's navigation button.
    pub fn nav_id(self) -> &'static str {
        match self {
            Page::Welcome => "nav-welcome",
            Page::Pair => "nav-pair",
            Page::Devices => "nav-devices",
            Page::Request => "nav-requests",
            Page::Consents => "nav-consents",
            Page::Audit => "nav-audit",
            Page::Settings => "nav-settings",
        }
    }
}

/// What every page can reach: the page shown, the app's status, the last message.
#[derive(Clone, Copy)]
struct Ctx {
    page: RwSignal<Page>,
    status: RwSignal<Status>,
    /// (is_error, text) shown in a live region.
    message: RwSignal<Option<(bool, String)>>,
    /// A request link waiting to be reviewed (typed, pasted or opened from a web page).
    link: RwSignal<String>,
}

impl Ctx {
    fn ok(&self, text: impl Into<String>) {
        self.message.set(Some((false, text.into())));
    }
    fn fail(&self, text: impl Into<String>) {
        self.message.set(Some((true, text.into())));
    }
    fn go(&self, page: Page) {
        self.message.set(None);
        self.page.set(page);
    }
    fn refresh_status(self) {
        spawn_local(async move {
            if let Ok(s) = call::<Status>("status", NoArgs {}).await {
                self.status.set(s);
            }
        });
    }
}

/// Routes a `p1consent://` link: pairing codes to Pair, requests to Request review.
fn route_link(ctx: Ctx, url: String) {
    ctx.link.set(url.clone());
    if url.starts_with("p1consent://pair") {
        ctx.go(Page::Pair);
    } else {
        ctx.go(Page::Request);
    }
}

#[derive(serde::Serialize)]
struct LinkArgs {
    link: String,
}
#[derive(serde::Serialize)]
struct CodeArgs {
    code: String,
}
#[derive(serde::Serialize)]
struct ImageArgs {
    image: Vec<u8>,
}
#[derive(serde::Serialize)]
struct BrokerArgs {
    broker: Option<String>,
}
#[derive(serde::Serialize)]
struct GrantArgs {
    request: String,
    device: String,
}
#[derive(serde::Serialize)]
struct RequestArgs {
    request: String,
}
#[derive(serde::Serialize)]
struct RefreshArgs {
    refresh: bool,
}
#[derive(serde::Serialize)]
struct UsageArgs {
    device: String,
    since: u64,
}
#[derive(serde::Serialize)]
struct OwnExportArgs {
    device: String,
    format: String,
    path: String,
}
#[derive(serde::Serialize)]
struct ExportArgs {
    passphrase: String,
    path: String,
}
#[derive(serde::Serialize)]
struct ImportArgs {
    path: String,
    passphrase: String,
    broker: Option<String>,
}
#[derive(serde::Serialize)]
struct RevokeArgs {
    consent: String,
    erase: bool,
}

#[component]
pub fn App() -> impl IntoView {
    let ctx = Ctx {
        page: RwSignal::new(Page::Welcome),
        status: RwSignal::new(Status::default()),
        message: RwSignal::new(None),
        link: RwSignal::new(String::new()),
    };
    provide_context(ctx);
    spawn_local(async move {
        if let Ok(s) = call::<Status>("status", NoArgs {}).await {
            let initialised = s.initialised;
            ctx.status.set(s);
            if initialised {
                ctx.page.set(Page::Consents);
            }
        }
        if let Ok(Some(url)) = call::<Option<String>>("take_pending_link", NoArgs {}).await {
            route_link(ctx, url);
        }
        api::on_link(move |url| route_link(ctx, url)).await;
    });

    let nav = move |p: Page| {
        view! {
            <li>
                <button
                    id=p.nav_id()
                    class="nav"
                    aria-current=move || (ctx.page.get() == p).then_some("page")
                    disabled=move || !ctx.status.get().initialised && p != Page::Welcome
                    on:click=move |_| ctx.go(p)
                >
                    {p.title()}
                </button>
            </li>
        }
    };

    view! {
        <header>
            <h1>"P1 Consent"</h1>
            <nav aria-label="Main">
                <ul>
                    {nav(Page::Welcome)}
                    {nav(Page::Pair)}
                    {nav(Page::Devices)}
                    {nav(Page::Request)}
                    {nav(Page::Consents)}
                    {nav(Page::Audit)}
                    {nav(Page::Settings)}
                </ul>
            </nav>
        </header>
        <div id="message" role="status" aria-live="polite">
            {move || {
                ctx.message
                    .get()
                    .map(|(err, text)| {
                        view! {
                            <p class=if err { "error" } else { "ok" } role=err.then_some("alert")>
                                {text}
                            </p>
                        }
                    })
            }}
        </div>
        <main>
            <h2 id="page-title">{move || ctx.page.get().title()}</h2>
            {move || match ctx.page.get() {
                Page::Welcome => view! { <Welcome /> }.into_any(),
                Page::Pair => view! { <PairPage /> }.into_any(),
                Page::Devices => view! { <Devices /> }.into_any(),
                Page::Request => view! { <RequestPage /> }.into_any(),
                Page::Consents => view! { <Consents /> }.into_any(),
                Page::Audit => view! { <AuditPage /> }.into_any(),
                Page::Settings => view! { <SettingsPage /> }.into_any(),
            }}
        </main>
    }
}

fn ctx() -> Ctx {
    expect_context::<Ctx>()
}

#[component]
fn Welcome() -> impl IntoView {
    let ctx = ctx();
    let broker = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let create = move |_| {
        busy.set(true);
        let b = broker.get_untracked();
        spawn_local(async move {
            match call::<Status>("create_identity", BrokerArgs { broker: Some(b) }).await {
                Ok(s) => {
                    ctx.status.set(s);
                    // First start: offer the recovery kit before anything else.
                    ctx.go(Page::Settings);
                    ctx.ok(
                        "Your identity is ready. Save a recovery kit now, so you can restore \
                         this wallet on another device. Then pair your meter.",
                    );
                }
                Err(e) => ctx.fail(e),
            }
            busy.set(false);
        });
    };
    // Only the set-up state chooses the form: a status update while the owner types into
    // the restore form must not rebuild it (that emptied the fields).
    let initialised = Memo::new(move |_| ctx.status.get().initialised);
    view! {
        {move || {
            if initialised.get() {
                view! { <WalletSummary /> }.into_any()
            } else {
                view! {
                    <p>
                        "This wallet decides who may read your smart meter. First it creates your "
                        "identity: a private key that stays on this computer, in the system keyring."
                    </p>
                    <label for="broker">"Message server address (optional, usually taken from your meter's pairing code)"</label>
                    <input
                        id="broker"
                        type="text"
                        placeholder="mqtts://broker.example:8883"
                        prop:value=move || broker.get()
                        on:input=move |ev| broker.set(event_target_value(&ev))
                    />
                    <button id="create-identity" on:click=create disabled=move || busy.get()>
                        "Create my identity"
                    </button>
                    <h3>"Moving from another device?"</h3>
                    <p>"If you saved a recovery kit on your other device, restore your wallet from it."</p>
                    <KitRestore />
                }
                    .into_any()
            }
        }}
    }
}

/// What a set-up wallet shows on its Welcome page; follows the status as it changes.
#[component]
fn WalletSummary() -> impl IntoView {
    let ctx = ctx();
    move || {
        let s = ctx.status.get();
        view! {
            <p>"This wallet is set up."</p>
            <dl>
                <dt>"Your owner key"</dt>
                <dd class="mono">{s.owner.clone().unwrap_or_default()}</dd>
                <dt>"Keys are kept in"</dt>
                <dd>
                    {if s.secret_store == "keyring" {
                        "the system keyring".to_string()
                    } else {
                        format!("a file in {}", s.data_dir)
                    }}
                </dd>
                <dt>"Paired meters"</dt>
                <dd>{s.devices}</dd>
                <dt>"Requests waiting for an answer"</dt>
                <dd>{s.pending_requests}</dd>
            </dl>
        }
    }
}

#[component]
fn PairPage() -> impl IntoView {
    let ctx = ctx();
    let busy = RwSignal::new(false);
    let code = RwSignal::new(
        if ctx.link.get_untracked().starts_with("p1consent://pair") {
            ctx.link.get_untracked()
        } else {
            String::new()
        },
    );
    let done = move |r: Result<Paired, String>| {
        match r {
            Ok(p) => {
                let name = if p.label.is_empty() {
                    "your meter".to_string()
                } else {
                    p.label
                };
                match p.own_view_note {
                    Some(note) => ctx.ok(format!("{note} The app tries again by itself.")),
                    None => ctx.ok(format!("Paired with {name}.")),
                }
                ctx.refresh_status();
                ctx.page.set(Page::Devices);
            }
            Err(e) => ctx.fail(format!("Pairing did not work: {e}")),
        }
        busy.set(false);
    };
    let pair_code = move |c: String| {
        busy.set(true);
        ctx.ok("Pairing… this can take up to 20 seconds.");
        spawn_local(async move { done(call::<Paired>("pair", CodeArgs { code: c }).await) });
    };
    let pair_text = move |_| pair_code(code.get_untracked());
    // The camera's code goes the paste path: shown in the field, then paired.
    let scanned = Callback::new(move |c: String| {
        code.set(c.clone());
        pair_code(c);
    });
    let pair_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        busy.set(true);
        ctx.ok("Reading the picture and pairing… this can take up to 20 seconds.");
        spawn_local(async move {
            let r = match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
                Ok(buf) => {
                    let image = js_sys::Uint8Array::new(&buf).to_vec();
                    call::<Paired>("pair_image", ImageArgs { image }).await
                }
                Err(_) => Err("the file could not be read".to_string()),
            };
            done(r);
        });
    };
    view! {
        <p>"Your meter reader shows a pairing code: a QR code and a link starting with p1consent://pair."</p>
        <CameraScan on_code=scanned busy=busy />
        <label for="pair-code">"Or paste the pairing link"</label>
        <textarea
            id="pair-code"
            rows="3"
            prop:value=move || code.get()
            on:input=move |ev| code.set(event_target_value(&ev))
        ></textarea>
        <button id="pair-button" on:click=pair_text disabled=move || busy.get() || code.get().trim().is_empty()>
            "Pair with this code"
        </button>
        <p>"Or choose a photo or screenshot of the QR code:"</p>
        <label for="pair-image">"Picture of the pairing QR code"</label>
        <input id="pair-image" type="file" accept="image/png,image/jpeg" on:change=pair_file disabled=move || busy.get() />
    }
}

#[component]
fn Devices() -> impl IntoView {
    let ctx = ctx();
    let list = RwSignal::new(None::<Vec<Device>>);
    spawn_local(async move {
        match call::<Vec<Device>>("devices", NoArgs {}).await {
            Ok(d) => list.set(Some(d)),
            Err(e) => ctx.fail(e),
        }
    });
    view! {
        {move || match list.get() {
            None => view! { <p>"Loading…"</p> }.into_any(),
            Some(d) if d.is_empty() => {
                view! {
                    <p>"No meter is paired yet."</p>
                    <button on:click=move |_| ctx.go(Page::Pair)>"Pair a meter"</button>
                }
                    .into_any()
            }
            Some(d) => {
                view! {
                    <ul class="cards" aria-label="Paired meters">
                        {d
                            .into_iter()
                            .map(|d| {
                                let name = if d.label.is_empty() { "Meter".to_string() } else { d.label.clone() };
                                view! {
                                    <li>
                                        <h3>{name}</h3>
                                        <p>
                                            {if d.paired {
                                                format!("Paired since {}", d.paired_at)
                                            } else {
                                                "No longer paired".to_string()
                                            }}
                                        </p>
                                        <p class="mono" title=d.device.clone()>
                                            "Meter id " {short(&d.device_id)}
                                        </p>
                                        {d.paired.then(|| view! { <MeterUse device=d.device_id.clone() /> })}
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                }
                    .into_any()
            }
        }}
    }
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

#[component]
fn RequestCard(req: Request, devices: Vec<Device>, on_done: Callback<()>) -> impl IntoView {
    let ctx = ctx();
    let busy = RwSignal::new(false);
    let paired: Vec<Device> = devices.into_iter().filter(|d| d.paired).collect();
    let device = RwSignal::new(
        paired
            .first()
            .map(|d| d.device_id.clone())
            .unwrap_or_default(),
    );
    let rid = req.request_id.clone();
    let rid2 = req.request_id.clone();
    let who = req.controller.clone();
    let who2 = req.controller.clone();
    let approve = move |_| {
        busy.set(true);
        ctx.ok("Sending your permission… this can take up to 20 seconds.");
        let args = GrantArgs {
            request: rid.clone(),
            device: device.get_untracked(),
        };
        let who = who.clone();
        spawn_local(async move {
            match call::<String>("grant", args).await {
                Ok(_) => {
                    ctx.ok(format!("{who} may now receive the data you approved."));
                    on_done.run(());
                }
                Err(e) => ctx.fail(format!("Approving did not work: {e}")),
            }
            busy.set(false);
        });
    };
    let decline = move |_| {
        busy.set(true);
        let args = RequestArgs {
            request: rid2.clone(),
        };
        let who = who2.clone();
        spawn_local(async move {
            match call::<Request>("decline", args).await {
                Ok(_) => {
                    ctx.ok(format!("You declined. {who} receives nothing."));
                    on_done.run(());
                }
                Err(e) => ctx.fail(e),
            }
            busy.set(false);
        });
    };
    let select_id = format!("device-{}", short(&req.request_id));
    let no_device = paired.is_empty();
    view! {
        <article class="card" aria-label=format!("Request from {}", req.controller)>
            <h3>{format!("{} asks to receive data from your smart meter", req.controller)}</h3>
            <dl>
                <dt>"Who"</dt>
                <dd>{format!("{} ({})", req.controller, req.contact)}</dd>
                <dt>"Why"</dt>
                <dd>{req.purpose.clone()}</dd>
                <dt>"What they would receive"</dt>
                <dd>
                    <ul>
                        {req
                            .fields
                            .iter()
                            .map(|f| view! { <li title=f.name.clone()>{f.description.clone()}</li> })
                            .collect_view()}
                    </ul>
                </dd>
                <dt>"How detailed"</dt>
                <dd>{req.resolution_description.clone()}</dd>
                <dt>"How long they keep it"</dt>
                <dd>{req.retention.clone()}</dd>
                <dt>"Access ends"</dt>
                <dd>{format!("{} (unless you withdraw it earlier)", req.consent_expires)}</dd>
                <dt>"Law that applies"</dt>
                <dd>{req.jurisdiction.clone()}</dd>
                {req
                    .policy_url
                    .clone()
                    .map(|p| view! { <dt>"Privacy policy"</dt> <dd>{p}</dd> })}
                <dt>"Answer before"</dt>
                <dd>{req.link_expires.clone()}</dd>
            </dl>
            {if no_device {
                view! { <p>"Pair a meter first: access is given for one meter."</p> }.into_any()
            } else {
                view! {
                    <label for=select_id.clone()>"Which meter"</label>
                    <select id=select_id on:change=move |ev| device.set(event_target_value(&ev))>
                        {paired
                            .iter()
                            .map(|d| {
                                let name = if d.label.is_empty() { short(&d.device_id) } else { d.label.clone() };
                                view! { <option value=d.device_id.clone()>{name}</option> }
                            })
                            .collect_view()}
                    </select>
                }
                    .into_any()
            }}
            <div class="actions">
                <button class="primary" on:click=approve disabled=move || busy.get() || no_device>
                    "Approve"
                </button>
                <button on:click=decline disabled=move || busy.get()>"Decline"</button>
            </div>
        </article>
    }
}

#[component]
fn RequestPage() -> impl IntoView {
    let ctx = ctx();
    let pending = RwSignal::new(Vec::<Request>::new());
    let devices = RwSignal::new(Vec::<Device>::new());
    let load = move || {
        spawn_local(async move {
            if let Ok(d) = call::<Vec<Device>>("devices", NoArgs {}).await {
                devices.set(d);
            }
            match call::<Vec<Request>>("pending_requests", NoArgs {}).await {
                Ok(p) => pending.set(p),
                Err(e) => ctx.fail(e),
            }
            ctx.refresh_status();
        });
    };
    // What the owner types or pastes; checked when they press the button (checking while
    // they type would judge half a link). A link opened from a web page arrives in ctx.link.
    let typed = RwSignal::new(String::new());
    let check = move |link: String| {
        if link.trim().is_empty() {
            return;
        }
        spawn_local(async move {
            match call::<Request>("open_request", LinkArgs { link }).await {
                Ok(r) => {
                    typed.set(String::new());
                    ctx.ok(format!(
                        "The request from {} is genuine. Review it below.",
                        r.controller
                    ));
                    load();
                }
                Err(e) => ctx.fail(format!(
                    "This request cannot be used: {e}. Ask the provider for a new link."
                )),
            }
        });
    };
    load();
    // A link opened from a web page (or passed at start) is checked straight away, once.
    Effect::new(move |_| {
        let link = ctx.link.get();
        if link.starts_with("p1consent://request") {
            ctx.link.set(String::new());
            check(link);
        }
    });
    let on_done = Callback::new(move |_| load());
    view! {
        <p>"A provider's web page gives you a link starting with p1consent://request. It opens here, or paste it:"</p>
        <label for="request-link">"Request link"</label>
        <textarea
            id="request-link"
            rows="3"
            prop:value=move || typed.get()
            on:input=move |ev| typed.set(event_target_value(&ev))
        ></textarea>
        <button id="check-request" on:click=move |_| check(typed.get_untracked())>
            "Check this request"
        </button>
        <h3>"Waiting for your answer"</h3>
        {move || {
            let p = pending.get();
            if p.is_empty() {
                view! { <p>"No request is waiting."</p> }.into_any()
            } else {
                let d = devices.get();
                p.into_iter()
                    .map(|r| view! { <RequestCard req=r devices=d.clone() on_done=on_done /> })
                    .collect_view()
                    .into_any()
            }
        }}
    }
}

fn status_words(s: &str) -> &'static str {
    match s {
        "active" => "Active",
        "expired" => "Expired",
        "withdrawn" => "Withdrawn",
        _ => "Unknown",
    }
}

#[component]
fn ConsentCard(c: api::Consent, on_done: Callback<()>) -> impl IntoView {
    let ctx = ctx();
    let confirming = RwSignal::new(false);
    let erase = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let id = c.consent_id.clone();
    let who = c.controller.clone();
    let revoke = move |_| {
        busy.set(true);
        let args = RevokeArgs {
            consent: id.clone(),
            erase: erase.get_untracked(),
        };
        let who = who.clone();
        spawn_local(async move {
            match call::<String>("revoke", args).await {
                Ok(_) => {
                    ctx.ok(format!("{who} no longer receives your data."));
                    on_done.run(());
                }
                Err(e) => ctx.fail(format!("Withdrawing did not work: {e}")),
            }
            busy.set(false);
            confirming.set(false);
        });
    };
    let active = c.status == "active";
    let erase_id = format!("erase-{}", short(&c.consent_id));
    let detail = match (c.status.as_str(), c.key_delivered_epoch) {
        ("active", Some(_)) => "Your meter is sending the data.".to_string(),
        ("active", None) => "Waiting for your meter to start sending.".to_string(),
        _ if c.erase_requested && c.erasure_confirmed => {
            "You asked for erasure; the provider confirmed it.".to_string()
        }
        _ if c.erase_requested => "You asked the provider to erase the data.".to_string(),
        _ => String::new(),
    };
    view! {
        <li class="card" aria-label=format!("{} — {}", c.controller, status_words(&c.status))>
            <h3>{c.controller.clone()} " — " <span class=format!("badge {}", c.status)>{status_words(&c.status)}</span></h3>
            <p>{c.purpose.clone()}</p>
            <p>{format!("Data: {} ({}). Meter {}. Until {}.", c.fields.join(", "), c.resolution, short(&c.device), c.expires)}</p>
            <p class="detail">{detail}</p>
            {c.key_changed.then(|| view! {
                <p class="key-changed">
                    {format!("Your meter changed its data key: {} cannot read anything new.", c.controller)}
                </p>
            })}
            {active.then(|| view! {
                <Show
                    when=move || confirming.get()
                    fallback=move || view! { <button class="confirm-open" on:click=move |_| confirming.set(true)>"Withdraw access…"</button> }
                >
                    <div role="group" aria-label="Confirm withdrawal" class="confirm">
                        <p>"Withdraw this access? The provider stops receiving new data at once."</p>
                        <input
                            id=erase_id.clone()
                            type="checkbox"
                            prop:checked=move || erase.get()
                            on:change=move |ev| erase.set(event_target_checked(&ev))
                        />
                        <label for=erase_id.clone()>"Also ask the provider to erase the data it already received"</label>
                        <div class="actions">
                            <button class="danger" on:click=revoke.clone() disabled=move || busy.get()>"Yes, withdraw"</button>
                            <button on:click=move |_| confirming.set(false)>"Cancel"</button>
                        </div>
                    </div>
                </Show>
            })}
        </li>
    }
}

#[component]
fn Consents() -> impl IntoView {
    let ctx = ctx();
    let list = RwSignal::new(None::<ConsentList>);
    let load = move |refresh: bool| {
        spawn_local(async move {
            match call::<ConsentList>("consents", RefreshArgs { refresh }).await {
                Ok(l) => list.set(Some(l)),
                Err(e) => ctx.fail(e),
            }
        });
    };
    load(false);
    load(true);
    let on_done = Callback::new(move |_| load(false));
    let group = move |title: &'static str, status: &'static str| {
        move || {
            let items: Vec<api::Consent> = list
                .get()
                .map(|l| {
                    l.consents
                        .into_iter()
                        .filter(|c| c.status == status)
                        .collect()
                })
                .unwrap_or_default();
            (!items.is_empty()).then(|| {
                view! {
                    <section aria-label=title>
                        <h3>{title}</h3>
                        <ul class="cards">
                            {items
                                .into_iter()
                                .map(|c| view! { <ConsentCard c=c on_done=on_done /> })
                                .collect_view()}
                        </ul>
                    </section>
                }
            })
        }
    };
    view! {
        <button id="check-updates" on:click=move |_| load(true)>"Check for updates"</button>
        {move || list.get().and_then(|l| l.offline).map(|o| view! {
            <p class="note">{format!("Showing what this wallet last saw ({o}).")}</p>
        })}
        {move || match list.get() {
            None => Some(view! { <p>"Loading…"</p> }.into_any()),
            Some(l) if l.consents.is_empty() => Some(view! { <p>"Nobody has access to your meter data."</p> }.into_any()),
            _ => None,
        }}
        {group("Active", "active")}
        {group("Expired", "expired")}
        {group("Withdrawn", "withdrawn")}
    }
}

/// One line of the audit: whom a thread is about, then its size and id.
fn thread_line(what: &str, title: &str, thread_id: &str, records: usize) -> String {
    let whom = if title.is_empty() {
        String::new()
    } else {
        format!(" {title}")
    };
    let plural = if records == 1 { "" } else { "s" };
    format!(
        "{what}{whom}: {records} record{plural} (thread {})",
        short(thread_id)
    )
}

#[component]
fn AuditPage() -> impl IntoView {
    let ctx = ctx();
    let audit = RwSignal::new(None::<Audit>);
    let run = move || {
        spawn_local(async move {
            match call::<Audit>("audit", NoArgs {}).await {
                Ok(a) => audit.set(Some(a)),
                Err(e) => ctx.fail(e),
            }
        });
    };
    run();
    view! {
        <p>"Every decision is kept in signed records. This checks all of them again."</p>
        <button on:click=move |_| run()>"Check again"</button>
        {move || audit.get().map(|a| {
            let headline = if a.verified {
                format!("All {} records are genuine and complete.", a.entries)
            } else {
                format!("{} of the records failed the check. Do not rely on them.", a.rejected)
            };
            // The own view is this wallet reading your own meter: its records are checked like
            // all others but listed apart, as "Who has access" leaves it out.
            let (own, threads): (Vec<_>, Vec<_>) =
                a.threads.into_iter().partition(|t| t.kind == "own_view");
            let thread_item = |t: api::Thread| {
                let what = match t.kind.as_str() {
                    "consent" => "Consent",
                    "own_view" => "Your own view",
                    "device" => "Meter",
                    _ => "Unknown",
                };
                view! {
                    <li>
                        {thread_line(what, &t.title, &t.thread_id, t.entries.len())}
                        {t.rejected.into_iter().map(|r| view! { <p class="error">{r.error}</p> }).collect_view()}
                    </li>
                }
            };
            let consents = threads.iter().filter(|t| t.kind == "consent").count();
            let counts = format!(
                "{} meter thread(s), {} consent thread(s){}.",
                threads.iter().filter(|t| t.kind == "device").count(),
                consents,
                if own.is_empty() { String::new() } else { format!(", and {} of your own view", own.len()) }
            );
            view! {
                <p id="audit-result" class=if a.verified { "ok" } else { "error" } role="status">{headline}</p>
                <p id="audit-counts">{counts}</p>
                <ul class="cards" aria-label="Record threads">
                    {threads.into_iter().map(thread_item).collect_view()}
                </ul>
                {(!own.is_empty()).then(|| view! {
                    <h3 id="audit-own-title">"Your own view"</h3>
                    <p>"This wallet reading your own meter for the Your meters page. It is not someone with access, so it is not listed under Who has access."</p>
                    <ul class="cards" aria-labelledby="audit-own-title">
                        {own.into_iter().map(thread_item).collect_view()}
                    </ul>
                })}
            }
        })}
        <OwnExport />
    }
}

/// Local midnight of today (Unix ms), from the browser's clock and time zone.
fn local_midnight_ms() -> u64 {
    let d = js_sys::Date::new_0();
    d.set_hours(0);
    d.set_minutes(0);
    d.set_seconds(0);
    d.set_milliseconds(0);
    let t = d.get_time();
    if t.is_finite() && t > 0.0 {
        t as u64
    } else {
        0
    }
}

/// "1.23 kW" or "450 W".
fn power_text(kw: f64) -> String {
    if kw.abs() >= 1.0 {
        format!("{kw:.2} kW")
    } else {
        format!("{:.0} W", kw * 1000.0)
    }
}

/// The view box of the power chart and its plot area (left margin for the power labels,
/// bottom margin for the times).
const CHART_W: f64 = 340.0;
const CHART_H: f64 = 110.0;
const PLOT_X: f64 = 50.0;
const PLOT_Y: f64 = 8.0;
const PLOT_W: f64 = CHART_W - PLOT_X - 8.0;
const PLOT_H: f64 = CHART_H - PLOT_Y - 22.0;

/// The smallest of 1, 2, 2.5, 5, 10 × a power of ten that is at least `x` (> 0).
fn nice_ceiling(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 0.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v >= x * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

/// The power axis of the chart: its range (kW) and 2–3 labelled values.
#[derive(Debug, Clone, PartialEq)]
struct PowerAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

fn power_axis(chart: &[(u64, f64)]) -> PowerAxis {
    let min = chart.iter().map(|p| p.1).fold(0.0_f64, f64::min);
    let max = chart.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let hi = nice_ceiling(max);
    // (No "-0 W" label: zero is positive.)
    let lo = if min < 0.0 { -nice_ceiling(-min) } else { 0.0 };
    let (lo, hi) = if hi - lo < 1e-9 { (0.0, 0.1) } else { (lo, hi) };
    let ticks = if lo < 0.0 && hi > 0.0 {
        vec![lo, 0.0, hi]
    } else {
        vec![lo, (lo + hi) / 2.0, hi]
    };
    PowerAxis { lo, hi, ticks }
}

/// The y coordinate of `kw` on `axis`.
fn chart_y(axis: &PowerAxis, kw: f64) -> f64 {
    PLOT_Y + PLOT_H - (kw - axis.lo) / (axis.hi - axis.lo) * PLOT_H
}

/// The points of the chart's SVG polyline inside the plot area, oldest left.
fn chart_points(chart: &[(u64, f64)], axis: &PowerAxis) -> String {
    let (Some(t0), Some(t1)) = (chart.first().map(|p| p.0), chart.last().map(|p| p.0)) else {
        return String::new();
    };
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    chart
        .iter()
        .map(|(t, v)| {
            let x = PLOT_X + t.saturating_sub(t0) as f64 / span * PLOT_W;
            let y = chart_y(axis, *v);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `HH:MM` of `ms` (Unix ms) at `offset_min` minutes east of UTC.
fn hhmm(ms: u64, offset_min: i64) -> String {
    let local_min = (ms / 60_000) as i64 + offset_min;
    let m = local_min.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// `HH:MM` of `ms` in the browser's time zone.
fn local_hhmm(ms: u64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    // getTimezoneOffset is UTC minus local time, in minutes.
    let off = d.get_timezone_offset();
    hhmm(ms, if off.is_finite() { -(off as i64) } else { 0 })
}

/// The chart in words, for screen readers (and the SVG's `<title>`).
fn chart_summary(chart: &[(u64, f64)], start: &str, end: &str) -> String {
    let Some(last) = chart.last() else {
        return "Power use chart: no readings yet.".to_string();
    };
    let min = chart.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = chart.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    format!(
        "Power use from {start} to {end}: between {} and {}, {} at {end}.",
        power_text(min),
        power_text(max),
        power_text(last.1)
    )
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn audit_line_names_whom_a_thread_is_about() {
        assert_eq!(
            thread_line(
                "Consent",
                "Wattt Insights B.V. — Meter hall",
                "0123456789abcdef",
                4
            ),
            "Consent Wattt Insights B.V. — Meter hall: 4 records (thread 0123456789ab)"
        );
        assert_eq!(
            thread_line("Meter", "", "0123456789abcdef", 1),
            "Meter: 1 record (thread 0123456789ab)"
        );
    }

    #[test]
    fn power_axis_has_round_labelled_values() {
        let a = power_axis(&[(0, 0.12), (1, 1.37), (2, 0.8)]);
        assert_eq!((a.lo, a.hi), (0.0, 2.0));
        assert_eq!(a.ticks, vec![0.0, 1.0, 2.0]);
        let labels: Vec<String> = a.ticks.iter().map(|k| power_text(*k)).collect();
        assert_eq!(labels, ["0 W", "1.00 kW", "2.00 kW"]);
        // Feeding back: zero is labelled between the two ends.
        let b = power_axis(&[(0, -0.3), (1, 0.45)]);
        assert_eq!(b.ticks, vec![-0.5, 0.0, 0.5]);
        // Nothing used: still a range, no division by zero.
        let c = power_axis(&[(0, 0.0), (1, 0.0)]);
        assert_eq!(c.ticks, vec![0.0, 0.05, 0.1]);
        assert_eq!(nice_ceiling(0.21), 0.25);
        assert_eq!(nice_ceiling(3.0), 5.0);
    }

    #[test]
    fn points_fill_the_plot_area_and_times_are_local() {
        let chart = [(1_000, 0.0), (61_000, 2.0)];
        let axis = power_axis(&chart);
        let pts = chart_points(&chart, &axis);
        assert_eq!(
            pts,
            format!(
                "{PLOT_X:.1},{:.1} {:.1},{PLOT_Y:.1}",
                PLOT_Y + PLOT_H,
                PLOT_X + PLOT_W
            )
        );
        assert_eq!(chart_points(&[], &axis), "");
        // 2026-01-05 23:50 UTC at UTC+1 and UTC-5.
        let t = 1_767_571_200_000 + 23 * 3_600_000 + 50 * 60_000;
        assert_eq!(hhmm(t, 60), "00:50");
        assert_eq!(hhmm(t, -300), "18:50");
        assert_eq!(
            chart_summary(&[(t, 0.45), (t + 1, 1.2), (t + 2, 0.3)], "23:50", "00:00"),
            "Power use from 23:50 to 00:00: between 300 W and 1.20 kW, 300 W at 00:00."
        );
    }
}

/// Current power, today's use and a live chart of one meter, refreshed every few seconds.
#[component]
fn MeterUse(device: String) -> impl IntoView {
    let usage = RwSignal::new(None::<Result<OwnUsage, String>>);
    let fetch = move |device: String| {
        spawn_local(async move {
            let r = call::<OwnUsage>(
                "own_usage",
                UsageArgs {
                    device,
                    since: local_midnight_ms(),
                },
            )
            .await;
            usage.set(Some(r));
        });
    };
    fetch(device.clone());
    let d2 = device.clone();
    if let Ok(h) =
        set_interval_with_handle(move || fetch(d2.clone()), std::time::Duration::from_secs(3))
    {
        on_cleanup(move || h.clear());
    }
    view! {
        <div class="usage" aria-live="polite">
            {move || match usage.get() {
                None => view! { <p>"Reading your meter…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error">{format!("Your own data is not available: {e}")}</p> }.into_any(),
                Some(Ok(u)) => {
                    if let Some(p) = u.problem.clone() {
                        return view! {
                            <p class="error">{p}</p>
                            <p class="hint">
                                "The wallet tries again by itself every 2 minutes while this page is open: there is nothing you need to do, and the meter stays paired."
                            </p>
                        }
                            .into_any();
                    }
                    let now = match (u.power_kw, u.returned_kw) {
                        (Some(d), Some(r)) if r > 0.0 && r >= d => format!("Sending {} back to the grid", power_text(r)),
                        (Some(d), _) => format!("Using {} right now", power_text(d)),
                        _ => "Waiting for the first reading from your meter…".to_string(),
                    };
                    let today = match u.today_kwh {
                        Some(k) => format!("Used today: {k:.2} kWh"),
                        None => "Used today: not known yet".to_string(),
                    };
                    let axis = power_axis(&u.chart);
                    let points = chart_points(&u.chart, &axis);
                    let (start, end) = match (u.chart.first(), u.chart.last()) {
                        (Some(a), Some(b)) => (local_hhmm(a.0), local_hhmm(b.0)),
                        _ => (String::new(), String::new()),
                    };
                    let summary = chart_summary(&u.chart, &start, &end);
                    let title = summary.clone();
                    let grid = axis.ticks.iter().map(|kw| {
                        let y = chart_y(&axis, *kw);
                        view! {
                            <line x1=PLOT_X x2=PLOT_X + PLOT_W y1=y y2=y stroke="currentColor"
                                stroke-opacity=if *kw == 0.0 { "0.5" } else { "0.2" } stroke-width="1" />
                            <text x=PLOT_X - 4.0 y=y + 4.0 text-anchor="end" font-size="10" fill="#555">
                                {power_text(*kw)}
                            </text>
                        }
                    }).collect_view();
                    let label_y = PLOT_Y + PLOT_H + 15.0;
                    view! {
                        <p class="power" id=format!("power-{}", short(&device))>{now}</p>
                        <p class="today">{today}</p>
                        <svg class="chart" viewBox=format!("0 0 {CHART_W} {CHART_H}") width=CHART_W height=CHART_H
                            role="img" aria-label=summary>
                            <title>{title}</title>
                            <g aria-hidden="true">
                                {grid}
                                <line x1=PLOT_X x2=PLOT_X y1=PLOT_Y y2=PLOT_Y + PLOT_H stroke="currentColor" stroke-opacity="0.4" />
                                <text x=PLOT_X y=label_y font-size="10" fill="#555">{start}</text>
                                <text x=PLOT_X + PLOT_W y=label_y text-anchor="end" font-size="10" fill="#555">{end}</text>
                                <polyline points=points fill="none" stroke="currentColor" stroke-width="2" />
                            </g>
                        </svg>
                        <p class="hint">"Last 10 minutes (your local time), updated every few seconds."</p>
                    }
                        .into_any()
                }
            }}
        </div>
    }
}

/// Exports the owner's own readings of a meter to a typed path.
#[component]
fn OwnExport() -> impl IntoView {
    let ctx = ctx();
    let devices = RwSignal::new(Vec::<Device>::new());
    let device = RwSignal::new(String::new());
    let format = RwSignal::new("csv".to_string());
    let path = RwSignal::new(String::new());
    spawn_local(async move {
        if let Ok(d) = call::<Vec<Device>>("devices", NoArgs {}).await {
            let d: Vec<Device> = d.into_iter().filter(|d| d.paired).collect();
            if let Some(first) = d.first() {
                device.set(first.device_id.clone());
            }
            devices.set(d);
        }
    });
    Effect::new(move |_| {
        let hint = ctx.status.get().kit_hint;
        if path.get_untracked().is_empty() && !hint.is_empty() {
            // The home folder of the kit hint, with a data file name.
            if let Some((dir, _)) = hint.rsplit_once('/') {
                path.set(format!("{dir}/my-meter-data.{}", format.get_untracked()));
            }
        }
    });
    let save = move |_| {
        let args = OwnExportArgs {
            device: device.get_untracked(),
            format: format.get_untracked(),
            path: path.get_untracked(),
        };
        spawn_local(async move {
            match call::<String>("export_own_data", args).await {
                Ok(written) => ctx.ok(format!("Your data was saved to {written}.")),
                Err(e) => ctx.fail(format!("Your data was not saved: {e}")),
            }
        });
    };
    view! {
        <section aria-labelledby="own-export-title">
            <h3 id="own-export-title">"Export my data"</h3>
            <p>"Save the readings of your own meter that this wallet received, as a spreadsheet (CSV) or JSON file."</p>
            <label for="own-export-device">"Meter"</label>
            <select id="own-export-device" on:change=move |ev| device.set(event_target_value(&ev))>
                {move || devices.get().into_iter().map(|d| {
                    let name = if d.label.is_empty() { format!("Meter {}", short(&d.device_id)) } else { d.label.clone() };
                    view! { <option value=d.device_id.clone()>{name}</option> }
                }).collect_view()}
            </select>
            <label for="own-export-format">"Format"</label>
            <select id="own-export-format" on:change=move |ev| {
                let f = event_target_value(&ev);
                let p = path.get_untracked();
                if let Some(stem) = p.strip_suffix(&format!(".{}", format.get_untracked())) {
                    path.set(format!("{stem}.{f}"));
                }
                format.set(f);
            }>
                <option value="csv">"CSV (spreadsheet)"</option>
                <option value="json">"JSON"</option>
            </select>
            <label for="own-export-path">"Save as (full path of a file)"</label>
            <input
                id="own-export-path"
                type="text"
                prop:value=move || path.get()
                on:input=move |ev| path.set(event_target_value(&ev))
            />
            <button
                id="own-export-save"
                on:click=save
                disabled=move || device.get().is_empty() || path.get().trim().is_empty()
            >
                "Export my data (CSV/JSON)"
            </button>
        </section>
    }
}

#[component]
fn SettingsPage() -> impl IntoView {
    let ctx = ctx();
    view! {
        <section aria-labelledby="kit-title">
            <h3 id="kit-title">"Recovery kit"</h3>
            <p>
                "A recovery kit is a file with your keys, locked with a passphrase you choose. "
                "With it, a new device (or this one after a reinstall) becomes your wallet again "
                "and reads your meters and consents back from the signed records."
            </p>
            <h4>"Save a recovery kit"</h4>
            <KitSave />
            <h4>"Restore from a recovery kit"</h4>
            {move || if ctx.status.get().initialised {
                view! {
                    <p>
                        "This wallet already has your identity. Restore on the new device: "
                        "start the app there and choose “Restore” on its Welcome page."
                    </p>
                }
                    .into_any()
            } else {
                view! { <KitRestore /> }.into_any()
            }}
        </section>
        {move || (ctx.status.get().initialised && ctx.status.get().devices == 0).then(|| view! {
            <button id="go-pair" on:click=move |_| ctx.go(Page::Pair)>"Next: pair a meter"</button>
        })}
    }
}

#[component]
fn KitSave() -> impl IntoView {
    let ctx = ctx();
    let pass = RwSignal::new(String::new());
    let pass2 = RwSignal::new(String::new());
    let path = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    // The suggested file, once the status has arrived.
    Effect::new(move |_| {
        let hint = ctx.status.get().kit_hint;
        if path.get_untracked().is_empty() {
            path.set(hint);
        }
    });
    let save = move |_| {
        let (p, p2, f) = (
            pass.get_untracked(),
            pass2.get_untracked(),
            path.get_untracked(),
        );
        if p != p2 {
            ctx.fail("The two passphrases differ: type the same passphrase twice.");
            return;
        }
        busy.set(true);
        ctx.ok("Saving the recovery kit…");
        spawn_local(async move {
            match call::<String>(
                "export_recovery",
                ExportArgs {
                    passphrase: p,
                    path: f,
                },
            )
            .await
            {
                Ok(written) => {
                    pass.set(String::new());
                    pass2.set(String::new());
                    ctx.ok(format!(
                        "Recovery kit saved to {written}. Keep a copy away from this computer, \
                         and the passphrase somewhere else."
                    ));
                }
                Err(e) => ctx.fail(format!("The recovery kit was not saved: {e}")),
            }
            busy.set(false);
        });
    };
    view! {
        <label for="kit-pass">"Passphrase (at least 10 characters; without it the kit cannot be opened)"</label>
        <input
            id="kit-pass"
            type="password"
            autocomplete="new-password"
            prop:value=move || pass.get()
            on:input=move |ev| pass.set(event_target_value(&ev))
        />
        <label for="kit-pass2">"The same passphrase again"</label>
        <input
            id="kit-pass2"
            type="password"
            autocomplete="new-password"
            prop:value=move || pass2.get()
            on:input=move |ev| pass2.set(event_target_value(&ev))
        />
        <label for="kit-path">"Save as (full path of a new file)"</label>
        <input
            id="kit-path"
            type="text"
            prop:value=move || path.get()
            on:input=move |ev| path.set(event_target_value(&ev))
        />
        <button
            id="kit-save"
            class="primary"
            on:click=save
            disabled=move || busy.get() || pass.get().is_empty() || path.get().trim().is_empty()
        >
            "Save recovery kit"
        </button>
    }
}

#[component]
fn KitRestore() -> impl IntoView {
    let ctx = ctx();
    let pass = RwSignal::new(String::new());
    let path = RwSignal::new(String::new());
    let broker = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let restore = move |_| {
        let args = ImportArgs {
            path: path.get_untracked(),
            passphrase: pass.get_untracked(),
            broker: Some(broker.get_untracked()),
        };
        busy.set(true);
        ctx.ok("Restoring… reading your records back can take up to a minute.");
        spawn_local(async move {
            match call::<RestoreReport>("import_recovery", args).await {
                Ok(r) => {
                    pass.set(String::new());
                    ctx.status.set(r.status);
                    ctx.go(Page::Consents);
                    match (r.sync, r.offline) {
                        (Some(s), _) => ctx.ok(format!(
                            "Your wallet is restored: {} signed records in {} threads were read \
                             back and checked.",
                            s.entries, s.threads
                        )),
                        (None, o) => ctx.fail(format!(
                            "Your identity is restored, but the records could not be read yet \
                             ({}). Use “Check for updates” later.",
                            o.unwrap_or_default()
                        )),
                    }
                }
                Err(e) => ctx.fail(format!("Restoring did not work: {e}")),
            }
            busy.set(false);
        });
    };
    view! {
        <label for="restore-path">"Recovery kit file (full path)"</label>
        <input
            id="restore-path"
            type="text"
            placeholder="~/p1consent-recovery-kit.p1ck"
            prop:value=move || path.get()
            on:input=move |ev| path.set(event_target_value(&ev))
        />
        <label for="restore-pass">"Its passphrase"</label>
        <input
            id="restore-pass"
            type="password"
            autocomplete="current-password"
            prop:value=move || pass.get()
            on:input=move |ev| pass.set(event_target_value(&ev))
        />
        <label for="restore-broker">"Message server address (only if the kit was saved before your first pairing)"</label>
        <input
            id="restore-broker"
            type="text"
            placeholder="mqtts://broker.example:8883"
            prop:value=move || broker.get()
            on:input=move |ev| broker.set(event_target_value(&ev))
        />
        <button
            id="restore"
            on:click=restore
            disabled=move || busy.get() || pass.get().is_empty() || path.get().trim().is_empty()
        >
            "Restore my wallet"
        </button>
    }
}

/// Entry point of the wasm module.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}
