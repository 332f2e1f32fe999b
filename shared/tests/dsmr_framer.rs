//! Framer behaviour: stream splitting, resynchronisation, limits, CRC variants.

use std::path::PathBuf;

use p1consent_shared::dsmr::{
    self, FrameError, Framer, MAX_TELEGRAM_SIZE, ParseOptions, crc16_arc,
};

fn data(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const STREAM: &str = "p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt";

/// A small DSMR 5 telegram with a correct CRC, written with `fmt` (e.g. upper/lower case).
fn telegram(power: &str, crc_fmt: fn(u16) -> String) -> Vec<u8> {
    let mut body = format!(
        "/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(190324150519W)\r\n\
         1-0:1.8.1(003432.827*kWh)\r\n1-0:1.7.0({power}*kW)\r\n!"
    )
    .into_bytes();
    let crc = crc16_arc(&body);
    body.extend_from_slice(crc_fmt(crc).as_bytes());
    body.extend_from_slice(b"\r\n");
    body
}

fn upper(c: u16) -> String {
    format!("{c:04X}")
}

/// Collect owned results from a framer after pushing `input` in `chunk`-sized pieces.
fn run(input: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut f = Framer::new();
    let mut out = Vec::new();
    for c in input.chunks(chunk) {
        f.push(c);
        while let Some(r) = f.next_telegram() {
            out.push(r.map(|fr| fr.bytes().to_vec()));
        }
    }
    f.finish();
    while let Some(r) = f.next_telegram() {
        out.push(r.map(|fr| fr.bytes().to_vec()));
    }
    out
}

#[test]
fn stream_capture_in_every_chunk_size() {
    let stream = data(STREAM);
    let reference: Vec<_> = dsmr::frame_all(&stream)
        .into_iter()
        .map(|r| r.map(|f| f.bytes().to_vec()))
        .collect();
    assert_eq!(reference.len(), 567);
    // The capture starts with the 320-byte tail of a cut-off telegram.
    assert_eq!(reference[0], Err(FrameError::Garbage { bytes: 320 }));
    for chunk in [1, 7, 64, 4096, stream.len()] {
        let got = run(&stream, chunk);
        assert_eq!(got, reference, "chunk size {chunk}");
    }
    let mut timestamps = Vec::new();
    for r in &reference[1..] {
        let bytes = r.as_ref().expect("telegram");
        assert_eq!(bytes.len(), 778);
        let t = dsmr::parse(bytes, ParseOptions::default()).expect("valid CRC");
        assert!(t.crc_verified);
        assert!(t.warnings.is_empty());
        assert_eq!(t.meter_id.as_deref(), Some("E0044007131650618"));
        timestamps.push(t.timestamp_raw.unwrap_or_default());
    }
    assert_eq!(timestamps.len(), 566);
    assert_eq!(timestamps[0], "190324150519W");
    // One telegram per second, strictly increasing.
    assert!(timestamps.windows(2).all(|w| w[0] < w[1]));
    let mut f = Framer::new();
    f.push(&stream);
    while f.next_telegram().is_some() {}
    let s = f.stats();
    assert_eq!(
        (s.telegrams, s.skipped_bytes, s.dropped_telegrams),
        (566, 320, 0)
    );
}

#[test]
fn garbage_between_telegrams_is_reported() {
    let t1 = telegram("00.378", upper);
    let t2 = telegram("01.000", upper);
    let input = [&t1[..], b"noise\r\n", &t2[..]].concat();
    for chunk in [1, 3, 1000] {
        assert_eq!(
            run(&input, chunk),
            [
                Ok(t1.clone()),
                Err(FrameError::Garbage { bytes: 7 }),
                Ok(t2.clone())
            ]
        );
    }
}

#[test]
fn ff_padding_and_blank_lines_are_silent() {
    let t = telegram("00.378", upper);
    let input = [&[0xFF, 0x00][..], &t, &[0xFF; 5], b"\r\n", &t, &[0xFF]].concat();
    assert_eq!(run(&input, 5), [Ok(t.clone()), Ok(t.clone())]);
    let mut f = Framer::new();
    f.push(&input);
    while f.next_telegram().is_some() {}
    assert_eq!(f.stats().skipped_bytes, 10);
}

#[test]
fn oversize_is_reported_and_skipped() {
    let good = telegram("00.378", upper);
    let mut big = b"/XXX5 big\r\n\r\n".to_vec();
    while big.len() <= MAX_TELEGRAM_SIZE + 100 {
        big.extend_from_slice(b"1-0:1.8.1(000001.000*kWh)\r\n");
    }
    let input = [&big[..], b"!1234\r\n", &good].concat();
    for chunk in [64, 4096, input.len()] {
        let got = run(&input, chunk);
        assert_eq!(got.len(), 2, "chunk {chunk}: {got:?}");
        assert!(
            matches!(got[0], Err(FrameError::Oversize { bytes, max }) if bytes > max && max == MAX_TELEGRAM_SIZE),
            "chunk {chunk}: {:?}",
            got[0]
        );
        assert_eq!(got[1], Ok(good.clone()));
    }
    // The buffer stays bounded while the oversize telegram streams in.
    let mut f = Framer::new();
    for c in big.chunks(512) {
        f.push(c);
        while f.next_telegram().is_some() {}
        assert!(f.buffered() <= MAX_TELEGRAM_SIZE + 512);
    }
}

#[test]
fn stream_starting_mid_telegram() {
    let t = telegram("00.378", upper);
    let input = [&t[40..], &t].concat();
    assert_eq!(
        run(&input, 13),
        [
            Err(FrameError::Garbage {
                bytes: t.len() - 40
            }),
            Ok(t.clone())
        ]
    );
}

#[test]
fn slash_inside_telegram_restarts_framing() {
    let t = telegram("00.378", upper);
    let partial = &t[..60];
    let input = [partial, &t[..]].concat();
    assert_eq!(
        run(&input, 9),
        [
            Err(FrameError::Incomplete {
                data: partial.to_vec()
            }),
            Ok(t.clone())
        ]
    );
}

#[test]
fn truncated_last_telegram_is_unterminated_on_finish() {
    let t = telegram("00.378", upper);
    let partial = &t[..100];
    let input = [&t[..], partial].concat();
    let mut f = Framer::new();
    f.push(&input);
    assert_eq!(
        f.next_telegram().map(|r| r.map(|x| x.bytes().to_vec())),
        Some(Ok(t.clone()))
    );
    assert!(f.next_telegram().is_none(), "waits for more input");
    f.finish();
    assert_eq!(
        f.next_telegram().map(|r| r.map(|x| x.bytes().to_vec())),
        Some(Err(FrameError::Unterminated {
            data: partial.to_vec()
        }))
    );
    assert!(f.next_telegram().is_none());
    // The CRC line itself cut off: '!' plus two digits at end of input.
    let cut = &t[..t.len() - 4];
    let frames = dsmr::frame_all(cut);
    assert_eq!(frames.len(), 1);
    let fr = frames[0].as_ref().expect("frame");
    assert_eq!(fr.crc_text().len(), 2);
}

#[test]
fn no_end_marker_sample_is_recovered_at_next_header() {
    let partial = data("p1-samples/dsmr22_iskra-mt382_no-end-marker.txt");
    let good = telegram("00.378", upper);
    let got = run(&[&partial[..], &good].concat(), 64);
    assert_eq!(got.len(), 2);
    let Err(FrameError::Incomplete { data }) = &got[0] else {
        panic!("{:?}", got[0])
    };
    assert_eq!(data, &partial);
    let t = dsmr::parse(data, ParseOptions::default()).expect("lenient parse");
    assert_eq!(t.energy_delivered_tariff1_kwh, Some(39837.604));
    assert_eq!(t.warnings.len(), 1);
    assert_eq!(got[1], Ok(good));
}

#[test]
fn crlf_split_across_chunks() {
    let t = telegram("00.378", upper);
    let mut f = Framer::new();
    f.push(&t[..t.len() - 1]); // up to and including '\r'
    assert!(f.next_telegram().is_none());
    f.push(b"\n");
    let fr = f.next_telegram().expect("frame").expect("ok");
    assert_eq!(fr.bytes(), &t[..]);
    assert_eq!(fr.verify_crc(), Ok(true));
    // Split between '!' and the CRC digits.
    let bang = t.iter().position(|&b| b == b'!').expect("bang");
    let mut f = Framer::new();
    f.push(&t[..=bang]);
    assert!(f.next_telegram().is_none());
    f.push(&t[bang + 1..]);
    assert_eq!(
        f.next_telegram()
            .expect("frame")
            .map(|x| x.bytes().to_vec()),
        Ok(t.clone())
    );
}

#[test]
fn lowercase_and_three_digit_crc() {
    let lower = telegram("00.378", |c| format!("{c:04x}"));
    let frames = dsmr::frame_all(&lower);
    let fr = frames[0].as_ref().expect("frame");
    assert_eq!(fr.verify_crc(), Ok(true));
    assert!(
        dsmr::parse(&lower, ParseOptions::default())
            .expect("parse")
            .crc_verified
    );

    // Find a power value whose CRC is below 0x1000 and write it with 3 digits.
    let three = (0..10_000)
        .map(|i| {
            telegram(&format!("{:02}.{:03}", i / 1000, i % 1000), |c| {
                format!("{c:X}")
            })
        })
        .find(|t| {
            let bang = t.iter().rposition(|&b| b == b'!').unwrap_or(0);
            crc16_arc(&t[..=bang]) < 0x1000
        })
        .expect("a telegram with a small CRC");
    assert_eq!(three[three.len() - 6], b'!');
    let frames = dsmr::frame_all(&three);
    let fr = frames[0].as_ref().expect("frame");
    assert_eq!(fr.crc_text().len(), 3);
    assert_eq!(fr.verify_crc(), Ok(true));
    let t = dsmr::parse(&three, ParseOptions::default()).expect("parse");
    assert!(t.crc_verified);
}

#[test]
fn crc_mismatch_is_typed() {
    let mut t = telegram("00.378", upper);
    let pos = t.windows(6).position(|w| w == b"00.378").expect("value");
    t[pos] = b'9';
    let frames = dsmr::frame_all(&t);
    let fr = frames[0].as_ref().expect("frame");
    let found = fr.stated_crc().expect("stated");
    let expected = fr.computed_crc();
    assert_ne!(found, expected);
    assert_eq!(
        fr.verify_crc(),
        Err(dsmr::DsmrError::Crc { expected, found })
    );
    let e = dsmr::parse(&t, ParseOptions::default()).expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        format!("CRC mismatch: telegram says {found:04X}, computed {expected:04X}")
    );
}

