//! The streaming DSMR framer fed in random chunk sizes must never panic and must frame exactly
//! like the one-shot `frame_all` over the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_shared::dsmr::{FrameError, Framer, frame_all};

#[derive(Debug, PartialEq)]
enum Item {
    Frame(Vec<u8>),
    Err(FrameError),
}

fn drain(f: &mut Framer, out: &mut Vec<Item>) {
    while let Some(r) = f.next_telegram() {
        out.push(match r {
            Ok(fr) => Item::Frame(fr.bytes().to_vec()),
            Err(e) => Item::Err(e),
        });
    }
}

fuzz_target!(|input: &[u8]| {
    // First two bytes seed the chunk sizes; the rest is the serial stream.
    if input.len() < 2 {
        return;
    }
    let mut state = u32::from(u16::from_le_bytes([input[0], input[1]])) | 1;
    let data = &input[2..];
    let mut next_len = || {
        // xorshift32: chunk sizes 1..=300, biased to small ones.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let r = state as usize;
        if r % 4 == 0 { 1 + r % 300 } else { 1 + r % 8 }
    };

    let mut framer = Framer::new();
    let mut streamed = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = next_len().min(data.len() - pos);
        framer.push(&data[pos..pos + n]);
        pos += n;
        drain(&mut framer, &mut streamed);
        assert!(framer.buffered() <= data.len());
    }
    framer.finish();
    drain(&mut framer, &mut streamed);
    assert_eq!(framer.buffered(), 0, "bytes left buffered after finish");

    let whole: Vec<Item> = frame_all(data)
        .into_iter()
        .map(|r| match r {
            Ok(fr) => Item::Frame(fr.bytes().to_vec()),
            Err(e) => Item::Err(e),
        })
        .collect();
    assert_eq!(streamed, whole, "chunked framing differs from frame_all");
});
