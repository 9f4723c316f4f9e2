//! Keeping fixture-era times in the future. The Calendly fixtures are dated March 2030; a test
//! that expects their meetings to get reminders would start failing once that date passed. Tests
//! send the fixtures, and write their own literal times, through [`in_the_future`], which moves
//! every timestamp's year forward by the same number of years.

use chrono::Datelike;

/// The fixtures' year: their meetings are in March 2030.
pub const FIXTURE_YEAR: i32 = 2030;

/// Years added to every fixture-era timestamp. A multiple of four, so leap days fall alike and
/// every interval between two times stays what the fixtures say; at least four, so the move is
/// exercised today and not first on the day it becomes necessary; and enough to put the fixtures'
/// year two years past the current one.
pub fn year_shift() -> i32 {
    shift_for(chrono::Utc::now().year())
}

fn shift_for(current_year: i32) -> i32 {
    let wanted = current_year + 2;
    let mut shift = 4;
    while FIXTURE_YEAR + shift < wanted {
        shift += 4;
    }
    shift
}

/// `text` with the year of every RFC 3339 timestamp in it (`YYYY-MM-DDT…`) moved forward by
/// [`year_shift`].
pub fn in_the_future(text: &str) -> String {
    shift_years(text, year_shift())
}

/// Unix seconds of an RFC 3339 time after [`in_the_future`].
pub fn future_seconds(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&in_the_future(time))
        .unwrap_or_else(|e| panic!("{time}: {e}"))
        .timestamp()
}

fn shift_years(text: &str, shift: i32) -> String {
    let bytes = text.as_bytes();
    let digits = |from: usize, to: usize| bytes[from..to].iter().all(u8::is_ascii_digit);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 11 <= bytes.len() {
        let is_timestamp = digits(i, i + 4)
            && bytes[i + 4] == b'-'
            && digits(i + 5, i + 7)
            && bytes[i + 7] == b'-'
            && digits(i + 8, i + 10)
            && bytes[i + 10] == b'T'
            && (i == 0 || !bytes[i - 1].is_ascii_digit());
        if is_timestamp {
            let year: i32 = text[i..i + 4].parse().expect("four digits");
            out.push_str(&text[copied..i]);
            out.push_str(&(year + shift).to_string());
            copied = i + 4;
            i += 11;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shift_is_a_multiple_of_four_that_keeps_the_fixtures_two_years_ahead() {
        for (current_year, shift) in [(2026, 4), (2032, 4), (2033, 8), (2036, 8), (2037, 12)] {
            assert_eq!(shift_for(current_year), shift, "in {current_year}");
        }
        let shift = year_shift();
        assert_eq!(shift % 4, 0);
        assert!(FIXTURE_YEAR + shift >= chrono::Utc::now().year() + 2);
    }

    #[test]
    fn every_timestamp_moves_and_nothing_else_does() {
        let text = r#"{"created_at":"2030-03-04T15:02:12.000000Z","end":"2031-01-01T00:00:00Z","uri":"https://api.calendly.com/invitees/1a2b-2030-03-04","n":12030-01-01T,"date":"2030-03-11"}"#;
        assert_eq!(
            shift_years(text, 4),
            r#"{"created_at":"2034-03-04T15:02:12.000000Z","end":"2035-01-01T00:00:00Z","uri":"https://api.calendly.com/invitees/1a2b-2030-03-04","n":12030-01-01T,"date":"2030-03-11"}"#
        );
    }

    #[test]
    fn intervals_across_a_leap_day_are_unchanged_by_the_shift() {
        let seconds = |time: &str, shift: i32| {
            chrono::DateTime::parse_from_rfc3339(&shift_years(time, shift))
                .expect("RFC 3339")
                .timestamp()
        };
        let (from, to) = ("2029-12-20T10:00:00Z", "2030-03-11T16:00:00Z");
        for shift in [4, 8, 12] {
            assert_eq!(
                seconds(to, shift) - seconds(from, shift),
                seconds(to, 0) - seconds(from, 0),
                "shifted by {shift}"
            );
        }
    }
}
