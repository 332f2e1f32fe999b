//! CRC-16/ARC as used by DSMR 4.x/5.x and e-MUCS P1 telegrams.
//!
//! Polynomial 0x8005 reflected (0xA001), initial value 0, no final xor,
//! computed over every byte from the `/` of the header up to and including `!`.

/// Slicing-by-8 tables for the reflected CRC-16/ARC: `TABLES[0]` is the classic
/// byte-at-a-time table, `TABLES[k][i]` the CRC of byte `i` followed by `k` zero bytes.
/// Eight bytes per step instead of one: the CRC was a quarter of the parse time
/// (benches/parse.rs).
const TABLES: [[u16; 256]; 8] = build_tables();

const fn build_tables() -> [[u16; 256]; 8] {
    let mut t = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// Incremental CRC-16/ARC state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc16 {
    value: u16,
}

impl Crc16 {
    /// A fresh state (initial value 0).
    pub const fn new() -> Self {
        Self { value: 0 }
    }

    /// Feed more bytes.
    pub fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut crc = self.value;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let x = crc ^ u16::from_le_bytes([c[0], c[1]]);
            crc = t[7][usize::from(x as u8)]
                ^ t[6][usize::from(x >> 8)]
                ^ t[5][usize::from(c[2])]
                ^ t[4][usize::from(c[3])]
                ^ t[3][usize::from(c[4])]
                ^ t[2][usize::from(c[5])]
                ^ t[1][usize::from(c[6])]
                ^ t[0][usize::from(c[7])];
        }
        for &b in chunks.remainder() {
            crc = (crc >> 8) ^ t[0][usize::from((crc ^ u16::from(b)) as u8)];
        }
        self.value = crc;
    }

    /// The CRC of everything fed so far.
    pub const fn value(&self) -> u16 {
        self.value
    }
}

/// CRC-16/ARC of `data` in one call. `crc16_arc(b"123456789") == 0xBB3D`.
pub fn crc16_arc(data: &[u8]) -> u16 {
    let mut c = Crc16::new();
    c.update(data);
    c.value()
}

/// Parse the 1–4 hex digits written after `!` (either case, leading zeros may be dropped).
pub fn parse_crc_digits(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    let mut v: u16 = 0;
    for &d in digits {
        let n = hex_val(d)?;
        v = (v << 4) | u16::from(n);
    }
    Some(v)
}

pub(crate) const fn hex_val(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
        assert_eq!(crc16_arc(b""), 0);
        let mut c = Crc16::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xBB3D);
    }

    /// Slicing-by-8 agrees with the bitwise definition at every length and split point.
    #[test]
    fn slicing_matches_bitwise() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0u16;
            for &b in data {
                crc ^= u16::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0xA001
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(97) ^ (i >> 3)) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(crc16_arc(&data[..len]), bitwise(&data[..len]), "len {len}");
        }
        for split in 0..40 {
            let mut c = Crc16::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.value(), bitwise(&data), "split {split}");
        }
    }

    #[test]
    fn digits() {
        assert_eq!(parse_crc_digits(b"522B"), Some(0x522B));
        assert_eq!(parse_crc_digits(b"522b"), Some(0x522B));
        assert_eq!(parse_crc_digits(b"A3F"), Some(0x0A3F));
        assert_eq!(parse_crc_digits(b""), None);
        assert_eq!(parse_crc_digits(b"12345"), None);
        assert_eq!(parse_crc_digits(b"12G4"), None);
    }
}
