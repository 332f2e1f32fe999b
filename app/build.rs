fn main() {
    // Commands the UI may call: each gets an `allow-<command>` permission, granted in
    // capabilities/default.json. Keep in sync with `p1consent_app_lib::COMMANDS`.
    const COMMANDS: &[&str] = &[
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
    println!("cargo:rerun-if-changed=../tauri.conf.json");
    println!("cargo:rerun-if-changed=../ui/dist");
    println!("cargo:rerun-if-changed=../icons");
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .config_path("../tauri.conf.json")
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build script");
}
