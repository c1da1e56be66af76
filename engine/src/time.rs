//! Time as the engine sees it: passed in by the caller, never read from a clock.
//!
//! `mono_ms` drives timers (monotonic, never goes back); `wall_ms` is Unix time in
//! milliseconds and only ends up in file headers and object metadata.

/// The caller's notion of "now", handed to every engine call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Now {
    pub mono_ms: u64,
    pub wall_ms: i64,
}

impl Now {
    pub fn new(mono_ms: u64, wall_ms: i64) -> Self {
        Now { mono_ms, wall_ms }
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision, the way
/// Litestream writes `litestream-timestamp` (e.g. `2026-11-21T12:34:56.789Z`).
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fff...](Z|±HH:MM)`) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = s.get(start..i)?;
        let mut digits = frac
            .bytes()
            .take(3)
            .map(|c| i64::from(c - b'0'))
            .collect::<Vec<_>>();
        digits.resize(3, 0);
        ms = digits[0] * 100 + digits[1] * 10 + digits[2];
    }
    let offset_min = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 60 + om;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_min * 60;
    Some(secs * 1000 + ms)
}

// Howard Hinnant's civil-from-days / days-from-civil algorithms.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_763_726_400_123),
            "2025-11-21T12:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(
            parse_rfc3339_ms("2025-11-21T12:00:00.123Z"),
            Some(1_763_726_400_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-21T13:00:00.1+01:00"),
            Some(1_763_726_400_100)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-21T12:00:00Z"),
            Some(1_763_726_400_000)
        );
        assert_eq!(parse_rfc3339_ms("2025-11-21 12:00:00"), None);
        assert_eq!(parse_rfc3339_ms("2025-13-21T12:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    proptest::proptest! {
        #[test]
        fn round_trip(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            proptest::prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
    }
}