#[test]
fn bang_inside_a_line_does_not_end_the_telegram() {
    let mut body = b"/ABC5 x\r\n\r\n0-0:96.13.0(Hello!)\r\n!".to_vec();
    let crc = crc16_arc(&body);
    body.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    let frames = dsmr::frame_all(&body);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].as_ref().map(|f| f.bytes().len()), Ok(body.len()));
    let t = dsmr::parse(&body, ParseOptions::default()).expect("parse");
    assert_eq!(t.text_message.as_deref(), Some("Hello!"));
}

#[test]
fn easymeter_gateway_junk() {
    let bytes = data("p1-samples/de-easymeter-q3d.txt");
    let frames = dsmr::frame_all(&bytes);
    assert_eq!(frames.len(), 2);
    let fr = frames[0].as_ref().expect("frame");
    assert!(fr.bytes().ends_with(b"!\r\n"));
    assert_eq!(fr.stated_crc(), None);
    assert_eq!(
        frames[1],
        Err(FrameError::Garbage {
            bytes: bytes.len() - fr.bytes().len()
        })
    );
}

#[test]
fn structural_errors() {
    assert_eq!(
        dsmr::parse(b"", ParseOptions::default()),
        Err(dsmr::DsmrError::Empty)
    );
    assert_eq!(
        dsmr::parse(b"\r\n\xff ", ParseOptions::default()),
        Err(dsmr::DsmrError::Empty)
    );
    assert_eq!(
        dsmr::parse(b"1-0:1.8.1(1*kWh)\r\n!\r\n", ParseOptions::default()),
        Err(dsmr::DsmrError::MissingHeader)
    );
    let big = [
        b"/ABC5\r\n".as_slice(),
        &vec![b'x'; MAX_TELEGRAM_SIZE],
        b"\r\n!\r\n",
    ]
    .concat();
    assert!(matches!(
        dsmr::parse(&big, ParseOptions::default()),
        Err(dsmr::DsmrError::TooLarge { .. })
    ));
}

