//! QR codes for pairing links and provider request links (feature `qr`).
//!
//! Encoding uses error-correction level **M** (15 % of the symbol recoverable) and falls back to
//! **L** (7 %) only when the text does not fit at M (above 2331 bytes in byte mode). The longest
//! text is [`MAX_TEXT_BYTES`] (version 40-L in byte mode). Every rendering keeps the standard
//! 4-module quiet zone.
//!
//! - [`render_terminal`]: Unicode half blocks (two modules per character cell), for a terminal
//!   with a dark background; [`render_terminal_with`] for light backgrounds.
//! - [`render_svg`], [`render_png`]: images for the web wallet and print; [`render_luma`]:
//!   raw greyscale pixels.
//! - [`decode_image`]: the text of the first QR code found in a PNG (scanned or rendered).
//! - [`decode_luma`]: the same for a raw 8-bit greyscale frame (a camera frame from the app's
//!   window), given with its width and height.
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
/// Largest width and height [`decode_luma`] accepts, in pixels (a camera frame is scaled
/// down to at most 640 pixels per side by the app's window before it is sent).
pub const MAX_FRAME_DIMENSION: u32 = 2048;
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
    /// A greyscale frame's width or height is 0 or above [`MAX_FRAME_DIMENSION`].
    #[error("frame size {width}x{height} out of range 1..={MAX_FRAME_DIMENSION} per side")]
    FrameSize {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// A greyscale frame's bytes are not one per pixel (width × height).
    #[error("frame has {got} bytes, {expected} expected (one per pixel)")]
    FrameLength {
        /// width × height.
        expected: usize,
        /// The bytes given.
        got: usize,
    },
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

/// `text` as square greyscale pixels (0 dark, 255 light), `module_px` pixels per module
/// (1–[`MAX_MODULE_PX`]), quiet zone included: `(side, pixels)` with `side × side` bytes, row
/// by row (the layout of [`decode_luma`]'s frames).
pub fn render_luma(text: &str, module_px: u32) -> Result<(u32, Vec<u8>), QrError> {
    let img = render_gray(text, module_px)?;
    Ok((img.width(), img.into_raw()))
}

fn render_gray(text: &str, module_px: u32) -> Result<GrayImage, QrError> {
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
    Ok(GrayImage::from_fn(side, side, |x, y| {
        let dark = m.get(x as usize / px, y as usize / px);
        Luma([if dark { 0 } else { 255 }])
    }))
}

/// `text` as a greyscale PNG, `module_px` pixels per module (1–[`MAX_MODULE_PX`]), quiet zone
/// included.
pub fn render_png(text: &str, module_px: u32) -> Result<Vec<u8>, QrError> {
    let img = render_gray(text, module_px)?;
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
    decode_grey(img.width() as usize, img.height() as usize, img.as_raw())
}

/// The text of the first decodable QR code in a raw greyscale frame: `luma` holds one byte per
/// pixel (0 black … 255 white), row by row, `width` × `height` bytes. Both sides 1 to
/// [`MAX_FRAME_DIMENSION`]; checked before anything is allocated.
pub fn decode_luma(width: u32, height: u32, luma: &[u8]) -> Result<String, QrError> {
    if width == 0 || height == 0 || width > MAX_FRAME_DIMENSION || height > MAX_FRAME_DIMENSION {
        return Err(QrError::FrameSize { width, height });
    }
    // At most 2048 × 2048: no overflow in usize.
    let (w, h) = (width as usize, height as usize);
    let expected = w * h;
    if luma.len() != expected {
        return Err(QrError::FrameLength {
            expected,
            got: luma.len(),
        });
    }
    decode_grey(w, h, luma)
}

/// Finds and decodes QR codes in `w` × `h` greyscale pixels (`pixels.len() == w * h`).
fn decode_grey(w: usize, h: usize, pixels: &[u8]) -> Result<String, QrError> {
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        pixels.get(y * w + x).copied().unwrap_or(255)
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

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "p1consent://pair?v=1&d=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5f";

    /// `text` as a QR code of `module_px` pixels per module in the middle of a `w` × `h`
    /// grey (200) frame with some noise, as a camera would see a screen.
    fn frame(text: &str, module_px: usize, w: usize, h: usize) -> Vec<u8> {
        let (m, _) = encode(text).unwrap_or_else(|e| panic!("encode: {e}"));
        let side = m.size() * module_px;
        assert!(side <= w && side <= h, "QR does not fit the frame");
        let (x0, y0) = ((w - side) / 2, (h - side) / 2);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        (0..w * h)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed % 24) as u8;
                let (x, y) = (i % w, i / w);
                let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
                if inside && m.get((x - x0) / module_px, (y - y0) / module_px) {
                    30 + noise
                } else if inside {
                    230 - noise
                } else {
                    200 - noise
                }
            })
            .collect()
    }

    #[test]
    fn qr_in_a_luma_frame_decodes() {
        let (w, h) = (640, 480);
        let f = frame(LINK, 6, w, h);
        assert_eq!(decode_luma(w as u32, h as u32, &f), Ok(LINK.to_string()));
        // The smallest frame the window sends is still readable at 3 px per module.
        let f = frame(LINK, 3, 320, 240);
        assert_eq!(decode_luma(320, 240, &f), Ok(LINK.to_string()));
    }

    #[test]
    fn rendered_luma_decodes_and_matches_the_png() {
        let (side, px) = render_luma(LINK, 4).unwrap_or_else(|e| panic!("render: {e}"));
        assert_eq!(px.len(), (side * side) as usize);
        assert_eq!(side % 4, 0);
        assert!(px.iter().all(|&p| p == 0 || p == 255));
        assert_eq!(decode_luma(side, side, &px), Ok(LINK.to_string()));
        let png = render_png(LINK, 4).unwrap_or_else(|e| panic!("png: {e}"));
        assert_eq!(decode_image(&png), Ok(LINK.to_string()));
        assert_eq!(render_luma(LINK, 0), Err(QrError::ModuleSize(0)));
        assert_eq!(render_luma("", 4), Err(QrError::EmptyText));
    }

    #[test]
    fn luma_frame_without_a_qr_code_is_not_found() {
        let grey = vec![128u8; 320 * 240];
        assert_eq!(decode_luma(320, 240, &grey), Err(QrError::NotFound));
        let mut seed = 7u64;
        let noise: Vec<u8> = (0..320 * 240)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        assert!(matches!(
            decode_luma(320, 240, &noise),
            Err(QrError::NotFound | QrError::Decode(_))
        ));
    }

    #[test]
    fn luma_frame_sizes_are_checked_before_decoding() {
        assert_eq!(
            decode_luma(0, 10, &[]),
            Err(QrError::FrameSize {
                width: 0,
                height: 10
            })
        );
        assert_eq!(
            decode_luma(10, 0, &[]),
            Err(QrError::FrameSize {
                width: 10,
                height: 0
            })
        );
        assert_eq!(
            decode_luma(MAX_FRAME_DIMENSION + 1, 1, &[0]),
            Err(QrError::FrameSize {
                width: MAX_FRAME_DIMENSION + 1,
                height: 1
            })
        );
        assert_eq!(
            decode_luma(u32::MAX, u32::MAX, &[0]),
            Err(QrError::FrameSize {
                width: u32::MAX,
                height: u32::MAX
            })
        );
        assert_eq!(
            decode_luma(4, 4, &[0; 15]),
            Err(QrError::FrameLength {
                expected: 16,
                got: 15
            })
        );
        assert_eq!(
            decode_luma(4, 4, &[0; 17]),
            Err(QrError::FrameLength {
                expected: 16,
                got: 17
            })
        );
        // The largest frame is accepted (and holds no code).
        let side = MAX_FRAME_DIMENSION;
        let white = vec![255u8; (side * side) as usize];
        assert_eq!(decode_luma(side, side, &white), Err(QrError::NotFound));
    }
}
