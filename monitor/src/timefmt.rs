//! Durations and times as operators type them (`--ttl 5m`, `--since 10m`,
//! `--until 2026-11-22T10:00:00Z`) and timestamps as the agent prints them.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Longest accepted duration: 100 years. Anything longer is a typo, and
/// keeping well inside `chrono`'s range means "that long ago" never
/// overflows.
const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 86_400);

/// Parses a duration.
///
/// Accepted forms: a bare number of seconds (`"300"`), or one or more
/// `NUMBER UNIT` groups with units `ms`, `s`, `m`, `h`, `d` (`"30s"`,
/// `"5m"`, `"2h"`, `"1d"`, `"1h30m"`, `"500ms"`). Surrounding whitespace is
/// ignored; numbers are non-negative integers. The error names the input.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let input = s.trim();
    let bad = |why: &str| format!("invalid duration {input:?}: {why}");
    if input.is_empty() {
        return Err(bad(
            "empty; expected e.g. 300, 30s, 5m, 2h, 1d, 1h30m, 500ms",
        ));
    }
    if input.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = input.parse().map_err(|_| bad("number too large"))?;
        return check_max(Duration::from_secs(secs)).map_err(|e| bad(&e));
    }
    let bytes = input.as_bytes();
    let mut total = Duration::ZERO;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad("expected a number before each unit"));
        }
        let n: u64 = input[start..i]
            .parse()
            .map_err(|_| bad("number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let part = match &input[ustart..i] {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3_600).map(Duration::from_secs),
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(bad("a number without a unit (ms, s, m, h, d)")),
            _ => return Err(bad("unknown unit; expected ms, s, m, h or d")),
        }
        .ok_or_else(|| bad("too large"))?;
        total = total.checked_add(part).ok_or_else(|| bad("too large"))?;
    }
    check_max(total).map_err(|e| bad(&e))
}

fn check_max(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err("too large (at most 100 years)".to_string())
    } else {
        Ok(d)
    }
}

/// Parses a point in time: RFC 3339 (`2026-11-22T10:00:00Z`, any offset,
/// converted to UTC), or a duration (see [`parse_duration`]) meaning "that
/// long before `now`" (`--since 10m`). The error names the input.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let input = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(input) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "invalid time {input:?}: expected RFC 3339 (2026-11-22T10:00:00Z) \
             or a duration ago (10m, 2h, 1d)"
        )
    };
    let d = parse_duration(input).map_err(|_| bad())?;
    let d = chrono::Duration::from_std(d).map_err(|_| bad())?;
    now.checked_sub_signed(d).ok_or_else(bad)
}

/// Formats a time as RFC 3339 in UTC with microseconds:
/// `2026-11-22T10:01:02.123456Z` (the alert `time` format).
pub fn rfc3339_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn bare_seconds() {
        assert_eq!(parse_duration("300"), Ok(secs(300)));
        assert_eq!(parse_duration("0"), Ok(secs(0)));
        assert_eq!(parse_duration(" 42\n"), Ok(secs(42)));
    }

    #[test]
    fn single_units() {
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("2h"), Ok(secs(7_200)));
        assert_eq!(parse_duration("1d"), Ok(secs(86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn compound() {
        assert_eq!(parse_duration("1h30m"), Ok(secs(5_400)));
        assert_eq!(parse_duration("1d2h3m4s"), Ok(secs(93_784)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1_500)));
    }

    #[test]
    fn bad_durations_name_the_input() {
        for s in [
            "", "  ", "abc", "5x", "m", "1h30", "-5m", "1.5h", "5 m", "5M", "h1",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(
                e.contains(&format!("{:?}", s.trim())),
                "{s:?} -> {e} should name the input"
            );
        }
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("200000d").is_err());
        assert!(parse_duration("36500d").is_ok());
    }

    #[test]
    fn time_rfc3339() {
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let t = parse_time("2026-11-22T10:00:00Z", now).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap());
        let t = parse_time("2026-11-22T12:00:00+02:00", now).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap());
        let t = parse_time("2026-11-22T10:00:00.5Z", now).unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 500);
    }

    #[test]
    fn time_as_duration_ago() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        assert_eq!(
            parse_time("10m", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 22, 9, 50, 0).unwrap()
        );
        assert_eq!(
            parse_time("1d", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
        );
        assert_eq!(parse_time("0", now).unwrap(), now);
    }

    #[test]
    fn bad_time_names_the_input() {
        let now = Utc::now();
        for s in [
            "yesterday",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "10 minutes",
        ] {
            let e = parse_time(s, now).unwrap_err();
            assert!(e.contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn micros_format() {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 1, 2).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(rfc3339_micros(t), "2026-11-22T10:01:02.123456Z");
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 1, 2).unwrap();
        assert_eq!(rfc3339_micros(t), "2026-11-22T10:01:02.000000Z");
        // Sub-microsecond precision is dropped, not rounded up.
        let t = t + chrono::Duration::nanoseconds(999);
        assert_eq!(rfc3339_micros(t), "2026-11-22T10:01:02.000000Z");
    }
}
