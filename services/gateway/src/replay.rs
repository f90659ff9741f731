//! Replay protection: a request carries its send time in `X-Timestamp` (unix seconds or RFC
//! 3339), and a time too far from the gateway's clock is refused, so a captured request cannot
//! be sent again later. Inside the window a repeat is deduplicated like any other delivery.

use std::time::Duration;

/// The request header holding the send time.
pub const HEADER: &str = "x-timestamp";

/// Checks a request's timestamp against `now` (unix seconds). A zero `window` accepts any
/// request, with or without the header. The error is the reason for the 400 answer.
pub fn check(value: Option<&str>, now: i64, window: Duration) -> Result<(), String> {
    if window.is_zero() {
        return Ok(());
    }
    let value = value.ok_or_else(|| {
        format!(
            "missing X-Timestamp header: send the request's time (unix seconds or RFC 3339), within {}s of now",
            window.as_secs()
        )
    })?;
    let sent = parse(value).ok_or_else(|| format!("X-Timestamp {value:?} is neither unix seconds nor RFC 3339"))?;
    let skew = sent.saturating_sub(now);
    let window = window.as_secs() as i64;
    if skew > window {
        return Err(format!("X-Timestamp {value:?} is {skew}s in the future; the accepted window is {window}s"));
    }
    if -skew > window {
        return Err(format!(
            "X-Timestamp {value:?} is {}s old; the accepted window is {window}s (a replayed request?)",
            -skew
        ));
    }
    Ok(())
}

fn parse(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(seconds);
    }
    value.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn times_inside_the_window_pass_in_either_format() {
        assert_eq!(check(Some("1800000000"), NOW, WINDOW), Ok(()));
        assert_eq!(check(Some(&(NOW - 300).to_string()), NOW, WINDOW), Ok(()));
        assert_eq!(check(Some(&(NOW + 300).to_string()), NOW, WINDOW), Ok(()));
        assert_eq!(check(Some("2027-01-15T08:00:00Z"), NOW, WINDOW), Ok(()));
    }

    #[test]
    fn old_future_missing_and_malformed_times_are_refused_with_the_reason() {
        let old = check(Some(&(NOW - 301).to_string()), NOW, WINDOW).unwrap_err();
        assert!(old.contains("301s old") && old.contains("300s"), "{old}");
        let future = check(Some(&(NOW + 301).to_string()), NOW, WINDOW).unwrap_err();
        assert!(future.contains("in the future"), "{future}");
        assert!(check(None, NOW, WINDOW).unwrap_err().contains("missing X-Timestamp"));
        assert!(check(Some("yesterday"), NOW, WINDOW).unwrap_err().contains("neither"));
    }

    #[test]
    fn a_zero_window_turns_the_check_off() {
        assert_eq!(check(None, NOW, Duration::ZERO), Ok(()));
        assert_eq!(check(Some("0"), NOW, Duration::ZERO), Ok(()));
    }
}