#[test]
fn malformed_lines_become_warnings() {
    let body = b"/ABC5 x\r\n\r\n1-0:1.8.1(0001.000*kWh\r\n1-0:1.8.2(abc*kWh)\r\n\
                 1-0:32.7.0(230.0*kWh)\r\ngarbage line\r\n(orphan)\r\n1-0:2.8.1(5.5*kWh)\r\n\
                 1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)\r\n!\r\n";
    let t = dsmr::parse(body, ParseOptions::default()).expect("parse");
    let lines: Vec<_> = t.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 9]);
    assert!(t.warnings[0].reason.contains("unbalanced"));
    assert!(t.warnings[1].reason.contains("not a number"));
    assert!(t.warnings[2].reason.contains("unit"));
    assert_eq!(t.warnings[1].text, "1-0:1.8.2(abc*kWh)");
    assert!(t.warnings[3].reason.contains("not an OBIS code"));
    assert_eq!(t.warnings[3].text, "garbage line(orphan)");
    assert!(t.warnings[4].reason.contains("says 2 entries, has 1"));

    assert_eq!(t.energy_returned_tariff1_kwh, Some(5.5));
    assert_eq!(t.energy_delivered_tariff1_kwh, None);
    assert_eq!(t.power_failure_log.as_ref().map(Vec::len), Some(1));
    let o = dsmr::parse(b"/ABC5\r\n(orphan)\r\n!\r\n", ParseOptions::default()).expect("parse");
    assert_eq!(o.warnings.len(), 1);
    assert_eq!(o.warnings[0].line, 2);
    assert!(o.warnings[0].reason.contains("continuation"));
}
