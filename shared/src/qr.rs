//! QR codes for pairing links and provider request links (feature `qr`).
//!
//! Encoding uses error-correction level **M** (15 % of the symbol recoverable) and falls back to
//! **L** (7 %) only when the text does not fit at M (above 2331 bytes in byte mode). The longest
//! text is [`MAX_TEXT_BYTES`] (version 40-L in byte mode). Every rendering keeps the standard
//! 4-module quiet zone.
//!
//! - [`render_terminal`]: Unicode half blocks (two modules per character cell), for a terminal
//!   with a dark background; [`render_terminal_with`] for light backgrounds.
//! - [`render_svg`], [`render_png`]: images for the web wallet and print.
//! - [`decode_image`]: the text of the first QR code found in a PNG (scanned or rendered).
//!
//! Decoding treats its input as hostile: size and dimensions are limited before any pixel is
//! allocated and every failure is a typed [`QrError`].

use std::io::Cursor;

use image::{GrayImage, ImageFormat, ImageReader, Limits, Luma};
use qrcode::{Color, EcLevel, QrCode};
use thiserror::Error;

/// Longest text that can be encoded: 2953 bytes (version 40, level L, byte mode).
pub const MAX_TEXT_BYTES: usize = 2953;
/// Longest text that is still encoded at level M (version 40-M, byte mode).
pub const MAX_TEXT_BYTES_M: usize = 2331;
/// Quiet zone around every rendering, in modules.
pub const QUIET_ZONE: usize = 4;
/// Largest module size [`render_png`] accepts, in pixels.
pub const MAX_MODULE_PX: u32 = 32;
/// Largest image file [`decode_image`] accepts.
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;
/// Largest width and height [`decode_image`] accepts, in pixels.
pub const MAX_IMAGE_DIMENSION: u32 = 8192;
/// Most memory the image decoder may allocate.
const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

/// Why a QR code could not be rendered or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QrError {
    /// The text does not fit in any QR code.
    #[error("text too long for a QR code: {len} bytes (limit {max})")]
    TextTooLong {
        /// Length of the text in bytes.
        len: usize,
        /// [`MAX_TEXT_BYTES`] (or less if the encoder chose a mode that fits fewer).
        max: usize,
    },
    /// Nothing to encode.
    #[error("empty text")]
    EmptyText,
    /// `module_px` is 0 or larger than [`MAX_MODULE_PX`].
    #[error("module size {0} px out of range 1..={MAX_MODULE_PX}")]
    ModuleSize(u32),
    /// The image file is larger than [`MAX_IMAGE_BYTES`].
    #[error("image too large: {size} bytes (limit {max})")]
    ImageTooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The image is not a supported format, is corrupt, or exceeds the dimension limits.
    #[error("cannot read image: {0}")]
    Image(String),
    /// The image has no QR code that could be located.
    #[error("no QR code found in the image")]
    NotFound,
    /// QR codes were found but none could be decoded (damaged, or not UTF-8).
    #[error("QR code could not be decoded: {0}")]
    Decode(String),
    /// Encoding or PNG writing failed for another reason.
    #[error("QR encoding failed: {0}")]
    Encode(String),
}

/// The error-correction level a text is encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecc {
    /// ~7 % recovery: only for texts that do not fit at M.
    L,
    /// ~15 % recovery: the default.
    M,
}

/// Colours of [`render_terminal_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TerminalBackground {
    /// Light text on a dark background (most terminals): light modules are printed as blocks,
    /// dark modules as spaces.
    #[default]
    Dark,
    /// Dark text on a light background: dark modules are printed as blocks.
    Light,
}

/// A QR code as a square matrix of modules (true = dark), without quiet zone.
struct Matrix {
    width: usize,
    dark: Vec<bool>,
}

impl Matrix {
    /// Dark at (x, y) in coordinates that include the quiet zone.
    fn get(&self, x: usize, y: usize) -> bool {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        if x >= self.width || y >= self.width {
            return false;
        }
        self.dark.get(y * self.width + x).copied().unwrap_or(false)
    }

    /// Side length including the quiet zone.
    fn size(&self) -> usize {
        self.width + 2 * QUIET_ZONE
    }
}

fn encode(text: &str) -> Result<(Matrix, Ecc), QrError> {
    if text.is_empty() {
        return Err(QrError::EmptyText);
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(QrError::TextTooLong {
            len: text.len(),
            max: MAX_TEXT_BYTES,
        });
    }
    let (code, ecc) = match QrCode::with_error_correction_level(text, EcLevel::M) {
        Ok(c) => (c, Ecc::M),
        Err(qrcode::types::QrError::DataTooLong) => {
            match QrCode::with_error_correction_level(text, EcLevel::L) {
                Ok(c) => (c, Ecc::L),
                Err(qrcode::types::QrError::DataTooLong) => {
                    return Err(QrError::TextTooLong {
                        len: text.len(),
                        max: MAX_TEXT_BYTES,
                    });
                }
                Err(e) => return Err(QrError::Encode(e.to_string())),
            }
        }
        Err(e) => return Err(QrError::Encode(e.to_string())),
    };
    let width = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    Ok((Matrix { width, dark }, ecc))
}

