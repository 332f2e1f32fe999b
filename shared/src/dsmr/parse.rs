//! Line-based OBIS parser.

use std::borrow::Cow;

use super::crc::{crc16_arc, parse_crc_digits};
use super::framer::MAX_TELEGRAM_SIZE;
use super::model::{
    DateTimeParts, Demand, Header, LineError, MbusChannel, MbusReading, MonthlyPeak, PowerFailure,
    Quantity, Telegram, Timestamp, UnknownLine, mbus_kind,
};
use super::{DsmrError, ParseOptions};

/// An OBIS reduced id `A-B:C.D.E[*F]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Obis {
    /// Medium (0 abstract, 1 electricity).
    pub a: u8,
    /// Channel (0, or the M-Bus channel 1–4).
    pub b: u8,
    /// Quantity.
    pub c: u8,
    /// Processing.
    pub d: u8,
    /// Tariff / classification.
    pub e: u8,
    /// Optional historical value (`*255` in German D0 telegrams).
    pub f: Option<u8>,
}

impl Obis {
    /// Parse `A-B:C.D.E` optionally followed by `*F`. Returns `None` if it is not of that shape.
    /// `*F` (German D0) and the `.F` form seen in some spec examples (`1-0:31.7.0.255`) both
    /// give `f`. Every field is 1–3 digits and at most 255.
    pub fn parse(code: &[u8]) -> Option<Self> {
        // One pass over the bytes: this runs for every line of every telegram.
        let mut fields = [0u8; 6];
        let (mut k, mut value, mut digits) = (0usize, 0u16, 0u8);
        for &ch in code {
            if ch.is_ascii_digit() {
                if digits == 3 {
                    return None;
                }
                value = value * 10 + u16::from(ch - b'0');
                digits += 1;
                continue;
            }
            let separator_ok = match k {
                0 => ch == b'-',
                1 => ch == b':',
                2 | 3 => ch == b'.',
                4 => ch == b'*' || ch == b'.',
                _ => false,
            };
            if digits == 0 || !separator_ok {
                return None;
            }
            *fields.get_mut(k)? = u8::try_from(value).ok()?;
            (k, value, digits) = (k + 1, 0, 0);
        }
        if digits == 0 {
            return None;
        }
        *fields.get_mut(k)? = u8::try_from(value).ok()?;
        let [a, b, c, d, e, f] = fields;
        match k {
            4 => Some(Self {
                a,
                b,
                c,
                d,
                e,
                f: None,
            }),
            5 => Some(Self {
                a,
                b,
                c,
                d,
                e,
                f: Some(f),
            }),
            _ => None,
        }
    }
}

const fn is_filler(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0x00 | 0xFF)
}

fn lossy(v: &[u8]) -> String {
    // Nearly every value is ASCII: skip the lossy decoder's chunking for those.
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(v).into_owned(),
    }
}

fn line_text(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    if s.chars().count() > 256 {
        s.chars().take(256).collect()
    } else {
        s.into_owned()
    }
}

