//! The CLI binary: init, request, status, verify-receipt (no broker needed).

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_p1consent-provider"))
}

#[test]
fn cli_init_request_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = bin()
        .args([
            "--dir",
            d,
            "init",
            "--name",
            "Acme Energy",
            "--contact",
            "dpo@acme.example",
        ])
        .env("P1C_PROVIDER_PASSPHRASE", "script passphrase")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("provider key:"));

    let png = dir.path().join("req.png");
    let out = bin()
        .args([
            "--dir",
            d,
            "request",
            "--purpose",
            "Tariff advice",
            "--fields",
            "energy_delivered,power_delivered",
            "--resolution",
            "hour",
            "--retention-days",
            "30",
            "--expires-in",
            "90d",
            "--png",
            png.to_str().unwrap(),
            "--no-qr",
        ])
        .env("P1C_PROVIDER_PASSPHRASE", "script passphrase")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let now = p1consent_provider::now_ms() / 1000;
    let v = p1consent_shared::consent::SignedRequest::from_link(&link, now).unwrap();
    assert_eq!(v.content().controller, "Acme Energy");
    let decoded = p1consent_shared::qr::decode_image(&std::fs::read(&png).unwrap()).unwrap();
    assert_eq!(decoded, link);

    // Wrong passphrase: a clear error and a failing exit code.
    let out = bin()
        .args(["--dir", d, "status"])
        .env("P1C_PROVIDER_PASSPHRASE", "not it")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));

    let out = bin()
        .args(["--dir", d, "status"])
        .env("P1C_PROVIDER_PASSPHRASE", "script passphrase")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no consents yet"));

    // A receipt that is not one is refused with exit code 2.
    let bogus = dir.path().join("receipt.json");
    std::fs::write(&bogus, "{}").unwrap();
    let owner = p1consent_shared::crypto::SigningIdentity::generate()
        .public()
        .to_hex();
    let out = bin()
        .args([
            "--dir",
            d,
            "verify-receipt",
            bogus.to_str().unwrap(),
            "--owner",
            &owner,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