/// The error-correction level `text` would be encoded with (M, or L if it does not fit at M).
pub fn error_correction(text: &str) -> Result<Ecc, QrError> {
    encode(text).map(|(_, e)| e)
}

/// The QR code's side length in modules, without the quiet zone (21 for version 1 … 177 for 40).
pub fn modules(text: &str) -> Result<usize, QrError> {
    encode(text).map(|(m, _)| m.width)
}

/// `text` as a QR code for a dark-background terminal: Unicode half blocks (`▀ ▄ █` and space),
/// two module rows per line, quiet zone included, lines ending in `\n`.
pub fn render_terminal(text: &str) -> Result<String, QrError> {
    render_terminal_with(text, TerminalBackground::Dark)
}

/// [`render_terminal`] for either terminal background.
pub fn render_terminal_with(text: &str, bg: TerminalBackground) -> Result<String, QrError> {
    let (m, _) = encode(text)?;
    let size = m.size();
    // A cell is "inked" when its module is drawn with the foreground colour.
    let ink = |x: usize, y: usize| -> bool {
        let dark = m.get(x, y);
        match bg {
            TerminalBackground::Dark => !dark,
            TerminalBackground::Light => dark,
        }
    };
    let mut out = String::with_capacity((size + 1) * size.div_ceil(2) * 3);
    for y in (0..size).step_by(2) {
        for x in 0..size {
            let top = ink(x, y);
            // The side is odd (4·version + 17 + 2·quiet zone): the last line's lower half lies
            // outside the symbol and its quiet zone, and is left blank.
            let bottom = y + 1 < size && ink(x, y + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// `text` as an SVG document (black on white, quiet zone included, 8 units per module).
pub fn render_svg(text: &str) -> Result<String, QrError> {
    let (m, _) = encode(text)?;
    let size = m.size();
    let unit = 8;
    let px = size * unit;
    let mut path = String::new();
    for y in 0..size {
        let mut x = 0;
        while x < size {
            if m.get(x, y) {
                let start = x;
                while x < size && m.get(x, y) {
                    x += 1;
                }
                path.push_str(&format!("M{start} {y}h{}v1h-{}z", x - start, x - start));
            } else {
                x += 1;
            }
        }
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{px}\" height=\"{px}\" \
         viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>\n"
    ))
}

/// `text` as a greyscale PNG, `module_px` pixels per module (1–[`MAX_MODULE_PX`]), quiet zone
/// included.
pub fn render_png(text: &str, module_px: u32) -> Result<Vec<u8>, QrError> {
    if module_px == 0 || module_px > MAX_MODULE_PX {
        return Err(QrError::ModuleSize(module_px));
    }
    let (m, _) = encode(text)?;
    let size = m.size();
    let side = u32::try_from(size)
        .ok()
        .and_then(|s| s.checked_mul(module_px))
        .ok_or_else(|| QrError::Encode("image too large".into()))?;
    let px = module_px as usize;
    let img = GrayImage::from_fn(side, side, |x, y| {
        let dark = m.get(x as usize / px, y as usize / px);
        Luma([if dark { 0 } else { 255 }])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| QrError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

/// The text of the first decodable QR code in a PNG image. At most [`MAX_IMAGE_BYTES`] of input
/// and [`MAX_IMAGE_DIMENSION`] pixels per side.
pub fn decode_image(bytes: &[u8]) -> Result<String, QrError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(QrError::ImageTooLarge {
            size: bytes.len(),
            max: MAX_IMAGE_BYTES,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| QrError::Image(e.to_string()))?;
    if reader.format() != Some(ImageFormat::Png) {
        return Err(QrError::Image("not a PNG image".into()));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_DIMENSION);
    limits.max_image_height = Some(MAX_IMAGE_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| QrError::Image(e.to_string()))?
        .into_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        img.get_pixel_checked(x as u32, y as u32)
            .map_or(255, |p| p.0[0])
    });
    let grids = prepared.detect_grids();
    if grids.is_empty() {
        return Err(QrError::NotFound);
    }
    let mut last_err = None;
    for grid in grids {
        match grid.decode() {
            Ok((_, text)) => return Ok(text),
            Err(e) => last_err = Some(e),
        }
    }
    Err(QrError::Decode(
        last_err.map_or_else(|| "unknown".to_string(), |e| e.to_string()),
    ))
}
