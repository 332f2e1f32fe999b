//! QR rendering and decoding (feature `qr`).
#![cfg(feature = "qr")]

use p1consent_shared::qr::{
    self, Ecc, MAX_IMAGE_BYTES, MAX_TEXT_BYTES, QrError, TerminalBackground, decode_image,
    render_png, render_svg, render_terminal, render_terminal_with,
};

/// base64url characters from a xorshift stream.
fn b64(seed: u64, n: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % 64) as usize] as char
        })
        .collect()
}

/// A pairing link as the agent shows it (`p1consent://pair?v=1&d=` + ~95 payload bytes).
fn pairing_link() -> String {
    format!("p1consent://pair?v=1&d={}", b64(0x9E37_79B9_7F4A_7C15, 127))
}

/// A provider request link of 2000 characters.
fn request_link() -> String {
    let prefix = "p1consent://request?v=1&d=";
    format!(
        "{prefix}{}",
        b64(0x2545_F491_4F6C_DD1D, 2000 - prefix.len())
    )
}

#[test]
fn pairing_link_round_trips_through_png() {
    let link = pairing_link();
    assert_eq!(link.len(), 150);
    assert_eq!(qr::error_correction(&link), Ok(Ecc::M));
    let png = render_png(&link, 4).expect("render");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(decode_image(&png).as_deref(), Ok(link.as_str()));
    // At M, 150 bytes need version 8 (49 modules).
    assert_eq!(qr::modules(&link), Ok(49));
}

#[test]
fn request_link_round_trips_through_png() {
    let link = request_link();
    assert_eq!(link.len(), 2000);
    assert_eq!(qr::error_correction(&link), Ok(Ecc::M));
    let png = render_png(&link, 3).expect("render");
    assert_eq!(decode_image(&png).as_deref(), Ok(link.as_str()));
}

#[test]
fn long_text_falls_back_to_level_l() {
    let text = "x".repeat(2500); // > 2331 (40-M), <= 2953 (40-L)
    assert_eq!(qr::error_correction(&text), Ok(Ecc::L));
    assert_eq!(qr::modules(&text), Ok(165)); // version 37
    let png = render_png(&text, 2).expect("render");
    assert_eq!(decode_image(&png).as_deref(), Ok(text.as_str()));
}

#[test]
fn oversize_and_empty_text_are_typed_errors() {
    let text = "x".repeat(MAX_TEXT_BYTES + 1);
    let err = QrError::TextTooLong {
        len: MAX_TEXT_BYTES + 1,
        max: MAX_TEXT_BYTES,
    };
    assert_eq!(render_png(&text, 4), Err(err.clone()));
    assert_eq!(render_svg(&text), Err(err.clone()));
    assert_eq!(render_terminal(&text), Err(err));
    // The limit is in bytes, not characters.
    let text = "€".repeat(984); // 2952 bytes
    assert_eq!(qr::error_correction(&text), Ok(Ecc::L));
    assert_eq!(render_png("", 4), Err(QrError::EmptyText));
    assert_eq!(render_png("a", 0), Err(QrError::ModuleSize(0)));
    assert_eq!(render_png("a", 33), Err(QrError::ModuleSize(33)));
}

#[test]
fn garbage_images_are_typed_errors() {
    assert!(matches!(decode_image(b""), Err(QrError::Image(_))));
    assert!(matches!(
        decode_image(b"not an image at all"),
        Err(QrError::Image(_))
    ));
    // A PNG signature followed by garbage.
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend_from_slice(&[0x42; 64]);
    assert!(matches!(decode_image(&fake), Err(QrError::Image(_))));
    // A truncated real PNG.
    let png = render_png("hello", 4).unwrap();
    assert!(matches!(
        decode_image(&png[..png.len() / 2]),
        Err(QrError::Image(_))
    ));
    // Too many bytes: rejected before decoding.
    let big = vec![0u8; MAX_IMAGE_BYTES + 1];
    assert_eq!(
        decode_image(&big),
        Err(QrError::ImageTooLarge {
            size: MAX_IMAGE_BYTES + 1,
            max: MAX_IMAGE_BYTES
        })
    );
    // Random bytes (xorshift): always an error, never a panic.
    let mut x: u64 = 88_172_645_463_325_252;
    for n in 0..200 {
        let mut bytes = if n % 2 == 0 {
            b"\x89PNG\r\n\x1a\n".to_vec()
        } else {
            Vec::new()
        };
        for _ in 0..(n * 7 % 300) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        assert!(decode_image(&bytes).is_err());
    }
}