/// Parse one telegram: `/` header … `!` [CRC]. Leading CR/LF/space/0x00/0xFF are skipped;
/// trailing data after the end line is ignored with a warning.
///
/// Errors only for structural problems ([`DsmrError`]); everything else is recorded in
/// [`Telegram::warnings`]. A telegram without a `!` line (cut-off capture) is parsed with a
/// warning and without CRC check.
pub fn parse(bytes: &[u8], opts: ParseOptions) -> Result<Telegram, DsmrError> {
    let start = bytes
        .iter()
        .position(|&b| !is_filler(b))
        .ok_or(DsmrError::Empty)?;
    let data = bytes.get(start..).unwrap_or(&[]);
    if data.first() != Some(&b'/') {
        return Err(DsmrError::MissingHeader);
    }
    let bang = memchr::memchr_iter(b'!', data).find(|&j| j > 0 && data.get(j - 1) == Some(&b'\n'));
    let body = match bang {
        Some(j) => data.get(..=j).unwrap_or(data),
        None => data,
    };
    if body.len() > MAX_TELEGRAM_SIZE {
        return Err(DsmrError::TooLarge {
            size: body.len(),
            max: MAX_TELEGRAM_SIZE,
        });
    }

    let mut t = Telegram::default();
    let mut warnings = Vec::new();
    let end_line = memchr::memchr_iter(b'\n', body).count() + 1;

    // CRC.
    let mut crc_digits_len = 0;
    match bang {
        Some(j) => {
            let after = data.get(j + 1..).unwrap_or(&[]);
            let n = after.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            crc_digits_len = n;
            let digits = after.get(..n).unwrap_or(&[]);
            let rest = after.get(n..).unwrap_or(&[]);
            if n > 4 {
                warnings.push(LineError {
                    line: end_line,
                    text: line_text(after.get(..n.min(16)).unwrap_or(&[])),
                    reason: format!("CRC field has {n} hex digits (expected 4); not checked"),
                });
            } else if let Some(found) = parse_crc_digits(digits) {
                t.crc = Some(found);
                let expected = crc16_arc(body);
                if expected == found {
                    t.crc_verified = true;
                } else if opts.check_crc {
                    return Err(DsmrError::Crc { expected, found });
                } else {
                    warnings.push(LineError {
                        line: end_line,
                        text: line_text(digits),
                        reason: format!(
                            "CRC mismatch: telegram says {found:04X}, computed {expected:04X}"
                        ),
                    });
                }
            }
            let junk = rest.iter().filter(|&&b| !is_filler(b)).count();
            if junk > 0 {
                warnings.push(LineError {
                    line: end_line,
                    text: line_text(rest.get(..rest.len().min(64)).unwrap_or(&[])),
                    reason: format!("{} bytes after the end line ignored", rest.len()),
                });
            }
        }
        None => warnings.push(LineError {
            line: end_line,
            text: String::new(),
            reason: "no '!' end line (truncated telegram?); CRC not checked".to_string(),
        }),
    }

    // Lines (without the final '!').
    let content = match bang {
        Some(_) => body.get(..body.len().saturating_sub(1)).unwrap_or(&[]),
        None => body,
    };
    let mut lines = content.split(|&b| b == b'\n');
    let header_line = strip_cr(lines.next().unwrap_or(&[]));
    t.header = parse_header(header_line);

    // One values buffer for all lines (was one allocation per line).
    let mut vals: Vec<&'static [u8]> = Vec::with_capacity(16);
    let mut pending: Option<(usize, Cow<'_, [u8]>)> = None;
    for (idx, raw) in lines.enumerate() {
        let line_no = idx + 2;
        let line = trim(strip_cr(raw));
        if line.is_empty() {
            continue;
        }
        if line.first() == Some(&b'(') {
            match pending.as_mut() {
                Some((_, acc)) => acc.to_mut().extend_from_slice(line),
                None => warnings.push(LineError {
                    line: line_no,
                    text: line_text(line),
                    reason: "continuation line without a preceding OBIS line".to_string(),
                }),
            }
            continue;
        }
        if let Some((n, l)) = pending.take() {
            vals = process_line(&mut t, &mut warnings, n, &l, vals);
        }
        pending = Some((line_no, Cow::Borrowed(line)));
    }
    if let Some((n, l)) = pending.take() {
        process_line(&mut t, &mut warnings, n, &l, vals);
    }

    if bang.is_some()
        && crc_digits_len == 0
        && let Some(v) = &t.version
    {
        warnings.push(LineError {
            line: end_line,
            text: "!".to_string(),
            reason: format!("no CRC after '!' although version {v} telegrams carry one"),
        });
    }
    t.mbus.sort_by_key(|c| c.channel);
    for ch in &mut t.mbus {
        ch.empty = ch.reading.as_ref().is_none_or(|r| !r.timestamp.clock_set)
            || ch.equipment_id_raw.as_deref() == Some("");
    }
    t.warnings = warnings;
    Ok(t)
}

fn strip_cr(l: &[u8]) -> &[u8] {
    match l.split_last() {
        Some((b'\r', rest)) => rest,
        _ => l,
    }
}

fn trim(mut l: &[u8]) -> &[u8] {
    while let Some((f, rest)) = l.split_first() {
        if is_filler(*f) {
            l = rest;
        } else {
            break;
        }
    }
    while let Some((last, rest)) = l.split_last() {
        if is_filler(*last) {
            l = rest;
        } else {
            break;
        }
    }
    l
}

fn parse_header(line: &[u8]) -> Header {
    let raw = lossy(line);
    let after = line.get(1..).unwrap_or(&[]);
    let flag = after
        .get(..3)
        .filter(|m| m.iter().all(u8::is_ascii_alphabetic));
    match flag {
        Some(m) => Header {
            raw,
            manufacturer: Some(lossy(m)),
            identification: lossy(after.get(4..).unwrap_or(&[])),
        },
        None => Header {
            raw,
            manufacturer: None,
            identification: lossy(after),
        },
    }
}

/// Position of `b` in a short slice. P1 lines and values are a few dozen bytes, where a
/// plain loop beats `memchr`'s set-up cost (measured with callgrind, see PERFORMANCE-protocol).
fn find_byte(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&x| x == b)
}

