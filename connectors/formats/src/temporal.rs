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

#[cfg(test)]
mod tests {
    use super::*;

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
