//! Durations on the command line: `500ms`, `30s`, `5m`, `12h`, `30d`, with
//! the bounds each kind of flag needs (checked before anything starts).

use std::time::Duration;

/// The longest duration any flag takes: 100 years (`36525d`). Longer ones
/// are refused, never wrapped or saturated: a typo must not turn into a
/// short retention, and every accepted value can be added to the current
/// time (as an `Instant` or a unix time) without overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_525 * 86_400);

/// How a duration is written, for error messages.
const DURATION_FORMS: &str =
    "a whole number and a unit: ms, s, m, h or d (e.g. 500ms, 30s, 5m, 12h, 30d)";

/// Parses `500ms`, `30s`, `5m`, `12h`, `30d`: a whole number and a unit, at
/// most [`MAX_DURATION`]. A bare number is refused (it was once taken as
/// seconds: `--older-than 30` meant 30 s, not 30 days), and so is anything
/// empty, negative, fractional or too long. Zero is accepted here; flags
/// where zero makes no sense use [`parse_period`] or [`parse_age`].
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration: write {DURATION_FORMS}"));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_ms: u64 = match unit {
        _ if num.is_empty() => return Err(format!("bad duration {t:?}: write {DURATION_FORMS}")),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "{t:?} has no unit (is it {t}s? {t}d?): write {DURATION_FORMS}"
            ))
        }
        _ => return Err(format!("bad duration {t:?}: write {DURATION_FORMS}")),
    };
    let too_long = || format!("duration {t:?} is too long: at most 36525d (100 years)");
    // `num` is all ASCII digits: parsing fails only on overflow.
    let n: u64 = num.parse().map_err(|_| too_long())?;
    let d = n
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(too_long)?;
    Ok(d)
}

/// A period or time limit (`--sweep-every`, `--rotate-key-every`,
/// `--hook-timeout`, `--connect-timeout`): a duration more than 0 (a zero
/// timer period panics; a zero time limit fails every call).
pub fn parse_period(s: &str) -> std::result::Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{:?} is zero: it must be more than 0 (e.g. 30s, 1h)",
            s.trim()
        ));
    }
    Ok(d)
}

/// An age or window counted in whole seconds (`--older-than`,
/// `--retention`, `--queue-max-age`, `stats --since`): at least 1s (below,
/// it would be 0 seconds: a retention that deletes everything, an empty window).
pub fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "{:?} is under a second: it must be at least 1s (e.g. 1h, 30d)",
            s.trim()
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("36525d"), Ok(super::MAX_DURATION));
        for bad in [
            "7", "0", "", " ", "3w", "h", "-5s", "+5s", "1.5h", "5 s", "5S", "1h30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("no unit") && e.contains("30d"), "{e}");
        for long in [
            "36526d",
            "213503982335d",
            "18446744073709551615ms",
            "99999999999999999999s",
        ] {
            let e = parse_duration(long).unwrap_err();
            assert!(
                e.contains("too long") && e.contains("100 years"),
                "{long}: {e}"
            );
        }
    }

    #[test]
    fn periods_and_ages_refuse_zero() {
        use super::{parse_age, parse_period};
        assert!(parse_period("0s").unwrap_err().contains("more than 0"));
        assert_eq!(parse_period("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_age("999ms").unwrap_err().contains("at least 1s"));
        assert_eq!(parse_age("1s"), Ok(Duration::from_secs(1)));
    }
}