/// Split `CODE(v1)(v2)…` into code and values.
fn split_line<'a>(line: &'a [u8], values: &mut Vec<&'a [u8]>) -> Result<&'a [u8], String> {
    values.clear();
    let open = find_byte(b'(', line).ok_or("no value in parentheses")?;
    let code = trim(line.get(..open).unwrap_or(&[]));
    if code.is_empty() {
        return Err("missing OBIS code".into());
    }
    if find_byte(b')', code).is_some() {
        return Err("unbalanced parentheses".into());
    }
    let mut i = open;
    loop {
        // line[i] == '('
        let start = i + 1;
        let rest = line.get(start..).unwrap_or(&[]);
        let close = find_byte(b')', rest).ok_or("unbalanced parentheses: missing ')'")?;
        let v = rest.get(..close).unwrap_or(&[]);
        if find_byte(b'(', v).is_some() {
            return Err("unbalanced parentheses: '(' inside a value".into());
        }
        values.push(v);
        i = start + close + 1;
        while line.get(i).is_some_and(|&b| b == b' ' || b == b'\t') {
            i += 1;
        }
        match line.get(i) {
            None => return Ok(code),
            Some(b'(') => {}
            Some(_) => return Err("unexpected text after a value".into()),
        }
    }
}

/// Parses one (joined) line. `buf` is an empty vector whose allocation is reused for the
/// line's values and handed back empty (the in-place `collect` keeps the allocation).
fn process_line(
    t: &mut Telegram,
    warnings: &mut Vec<LineError>,
    line_no: usize,
    line: &[u8],
    mut buf: Vec<&'static [u8]>,
) -> Vec<&'static [u8]> {
    buf.clear();
    let mut vals: Vec<&[u8]> = buf.into_iter().collect();
    process_values(t, warnings, line_no, line, &mut vals);
    vals.clear();
    vals.into_iter().map(|_| -> &'static [u8] { &[] }).collect()
}

fn process_values<'a>(
    t: &mut Telegram,
    warnings: &mut Vec<LineError>,
    line_no: usize,
    line: &'a [u8],
    vals: &mut Vec<&'a [u8]>,
) {
    let res = split_line(line, vals).and_then(|code| {
        let known = match Obis::parse(code) {
            Some(obis) if matches!(obis.f, None | Some(255)) => apply(t, obis, vals)?,
            Some(_) => false,
            None => return Err(format!("not an OBIS code: {:?}", lossy(code))),
        };
        if !known {
            t.unknown.push(UnknownLine {
                obis: lossy(code),
                values: vals.iter().map(|v| lossy(v)).collect(),
            });
        }
        Ok(())
    });
    if let Err(reason) = res {
        warnings.push(LineError {
            line: line_no,
            text: line_text(line),
            reason,
        });
    }
}

type R<T> = Result<T, String>;

fn one<'a>(vals: &[&'a [u8]]) -> R<&'a [u8]> {
    match vals {
        [v] => Ok(v),
        _ => Err(format!("expected 1 value, found {}", vals.len())),
    }
}

fn as_str(v: &[u8]) -> R<&str> {
    std::str::from_utf8(v).map_err(|_| "value is not valid UTF-8".to_string())
}

