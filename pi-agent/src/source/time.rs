//! Calendar arithmetic for DSMR timestamps: civil dates, the EU summer-time rule and
//! Europe/Amsterdam local time (CET/CEST), implemented by hand (no tz database).

/// Broken-down civil date-time (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Full year.
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59.
    pub second: u32,
    /// Day of week, 0 = Monday … 6 = Sunday.
    pub weekday: u32,
}

/// Days since 1970-01-01 of a civil date (one implementation, in the shared DSMR model).
pub use p1consent_shared::dsmr::days_from_civil;

/// Civil date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    // d is 1..=31 and m 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Broken-down time of `unix_s` shifted by `offset_s` (i.e. local time at that offset).
pub fn civil_from_unix(unix_s: i64, offset_s: i64) -> Civil {
    let t = unix_s + offset_s;
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let sod = u32::try_from(sod).unwrap_or(0);
    Civil {
        year,
        month,
        day,
        hour: sod / 3600,
        minute: sod / 60 % 60,
        second: sod % 60,
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        weekday: u32::try_from((days + 3).rem_euclid(7)).unwrap_or(0),
    }
}

/// Unix seconds of 01:00 UTC on the last Sunday of `month` in `year`.
fn last_sunday_0100_utc(year: i64, month: u32) -> i64 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let last = days_from_civil(ny, nm, 1) - 1;
    let weekday = (last + 3).rem_euclid(7); // 6 = Sunday
    let sunday = last - (weekday - 6).rem_euclid(7);
    sunday * 86_400 + 3600
}

/// True when EU summer time is in force at `unix_s`: from the last Sunday of March 01:00 UTC
/// until the last Sunday of October 01:00 UTC.
pub fn eu_summer_time(unix_s: i64) -> bool {
    let year = civil_from_unix(unix_s, 0).year;
    let start = last_sunday_0100_utc(year, 3);
    let end = last_sunday_0100_utc(year, 10);
    unix_s >= start && unix_s < end
}

/// Europe/Amsterdam UTC offset in seconds at `unix_s` (3600 CET, 7200 CEST) and the DST flag.
pub fn amsterdam_offset(unix_s: i64) -> (i64, bool) {
    if eu_summer_time(unix_s) {
        (7200, true)
    } else {
        (3600, false)
    }
}

/// Europe/Amsterdam local time at `unix_s`, with the DST flag (`true` = summer, `S`).
pub fn amsterdam_local(unix_s: i64) -> (Civil, bool) {
    let (off, dst) = amsterdam_offset(unix_s);
    (civil_from_unix(unix_s, off), dst)
}

/// `YYMMDDhhmmssX` DSMR timestamp of `unix_s` in Europe/Amsterdam time (`X` = `S` or `W`).
pub fn dsmr_timestamp(unix_s: i64) -> String {
    let (c, dst) = amsterdam_local(unix_s);
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}{}",
        c.year.rem_euclid(100),
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        if dst { 'S' } else { 'W' }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for d in [-1000, 0, 1, 59, 365, 10_957, 19_000, 20_000, 50_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn dst_boundaries_2024() {
        // 2024-03-31 01:00 UTC and 2024-10-27 01:00 UTC.
        let start = days_from_civil(2024, 3, 31) * 86_400 + 3600;
        let end = days_from_civil(2024, 10, 27) * 86_400 + 3600;
        assert!(!eu_summer_time(start - 1));
        assert!(eu_summer_time(start));
        assert!(eu_summer_time(end - 1));
        assert!(!eu_summer_time(end));
        assert_eq!(dsmr_timestamp(start - 1), "240331015959W");
        assert_eq!(dsmr_timestamp(start), "240331030000S");
        assert_eq!(dsmr_timestamp(end - 1), "241027025959S");
        assert_eq!(dsmr_timestamp(end), "241027020000W");
    }

    #[test]
    fn weekday() {
        // 2024-01-01 was a Monday.
        let c = civil_from_unix(days_from_civil(2024, 1, 1) * 86_400, 0);
        assert_eq!(c.weekday, 0);
    }
}
