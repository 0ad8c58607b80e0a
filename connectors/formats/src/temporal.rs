//! Turns the canonical text of dates, times, timestamps and decimals (see
//! `schemas/README.md`) into the numbers typed formats store: days and
//! microseconds since the Unix epoch, and a decimal's unscaled integer.
//!
//! `infinity` / `-infinity` (Postgres) become the largest / smallest value
//! the target type holds, as Debezium's Postgres connector does. Anything
//! else that is not a valid calendar value (MySQL's zero dates, BC dates)
//! is an error: the caller says which column and suggests a text format.

/// Days from 1970-01-01 to the given proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` → days since the epoch.
pub fn date_days(text: &str) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::from(i32::MAX)),
        "-infinity" => return Some(i64::from(i32::MIN)),
        _ => {}
    }
    let (y, rest) = text.rsplit_once('-').and_then(|(ym, d)| Some((ym.rsplit_once('-')?, d))).map(|((y, m), d)| (y, (m, d)))?;
    let (m, d) = rest;
    let (y, m, d) = (digits(y)?, digits(m)?, digits(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y == 0 {
        return None;
    }
    Some(days_from_civil(y, m as u32, d as u32))
}

/// `[-]H+:MM:SS[.ffffff]` → microseconds (MySQL's TIME may be negative or
/// beyond 24 hours).
pub fn time_micros(text: &str) -> Option<i64> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (whole, frac) = match t.split_once('.') {
        Some((w, f)) => (w, f),
        None => (t, ""),
    };
    let mut parts = whole.split(':');
    let (h, m, s) = (digits(parts.next()?)?, digits(parts.next()?)?, digits(parts.next()?)?);
    if parts.next().is_some() || m > 59 || s > 60 {
        return None;
    }
    let us = frac_micros(frac)?;
    let v = ((h * 60 + m) * 60 + s) * 1_000_000 + us;
    Some(if neg { -v } else { v })
}

