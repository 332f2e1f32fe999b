//! `scan_frame`, the command behind the Pair page's camera: one greyscale frame in, what it
//! shows out. A frame with the meter's pairing QR code gives the code; a frame with another
//! QR code or none keeps the camera looking; zero-size, oversize and mismatched frames are
//! typed errors, refused before decoding.

use p1consent_app_lib::core::{FrameScan, scan_frame};
use p1consent_shared::qr::{self, MAX_FRAME_DIMENSION, QrError};

const PAIRING: &str = "p1consent://pair?v=1&d=AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4_QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9g";

/// `text`'s QR code (`module_px` per module) pasted at (`x0`, `y0`) into a mid-grey
/// `w` × `h` frame, as a camera sees a screen held up to it.
fn frame(text: &str, module_px: u32, w: u32, h: u32, x0: u32, y0: u32) -> Vec<u8> {
    let (side, code) = qr::render_luma(text, module_px).expect("render");
    assert!(x0 + side <= w && y0 + side <= h, "the code fits the frame");
    let mut f = vec![150u8; (w * h) as usize];
    for y in 0..side {
        for x in 0..side {
            // Printed black is never 0 and white never 255 through a camera.
            let p = if code[(y * side + x) as usize] == 0 {
                40
            } else {
                215
            };
            f[((y0 + y) * w + x0 + x) as usize] = p;
        }
    }
    f
}

#[test]
fn a_frame_with_the_pairing_code_gives_the_code() {
    let f = frame(PAIRING, 5, 640, 480, 150, 70);
    assert_eq!(
        scan_frame(640, 480, &f),
        Ok(FrameScan::Pairing {
            code: PAIRING.to_string()
        })
    );
    // Off-centre in a portrait frame too.
    let f = frame(PAIRING, 4, 360, 640, 10, 300);
    assert_eq!(
        scan_frame(360, 640, &f),
        Ok(FrameScan::Pairing {
            code: PAIRING.to_string()
        })
    );
}

#[test]
fn another_qr_code_or_none_keeps_looking() {
    let f = frame("https://example.org/not-a-meter", 5, 640, 480, 100, 100);
    assert_eq!(scan_frame(640, 480, &f), Ok(FrameScan::Other));
    let request = "p1consent://request?v=1&d=AAAA";
    let f = frame(request, 5, 640, 480, 100, 100);
    assert_eq!(scan_frame(640, 480, &f), Ok(FrameScan::Other));
    assert_eq!(
        scan_frame(320, 240, &vec![255; 320 * 240]),
        Ok(FrameScan::Nothing)
    );
    // Garbage of the right length: noise, no code.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..640 * 480)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    assert_eq!(scan_frame(640, 480, &noise), Ok(FrameScan::Nothing));
    // Half the code cut off by the frame's edge.
    let f = frame(PAIRING, 5, 640, 480, 150, 70);
    let cut: Vec<u8> = f
        .chunks(640)
        .flat_map(|row| {
            let mut r = row.to_vec();
            r[350..].fill(150);
            r
        })
        .collect();
    assert_eq!(scan_frame(640, 480, &cut), Ok(FrameScan::Nothing));
}

#[test]
fn bad_frames_are_typed_errors() {
    assert_eq!(
        scan_frame(0, 0, &[]),
        Err(QrError::FrameSize {
            width: 0,
            height: 0
        })
    );
    assert_eq!(
        scan_frame(640, 0, &[]),
        Err(QrError::FrameSize {
            width: 640,
            height: 0
        })
    );
    assert_eq!(
        scan_frame(MAX_FRAME_DIMENSION + 1, 480, &[0; 16]),
        Err(QrError::FrameSize {
            width: MAX_FRAME_DIMENSION + 1,
            height: 480
        })
    );
    // Sizes whose product overflows 32 bits are refused before any arithmetic on them.
    assert_eq!(
        scan_frame(u32::MAX, u32::MAX, &[0; 16]),
        Err(QrError::FrameSize {
            width: u32::MAX,
            height: u32::MAX
        })
    );
    // Garbage: bytes that do not match the size given.
    assert_eq!(
        scan_frame(640, 480, &[7; 1000]),
        Err(QrError::FrameLength {
            expected: 640 * 480,
            got: 1000
        })
    );
    assert_eq!(
        scan_frame(2, 2, &[0; 5]),
        Err(QrError::FrameLength {
            expected: 4,
            got: 5
        })
    );
    // Each error reads as a sentence.
    assert_eq!(
        QrError::FrameSize {
            width: 0,
            height: 0
        }
        .to_string(),
        "frame size 0x0 out of range 1..=2048 per side"
    );
}