/// A plain decimal number: optional `-`, digits, at most one `.`.
fn number(v: &[u8]) -> R<f64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    let mut dots = 0;
    let mut n = 0;
    for &b in digits {
        match b {
            b'0'..=b'9' => n += 1,
            b'.' => dots += 1,
            _ => return Err(format!("not a number: {:?}", lossy(v))),
        }
    }
    if n == 0 || dots > 1 || n > 30 {
        return Err(format!("not a number: {:?}", lossy(v)));
    }
    // Fast path (every meter value): at most 15 significant digits, so the digits as an
    // integer and 10^k are exact doubles and one IEEE division is correctly rounded, the same
    // result `str::parse::<f64>` gives (Clinger's fast path).
    if n <= 15 {
        let mut m: u64 = 0;
        let mut k = 0usize;
        let mut after_dot = false;
        for &b in digits {
            if b == b'.' {
                after_dot = true;
            } else {
                m = m * 10 + u64::from(b - b'0');
                k += usize::from(after_dot);
            }
        }
        if let Some(p) = POW10.get(k) {
            let x = m as f64 / p;
            return Ok(if digits.len() < v.len() { -x } else { x });
        }
    }
    as_str(v)?
        .parse::<f64>()
        .map_err(|_| format!("not a number: {:?}", lossy(v)))
}

const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