fn frac_micros(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 {
        return None;
    }
    let v = digits(frac)?;
    Some(v * 10_i64.pow(6 - frac.len() as u32))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff][Z]` → microseconds since the epoch (UTC
/// for `Z`, wall-clock for timestamps without a zone).
pub fn timestamp_micros(text: &str) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let t = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = t.split_once('T')?;
    let days = date_days(date)?;
    let us = time_micros(time)?;
    if !(0..86_400_000_000).contains(&us) {
        return None;
    }
    days.checked_mul(86_400_000_000)?.checked_add(us)
}

/// A decimal's text split for conversion to its unscaled integer at a
/// scale: the sign and the digits, zeros appended up to the scale.
pub struct DecimalDigits<'a> {
    pub negative: bool,
    int: &'a str,
    frac: &'a str,
    pad: usize,
}

impl DecimalDigits<'_> {
    /// The unscaled value's decimal digits, most significant first.
    pub fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.int.bytes().chain(self.frac.bytes()).map(|b| b - b'0').chain(std::iter::repeat_n(0, self.pad))
    }
}

/// Splits `-12.34` for `scale`; `None` for NaN/infinities, anything not a
/// decimal, or more fractional digits than `scale`.
pub fn decimal_digits(text: &str, scale: u32) -> Option<DecimalDigits<'_>> {
    let (negative, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(DecimalDigits { negative, int, frac, pad: scale as usize - frac.len() })
}

/// A decimal's text (`-12.34`) as its unscaled integer at `scale`
/// (`-1234` at scale 2), as big-endian two's-complement bytes (Avro's and
/// Parquet's decimal encoding). `None` for NaN/infinities or more
/// fractional digits than `scale`.
pub fn decimal_unscaled_be(text: &str, scale: u32) -> Option<Vec<u8>> {
    let d = decimal_digits(text, scale)?;
    let neg = d.negative;
    // Magnitude in base 256, little-endian while building.
    let mut mag: Vec<u8> = vec![0];
    for digit in d.digits() {
        let mut carry = u32::from(digit);
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            mag.push(carry as u8);
        }
    }
    // Room for the sign bit.
    if mag.last().is_some_and(|b| b & 0x80 != 0) {
        mag.push(0);
    }
    if neg {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    // Drop redundant sign bytes, then big-endian.
    while mag.len() > 1 {
        let top = mag[mag.len() - 1];
        let next = mag[mag.len() - 2];
        if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
            mag.pop();
        } else {
            break;
        }
    }
    mag.reverse();
    Some(mag)
}

/// A decimal's unscaled value as an `i128`, when it fits (Parquet's
/// Decimal128).
pub fn decimal_unscaled_i128(text: &str, scale: u32) -> Option<i128> {
    let be = decimal_unscaled_be(text, scale)?;
    if be.len() > 16 {
        return None;
    }
    let fill = if be[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - be.len()..].copy_from_slice(&be);
    Some(i128::from_be_bytes(buf))
}

/// How many fraction digits a formatted time keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// As Postgres writes: trailing zeros dropped, no `.` for whole seconds.
    Trim,
    /// Exactly this many digits (MySQL's `fsp`; 0: none).
    Digits(u32),
}

/// The proleptic Gregorian date `days` after 1970-01-01: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since the epoch → `YYYY-MM-DD` (the inverse of [`date_days`]).
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn push_fraction(micros: u64, fraction: Fraction, out: &mut String) {
    let digits = format!("{micros:06}");
    let keep = match fraction {
        Fraction::Trim => digits.trim_end_matches('0').len(),
        Fraction::Digits(n) => (n as usize).min(6),
    };
    if keep > 0 {
        out.push('.');
        out.push_str(&digits[..keep]);
    }
}

/// Microseconds → `[-]HH:MM:SS[.ffffff]` (the inverse of [`time_micros`]:
/// hours past 24 and a sign kept, as MySQL's `TIME`).
pub fn format_time(micros: i64, fraction: Fraction) -> String {
    let (neg, us) = (micros < 0, micros.unsigned_abs());
    let secs = us / 1_000_000;
    let mut s = format!("{}{:02}:{:02}:{:02}", if neg { "-" } else { "" }, secs / 3600, secs / 60 % 60, secs % 60);
    push_fraction(us % 1_000_000, fraction, &mut s);
    s
}

/// Microseconds since the epoch → `YYYY-MM-DDTHH:MM:SS[.ffffff]` (the
/// inverse of [`timestamp_micros`]; the caller appends `Z` for UTC).
pub fn format_timestamp(micros: i64, fraction: Fraction) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let in_day = micros.rem_euclid(86_400_000_000);
    let mut s = format_date(days);
    s.push('T');
    s.push_str(&format_time(in_day, fraction));
    s
}

/// A big-endian two's-complement unscaled integer at `scale` → the
/// decimal's text (`[0x96]`… at scale 2 → `1.50`): the inverse of
/// [`decimal_unscaled_be`], any length.
pub fn decimal_from_unscaled_be(be: &[u8], scale: u32) -> String {
    let negative = be.first().is_some_and(|b| b & 0x80 != 0);
    // The magnitude, big-endian.
    let mut mag: Vec<u8> = be.to_vec();
    if negative {
        let mut carry = 1u16;
        for byte in mag.iter_mut().rev() {
            let v = u16::from(!*byte) + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    // Base 256 → base 10, by repeated division.
    let mut digits: Vec<u8> = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for byte in mag.iter_mut() {
            let v = (rem << 8) | u32::from(*byte);
            *byte = (v / 10) as u8;
            rem = v % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    let scale = scale as usize;
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let (int, frac) = digits.split_at(digits.len() - scale);
    let mut s = String::with_capacity(digits.len() + 2);
    if negative {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(int).expect("digits"));
    if scale > 0 {
        s.push('.');
        s.push_str(std::str::from_utf8(frac).expect("digits"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_inverts_parsing() {
        for text in ["1970-01-01", "2000-02-29", "1969-12-31", "0001-01-01", "9999-12-31"] {
            assert_eq!(format_date(date_days(text).unwrap()), text);
        }
        assert_eq!(format_time(time_micros("-838:59:59").unwrap(), Fraction::Digits(0)), "-838:59:59");
        assert_eq!(format_time(time_micros("12:00:00.25").unwrap(), Fraction::Trim), "12:00:00.25");
        assert_eq!(format_time(time_micros("12:00:00.25").unwrap(), Fraction::Digits(6)), "12:00:00.250000");
        assert_eq!(format_time(0, Fraction::Trim), "00:00:00");
        for text in ["2024-01-02T03:04:05.000123", "1969-12-31T23:59:59.999999", "1970-01-01T00:00:00"] {
            assert_eq!(format_timestamp(timestamp_micros(text).unwrap(), Fraction::Trim), text);
        }
        for (text, scale) in [("1.50", 2), ("-12.34", 2), ("0", 0), ("-0.001", 3), ("-128", 0), ("128", 0), ("0.000", 3)] {
            assert_eq!(decimal_from_unscaled_be(&decimal_unscaled_be(text, scale).unwrap(), scale), text);
        }
        let big = "-12345678901234567890123456789012345678901234567890.123456789012345";
        assert_eq!(decimal_from_unscaled_be(&decimal_unscaled_be(big, 15).unwrap(), 15), big);
    }

    #[test]
    fn dates_and_timestamps_count_from_the_epoch() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("2000-03-01"), Some(11017));
        assert_eq!(date_days("1969-12-31"), Some(-1));
        assert_eq!(date_days("0000-00-00"), None);
        assert_eq!(date_days("infinity"), Some(i64::from(i32::MAX)));
        assert_eq!(timestamp_micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(timestamp_micros("2024-01-02T03:04:05.000123"), Some(1_704_164_645_000_123));
        assert_eq!(timestamp_micros("1969-12-31T23:59:59.999999"), Some(-1));
        assert_eq!(time_micros("-838:59:59"), Some(-3_020_399_000_000));
        assert_eq!(time_micros("12:00:00.25"), Some(43_200_250_000));
    }

    #[test]
    fn decimals_become_twos_complement_at_the_scale() {
        assert_eq!(decimal_unscaled_be("1.5", 2), Some(vec![0x00, 0x96]));
        assert_eq!(decimal_unscaled_i128("-12.34", 2), Some(-1234));
        assert_eq!(decimal_unscaled_i128("0", 3), Some(0));
        assert_eq!(decimal_unscaled_i128("-0.001", 3), Some(-1));
        assert_eq!(decimal_unscaled_i128("127", 0), Some(127));
        assert_eq!(decimal_unscaled_be("-128", 0), Some(vec![0x80]));
        assert_eq!(decimal_unscaled_be("128", 0), Some(vec![0x00, 0x80]));
        assert_eq!(decimal_unscaled_i128("99999999999999999999999999999999999999", 0), Some(10_i128.pow(38) - 1));
        assert_eq!(decimal_unscaled_i128("1.234", 2), None);
        assert_eq!(decimal_unscaled_be("NaN", 2), None);
    }
}
