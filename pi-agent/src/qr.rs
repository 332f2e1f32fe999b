//! Showing the pairing code: in the terminal (unicode), as an SVG file, and as text.

use std::path::Path;

/// Prints the pairing QR code and link, and writes the SVG next to the state.
pub fn show_pairing(link: &str, svg_path: &Path) {
    let terminal = p1consent_shared::qr::render_terminal(link).unwrap_or_default();
    println!(
        "\nPair this meter: scan the code with the P1 Consent wallet, or paste the text below.\n{terminal}\n{link}\n"
    );
    match p1consent_shared::qr::render_svg(link) {
        Ok(svg) => {
            if let Err(e) = crate::identity::write_private(svg_path, svg.as_bytes()) {
                tracing::warn!(error = %e, "cannot write the pairing QR code file");
            } else {
                println!("The code is also in {}\n", svg_path.display());
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot render the pairing QR code"),
    }
    tracing::info!("pairing code ready");
}