fn integer(v: &[u8]) -> R<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(format!("not an integer: {:?}", lossy(v)));
    }
    // At most 19 decimal digits always fit a u64.
    Ok(v.iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

fn small<T: TryFrom<u64>>(v: &[u8]) -> R<T> {
    let n = integer(v)?;
    T::try_from(n).map_err(|_| format!("integer out of range: {n}"))
}

/// Split `value*unit`.
fn quantity(v: &[u8]) -> R<(f64, &[u8])> {
    match find_byte(b'*', v) {
        Some(i) => Ok((
            number(v.get(..i).unwrap_or(&[]))?,
            v.get(i + 1..).unwrap_or(&[]),
        )),
        None => Ok((number(v)?, &[])),
    }
}

/// A value in `unit`, or in `milli_unit` (scaled by 1/1000, e.g. Wh → kWh); no unit = `unit`.
fn scaled(v: &[u8], unit: &str, milli_unit: Option<&str>) -> R<f64> {
    let (x, u) = quantity(v)?;
    if u.is_empty() || u.eq_ignore_ascii_case(unit.as_bytes()) {
        Ok(x)
    } else if milli_unit.is_some_and(|m| u.eq_ignore_ascii_case(m.as_bytes())) {
        Ok(x / 1000.0)
    } else {
        Err(format!("unexpected unit {:?} (expected {unit})", lossy(u)))
    }
}

fn count_with_unit(v: &[u8], unit: &[u8]) -> R<u64> {
    match find_byte(b'*', v) {
        Some(i) => {
            let u = v.get(i + 1..).unwrap_or(&[]);
            if !u.eq_ignore_ascii_case(unit) {
                return Err(format!("unexpected unit {:?}", lossy(u)));
            }
            integer(v.get(..i).unwrap_or(&[]))
        }
        None => integer(v),
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// Parse a `YYMMDDhhmmss[S|W]` timestamp. Errors only if the shape is wrong; impossible dates
/// (placeholders such as `632525252525W`) give `clock_set: false` and no ISO form.
pub fn parse_timestamp(v: &[u8]) -> Result<Timestamp, String> {
    let (digits, flag) = match v.len() {
        12 => (v, None),
        13 => (v.get(..12).unwrap_or(&[]), v.get(12).copied()),
        _ => return Err(format!("bad timestamp {:?}", lossy(v))),
    };
    let dst = match flag {
        None => None,
        Some(b'S' | b's') => Some(true),
        Some(b'W' | b'w') => Some(false),
        Some(_) => return Err(format!("bad DST flag in timestamp {:?}", lossy(v))),
    };
    let mut f = [0u8; 6];
    for (k, slot) in f.iter_mut().enumerate() {
        let pair = digits.get(2 * k..2 * k + 2).unwrap_or(&[]);
        match pair {
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                *slot = (a - b'0') * 10 + (b - b'0');
            }
            _ => return Err(format!("bad timestamp {:?}", lossy(v))),
        }
    }
    let [yy, month, day, hour, minute, second] = f;
    let year = 2000 + u16::from(yy);
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour < 24
        && minute < 60
        && second < 60;
    let parts = valid.then_some(DateTimeParts {
        year,
        month,
        day,
        hour,
        minute,
        second,
        dst,
    });
    // Placeholders: year 2000 (clock never set) and 1970-01-01 (epoch) besides impossible dates.
    let clock_set = valid && yy != 0 && !(yy == 70 && month == 1 && day == 1);
    let iso = parts.filter(|_| clock_set).map(|p| {
        let offset = match p.dst {
            Some(true) => "+02:00",
            Some(false) => "+01:00",
            None => "",
        };
        // Built by hand: `format!` was a sixth of the parse time (callgrind).
        let mut iso = String::with_capacity(25);
        let two = |iso: &mut String, n: u8| {
            iso.push(char::from(b'0' + n / 10 % 10));
            iso.push(char::from(b'0' + n % 10));
        };
        two(&mut iso, (p.year / 100) as u8);
        two(&mut iso, (p.year % 100) as u8);
        for (sep, n) in [
            ('-', p.month),
            ('-', p.day),
            ('T', p.hour),
            (':', p.minute),
            (':', p.second),
        ] {
            iso.push(sep);
            two(&mut iso, n);
        }
        iso.push_str(offset);
        iso
    });
    Ok(Timestamp {
        raw: lossy(v),
        iso,
        clock_set,
        parts,
    })
}

/// Hex-decode `raw` when it is non-empty even-length hex of printable ASCII.
fn decode_hex_text(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let mut out = String::with_capacity(raw.len() / 2);
    for pair in raw.chunks_exact(2) {
        let [h, l] = pair else { return None };
        let byte = (super::crc::hex_val(*h)? << 4) | super::crc::hex_val(*l)?;
        if !(byte == b'\t' || byte == b'\n' || byte == b'\r' || (0x20..0x7F).contains(&byte)) {
            return None;
        }
        out.push(char::from(byte));
    }
    Some(out)
}

/// (decoded-or-raw, raw)
fn hex_text(raw: &[u8]) -> (String, String) {
    let r = lossy(raw);
    (decode_hex_text(raw).unwrap_or_else(|| r.clone()), r)
}

/// The channel `n`, created on first use (`None` never happens in practice; no indexing).
fn channel(t: &mut Telegram, n: u8) -> Option<&mut MbusChannel> {
    if !t.mbus.iter().any(|c| c.channel == n) {
        t.mbus.push(MbusChannel::new(n));
    }
    t.mbus.iter_mut().find(|c| c.channel == n)
}

fn set_reading(t: &mut Telegram, n: u8, reading: MbusReading) {
    if let Some(ch) = channel(t, n) {
        ch.reading = Some(reading);
    }
}

fn reading_value(v: &[u8]) -> R<(f64, Option<String>)> {
    let (x, u) = quantity(v)?;
    Ok((x, (!u.is_empty()).then(|| lossy(u))))
}

/// Apply a known OBIS line. `Ok(false)` = not a mapped code (caller keeps it in `unknown`).
fn apply(t: &mut Telegram, o: Obis, vals: &[&[u8]]) -> R<bool> {
    match (o.a, o.b, o.c, o.d, o.e) {
        (1, 3 | 0, 0, 2, 8) => t.version = Some(lossy(one(vals)?)),
        (0, 0, 96, 1, 4) if t.version.is_none() => t.version = Some(lossy(one(vals)?)),
        (0, 0, 1, 0, 0) => {
            let ts = parse_timestamp(one(vals)?)?;
            t.timestamp_raw = Some(ts.raw.clone());
            t.clock_set = Some(ts.clock_set);
            t.timestamp = Some(ts);
        }
        (0, 0, 96, 1, 1) | (0, 0, 96, 1, 0) | (0, 0, 42, 0, 0) if t.meter_id.is_none() => {
            let (text, raw) = hex_text(one(vals)?);
            t.meter_id = Some(text);
            t.meter_id_raw = Some(raw);
        }
        (1, 0, c @ (1 | 2), 8, e @ (0..=2)) => {
            let kwh = Some(scaled(one(vals)?, "kWh", Some("Wh"))?);
            match (c, e) {
                (1, 0) => t.energy_delivered_total_kwh = kwh,
                (1, 1) => t.energy_delivered_tariff1_kwh = kwh,
                (1, _) => t.energy_delivered_tariff2_kwh = kwh,
                (_, 0) => t.energy_returned_total_kwh = kwh,
                (_, 1) => t.energy_returned_tariff1_kwh = kwh,
                _ => t.energy_returned_tariff2_kwh = kwh,
            }
        }
        (0, 0, 96, 14, 0) => t.tariff = Some(small(one(vals)?)?),
        (1, 0, c @ (1 | 2 | 21 | 41 | 61 | 22 | 42 | 62), 7, 0) => {
            let kw = Some(scaled(one(vals)?, "kW", Some("W"))?);
            match c {
                1 => t.power_delivered_kw = kw,
                2 => t.power_returned_kw = kw,
                21 => t.power_delivered_l1_kw = kw,
                41 => t.power_delivered_l2_kw = kw,
                61 => t.power_delivered_l3_kw = kw,
                22 => t.power_returned_l1_kw = kw,
                42 => t.power_returned_l2_kw = kw,
                _ => t.power_returned_l3_kw = kw,
            }
        }
        (1, 0, c @ (32 | 52 | 72), 7, 0) => {
            let v = Some(scaled(one(vals)?, "V", None)?);
            match c {
                32 => t.voltage_l1_v = v,
                52 => t.voltage_l2_v = v,
                _ => t.voltage_l3_v = v,
            }
        }
        (1, 0, c @ (31 | 51 | 71), 7, 0) => {
            let a = Some(scaled(one(vals)?, "A", None)?);
            match c {
                31 => t.current_l1_a = a,
                51 => t.current_l2_a = a,
                _ => t.current_l3_a = a,
            }
        }
        (0, 0, 96, 7, 21) => t.power_failures = Some(integer(one(vals)?)?),
        (0, 0, 96, 7, 9) => t.long_power_failures = Some(integer(one(vals)?)?),
        (1, 0, 99, 97, 0) => {
            let (log, err) = failure_log(vals)?;
            t.power_failure_log = Some(log);
            if let Some(e) = err {
                return Err(e);
            }
        }
        (1, 0, c @ (32 | 52 | 72), d @ (32 | 36), 0) => {
            let n = Some(integer(one(vals)?)?);
            match (c, d) {
                (32, 32) => t.voltage_sags_l1 = n,
                (52, 32) => t.voltage_sags_l2 = n,
                (_, 32) => t.voltage_sags_l3 = n,
                (32, _) => t.voltage_swells_l1 = n,
                (52, _) => t.voltage_swells_l2 = n,
                _ => t.voltage_swells_l3 = n,
            }
        }
        (0, 0, 96, 13, e @ (0 | 1)) => {
            // Long messages may be wrapped over several parenthesised groups.
            let joined: Vec<u8> = vals.concat();
            let (text, raw) = hex_text(&joined);
            if e == 0 {
                t.text_message = Some(text);
                t.text_message_raw = Some(raw);
            } else {
                t.text_message_code = Some(text);
                t.text_message_code_raw = Some(raw);
            }
        }
        (0, 0, 17, 0, 0) => {
            let (value, unit) = quantity(one(vals)?)?;
            t.electricity_threshold = Some(Quantity {
                value,
                unit: lossy(unit),
            });
        }
        (0, 0, 96, 3, 10) => t.breaker_state = Some(small(one(vals)?)?),
        (1, 0, 31, 4, 0) => t.current_limit_a = Some(scaled(one(vals)?, "A", None)?),
        (1, 0, 1, 4, 0) => t.average_demand_kw = Some(scaled(one(vals)?, "kW", Some("W"))?),
        (1, 0, 1, 6, 0) => match vals {
            [ts, v] => {
                t.max_demand_month = Some(Demand {
                    timestamp: parse_timestamp(ts)?,
                    power_kw: scaled(v, "kW", Some("W"))?,
                });
            }
            _ => return Err(format!("expected 2 values, found {}", vals.len())),
        },
        (0, 0, 98, 1, 0) => {
            let (hist, err) = demand_history(vals)?;
            t.max_demand_history = Some(hist);
            if let Some(e) = err {
                return Err(e);
            }
        }
        (0, n @ 1..=4, 24, 1, 0) => {
            let dt: u16 = small(one(vals)?)?;
            if let Some(ch) = channel(t, n) {
                ch.device_type = Some(dt);
                ch.kind = mbus_kind(dt).map(str::to_string);
            }
        }
        (0, n @ 1..=4, 96, 1, 0 | 1) => {
            let v = one(vals)?;
            let Some(ch) = channel(t, n) else {
                return Ok(false);
            };
            if ch.equipment_id.is_some() {
                return Ok(false);
            }
            let (text, raw) = hex_text(v);
            ch.equipment_id = Some(text);
            ch.equipment_id_raw = Some(raw);
        }
        (0, n @ 1..=4, 24, 4, 0) => {
            let v = small(one(vals)?)?;
            if let Some(ch) = channel(t, n) {
                ch.valve_position = Some(v);
            }
        }
        (0, n @ 1..=4, 96, 3, 10) => {
            let v = small(one(vals)?)?;
            if let Some(ch) = channel(t, n) {
                ch.breaker_state = Some(v);
            }
        }
        (0, n @ 1..=4, 24, 2, 0 | 1 | 3) => match vals {
            [ts, v] => {
                let timestamp = parse_timestamp(ts)?;
                let (value, unit) = reading_value(v)?;
                let obis = format!("{}-{}:{}.{}.{}", o.a, o.b, o.c, o.d, o.e);
                set_reading(
                    t,
                    n,
                    MbusReading {
                        timestamp,
                        value,
                        unit,
                        obis,
                    },
                );
            }
            _ => return Err(format!("expected 2 values, found {}", vals.len())),
        },
        // DSMR 2.2/3.0: 0-n:24.3.0(ts)(..)(..)(..)(0-n:24.2.1)(m3) + (value) on the next line.
        (0, n @ 1..=4, 24, 3, 0) => match vals {
            [ts, _, _, _, code, unit, v] => {
                let timestamp = parse_timestamp(ts)?;
                let (value, inline_unit) = reading_value(v)?;
                let unit = inline_unit.or_else(|| (!unit.is_empty()).then(|| lossy(unit)));
                set_reading(
                    t,
                    n,
                    MbusReading {
                        timestamp,
                        value,
                        unit,
                        obis: lossy(code),
                    },
                );
            }
            [_, _, _, _, _, _] => {
                return Err("DSMR 2.2 gas reading: value line missing".to_string());
            }
            _ => return Err(format!("expected 7 values, found {}", vals.len())),
        },
        _ => return Ok(false),
    }
    Ok(true)
}

/// `(count)(0-0:96.7.19)(ts)(duration*s)…`; returns the entries and a count-mismatch note.
fn failure_log(vals: &[&[u8]]) -> R<(Vec<PowerFailure>, Option<String>)> {
    let (count, rest) = match vals {
        [] => return Err("empty power failure log".into()),
        [c] => (c, &[][..]),
        [c, _obis, rest @ ..] => (c, rest),
    };
    let count = if count.is_empty() { 0 } else { integer(count)? };
    if rest.len() % 2 != 0 {
        return Err("power failure log: odd number of timestamp/duration values".into());
    }
    let mut log = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks_exact(2) {
        if let [ts, d] = pair {
            log.push(PowerFailure {
                end: parse_timestamp(ts)?,
                duration_s: count_with_unit(d, b"s")?,
            });
        }
    }
    let note = (count != log.len() as u64)
        .then(|| format!("power failure log says {count} entries, has {}", log.len()));
    Ok((log, note))
}

/// `(count)(1-0:1.6.0)(1-0:1.6.0)(month)(ts)(value*kW)…`
fn demand_history(vals: &[&[u8]]) -> R<(Vec<MonthlyPeak>, Option<String>)> {
    let (count, rest) = match vals {
        [c, _, _, rest @ ..] => (c, rest),
        [c] => (c, &[][..]),
        _ => return Err(format!("malformed demand history ({} values)", vals.len())),
    };
    let count = if count.is_empty() { 0 } else { integer(count)? };
    if rest.len() % 3 != 0 {
        return Err("demand history: values do not form (month)(time)(value) triples".into());
    }
    let mut hist = Vec::with_capacity(rest.len() / 3);
    for tri in rest.chunks_exact(3) {
        if let [m, ts, v] = tri {
            hist.push(MonthlyPeak {
                month: parse_timestamp(m)?,
                timestamp: parse_timestamp(ts)?,
                power_kw: scaled(v, "kW", Some("W"))?,
            });
        }
    }
    let note = (count != hist.len() as u64)
        .then(|| format!("demand history says {count} entries, has {}", hist.len()));
    Ok((hist, note))
}

#[cfg(test)]
mod tests {
    /// The number fast path gives exactly what `str::parse::<f64>` gives.
    #[test]
    fn number_fast_path_is_exact() {
        let cases = [
            "0",
            "-0.000",
            "001581.123",
            "00.170",
            "5.",
            ".5",
            "-12.5",
            "123456789012345",
            "12345678901234.5",
            "0.000000000000001",
            "99999.999",
            "1234567890123456",
            "00981.443",
            "-0.001",
            "6285.065",
            "2147483647",
        ];
        for c in cases {
            let want: f64 = c.parse().unwrap();
            let got = super::number(c.as_bytes()).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{c}");
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 15 + 1) as usize;
            let m = x % 10u64.pow(digits as u32);
            let dot = (x >> 40) as usize % (digits + 1);
            let s = format!("{m:0digits$}");
            let s = format!("{}.{}", &s[..digits - dot], &s[digits - dot..]);
            let want: f64 = s.parse().unwrap();
            assert_eq!(
                super::number(s.as_bytes()).unwrap().to_bits(),
                want.to_bits(),
                "{s}"
            );
        }
        assert_eq!(
            super::integer(b"9999999999999999999").unwrap(),
            9_999_999_999_999_999_999
        );
        assert_eq!(super::integer(b"0002").unwrap(), 2);
    }

    use super::*;

    #[test]
    fn obis() {
        assert_eq!(
            Obis::parse(b"1-0:1.8.1"),
            Some(Obis {
                a: 1,
                b: 0,
                c: 1,
                d: 8,
                e: 1,
                f: None
            })
        );
        assert_eq!(Obis::parse(b"1-0:1.8.0*255").and_then(|o| o.f), Some(255));
        assert_eq!(Obis::parse(b"1-0:1.8"), None);
        assert_eq!(Obis::parse(b"1-0:1.8.1x"), None);
        assert_eq!(Obis::parse(b"1-0:1.8.1000"), None);
        assert_eq!(Obis::parse(b"1-0:1.8.256"), None);
        assert_eq!(Obis::parse(b"1-0:31.7.0.255").and_then(|o| o.f), Some(255));
        assert_eq!(
            Obis::parse(b"0-1:24.2.1").map(|o| (o.a, o.b, o.c, o.d, o.e)),
            Some((0, 1, 24, 2, 1))
        );
        for bad in [
            &b""[..],
            b"1-0:1.8.1*",
            b"1-0:1.8.1*2*3",
            b"1:0-1.8.1",
            b"1-0:1..1",
            b"-0:1.8.1",
            b"1-0:1.8.1 ",
            b"1-0:1.8.1.2.3",
        ] {
            assert_eq!(Obis::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp(b"190324100500W").unwrap();
        assert_eq!(t.iso.as_deref(), Some("2019-03-24T10:05:00+01:00"));
        assert!(t.clock_set);
        let s = parse_timestamp(b"200512135409S").unwrap();
        assert_eq!(s.iso.as_deref(), Some("2020-05-12T13:54:09+02:00"));
        let p = parse_timestamp(b"632525252525W").unwrap();
        assert!(!p.clock_set && p.iso.is_none() && p.parts.is_none());
        let z = parse_timestamp(b"000101010000W").unwrap();
        assert!(!z.clock_set && z.iso.is_none());
        assert_eq!(z.parts.map(|p| p.year), Some(2000));
        let n = parse_timestamp(b"210413190000").unwrap();
        assert_eq!(n.iso.as_deref(), Some("2021-04-13T19:00:00"));
        assert!(parse_timestamp(b"21041319000").is_err());
        assert!(parse_timestamp(b"2104131900x0W").is_err());
        assert!(parse_timestamp(b"210413190000X").is_err());
    }

    #[test]
    fn hex() {
        assert_eq!(decode_hex_text(b"4B414C").as_deref(), Some("KAL"));
        assert_eq!(decode_hex_text(b"4B4"), None);
        assert_eq!(decode_hex_text(b"0001"), None);
        assert_eq!(decode_hex_text(b"serienummer"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"001.193").unwrap(), 1.193);
        assert!(number(b"inf").is_err());
        assert!(number(b"1e5").is_err());
        assert!(number(b"").is_err());
        assert!(number(b".").is_err());
        assert_eq!(scaled(b"000201282*Wh", "kWh", Some("Wh")).unwrap(), 201.282);
        assert!(scaled(b"1.0*kvarh", "kWh", Some("Wh")).is_err());
    }
}
