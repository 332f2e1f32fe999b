//! Hostile input: random bytes and mutated real telegrams must never panic.

use std::path::PathBuf;

use p1consent_shared::dsmr::{self, Framer, ParseOptions};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = b"/!()\r\n*.:-0123456789ABCDEFSWsw \xff\x00";

fn exercise(rng: &mut XorShift, input: &[u8]) -> usize {
    let mut n = 0;
    for opts in [ParseOptions::default(), ParseOptions::no_crc()] {
        if let Ok(t) = dsmr::parse(input, opts) {
            n += 1;
            let _ = serde_json::to_string(&t).expect("serialise");
        }
    }
    for f in dsmr::frames(input).flatten() {
        let _ = f.verify_crc();
        let _ = f.parse(ParseOptions::no_crc());
    }
    let mut fr = Framer::with_max_size(64 + rng.below(2048));
    let mut rest = input;
    while !rest.is_empty() {
        let k = 1 + rng.below(97).min(rest.len() - 1);
        let (a, b) = rest.split_at(k.min(rest.len()));
        fr.push(a);
        rest = b;
        while let Some(r) = fr.next_telegram() {
            if let Ok(f) = r {
                let _ = f.parse(ParseOptions::no_crc());
            }
        }
    }
    fr.finish();
    while fr.next_telegram().is_some() {}
    n
}

#[test]
fn random_bytes_do_not_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for i in 0..4000 {
        let len = rng.below(if i % 10 == 0 { 4000 } else { 300 });
        let biased = i % 2 == 0;
        let mut v = Vec::with_capacity(len + 1);
        if i % 3 == 0 {
            v.push(b'/');
        }
        for _ in 0..len {
            let b = if biased {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                rng.next() as u8
            };
            v.push(b);
        }
        exercise(&mut rng, &v);
    }
}

#[test]
fn mutated_samples_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/p1-samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 40);
    let mut rng = XorShift(42);
    let mut parsed = 0;
    for path in &files {
        let orig = std::fs::read(path).expect("read");
        for _ in 0..150 {
            let mut v = orig.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(v.len());
                match rng.below(5) {
                    0 => {
                        if let Some(b) = v.get_mut(at) {
                            *b = INTERESTING[rng.below(INTERESTING.len())];
                        }
                    }
                    1 => v.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                    2 => {
                        if at < v.len() {
                            v.remove(at);
                        }
                    }
                    3 => v.truncate(at),
                    _ => {
                        if let Some(b) = v.get_mut(at) {
                            *b = rng.next() as u8;
                        }
                    }
                }
            }
            parsed += exercise(&mut rng, &v);
        }
    }
    // Most mutations leave a parsable (if CRC-broken) telegram.
    assert!(parsed > files.len() * 150 / 2, "parsed {parsed}");
}