#[test]
fn image_without_a_qr_code() {
    assert_eq!(decode_image(&white_png(200, 200)), Err(QrError::NotFound));
}

/// A greyscale 8-bit PNG of `w`×`h` white pixels using stored (uncompressed) deflate blocks.
fn white_png(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for _ in 0..h {
        raw.push(0u8); // filter: none
        raw.extend(std::iter::repeat_n(255u8, w as usize));
    }
    let mut z = vec![0x78, 0x01];
    let mut chunks = raw.chunks(65_535).peekable();
    while let Some(c) = chunks.next() {
        z.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in kind.iter().chain(data) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_be_bytes());
}

#[test]
fn huge_dimensions_are_rejected() {
    // 9000×1 white pixels: within the byte limit, beyond the dimension limit.
    let png = white_png(9000, 1);
    assert!(matches!(decode_image(&png), Err(QrError::Image(_))));
}

/// Parse the half-block rendering back into modules and decode it.
fn decode_terminal(s: &str, inked_is_dark: bool) -> String {
    let lines: Vec<Vec<char>> = s.lines().map(|l| l.chars().collect()).collect();
    let width = lines[0].len();
    let height = lines.len() * 2;
    let mut px = vec![false; width * height]; // true = dark
    for (row, line) in lines.iter().enumerate() {
        assert_eq!(line.len(), width);
        for (x, c) in line.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected {other:?}"),
            };
            px[2 * row * width + x] = top == inked_is_dark;
            px[(2 * row + 1) * width + x] = bottom == inked_is_dark;
        }
    }
    // The last half line lies outside the symbol: force it light.
    for x in 0..width {
        px[(height - 1) * width + x] = false;
    }
    let scale = 4;
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(width * scale, height * scale, |x, y| {
            if px[(y / scale) * width + x / scale] {
                0
            } else {
                255
            }
        });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1);
    grids[0].decode().expect("decode").1
}

#[test]
fn terminal_rendering_is_dense_and_readable() {
    let link = pairing_link();
    let s = render_terminal(&link).unwrap();
    // 49 modules + 2 × 4 quiet zone = 57 columns, ceil(57 / 2) = 29 lines.
    assert_eq!(s.lines().count(), 29);
    assert!(s.lines().all(|l| l.chars().count() == 57));
    assert!(s.ends_with('\n'));
    // Dark-background terminal: the quiet zone is printed as blocks.
    assert!(s.lines().next().unwrap().chars().all(|c| c == '█'));
    assert_eq!(decode_terminal(&s, false), link);
    let light = render_terminal_with(&link, TerminalBackground::Light).unwrap();
    assert!(light.lines().next().unwrap().chars().all(|c| c == ' '));
    assert_eq!(decode_terminal(&light, true), link);
}

#[test]
fn svg_rendering() {
    let svg = render_svg("p1c://x").unwrap();
    assert!(svg.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg "));
    // Version 1 (21 modules) + quiet zone = 29 units, 8 px each.
    assert!(svg.contains("width=\"232\" height=\"232\" viewBox=\"0 0 29 29\""));
    assert!(svg.contains("<rect width=\"29\" height=\"29\" fill=\"#fff\"/>"));
    // The top-left finder pattern starts at (4, 4) with a 7-module run.
    assert!(svg.contains("M4 4h7v1h-7z"));
    assert!(svg.trim_end().ends_with("</svg>"));
}
