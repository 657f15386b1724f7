//! Writing MongoDB relaxed extended JSON (v2), what decoded records become:
//! plain JSON where JSON says it all, `{"$date": …}`, `{"$numberDecimal": …}`,
//! `{"$binary": …}` and `{"$numberDouble": …}` where it does not. The host's
//! JSON-to-BSON encoder reads these back as the BSON types they name.

use base64::Engine as _;

pub use crate::config::Decimals;

pub(super) fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

pub(super) fn bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

pub(super) fn int(out: &mut Vec<u8>, i: i64) {
    out.extend_from_slice(i.to_string().as_bytes());
}

pub(super) fn uint(out: &mut Vec<u8>, u: u64, decimals: Decimals) {
    match i64::try_from(u) {
        Ok(i) => int(out, i),
        // Past int64: BSON has no unsigned integer; Decimal128 keeps the value exactly.
        Err(_) => decimal(out, &u.to_string(), decimals),
    }
}

/// A double; a JSON number that reads back as a double (`1.0`, not `1`).
pub(super) fn double(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let s = serde_json::to_string(&f).expect("a finite double is JSON");
        out.extend_from_slice(s.as_bytes());
        if !s.contains(['.', 'e', 'E']) {
            out.extend_from_slice(b".0");
        }
    } else {
        let s = if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        };
        out.extend_from_slice(b"{\"$numberDouble\":\"");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

/// A float as the double with the same shortest decimal form (0.1f32 stays 0.1).
pub(super) fn float(out: &mut Vec<u8>, f: f32) {
    double(out, f.to_string().parse().unwrap_or(f64::from(f)));
}

pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec does not fail");
}

pub(super) fn binary(out: &mut Vec<u8>, bytes: &[u8], subtype: u8) {
    out.extend_from_slice(b"{\"$binary\":{\"base64\":\"");
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
    out.extend_from_slice(format!("\",\"subType\":\"{subtype:02x}\"}}}}").as_bytes());
}

/// A decimal number as Decimal128 (or its text, `[kafka] decimals = "string"`);
/// `digits` is a plain decimal (`-12.340`).
pub(super) fn decimal(out: &mut Vec<u8>, digits: &str, decimals: Decimals) {
    match decimals {
        Decimals::Decimal128 => {
            out.extend_from_slice(b"{\"$numberDecimal\":");
            string(out, digits);
            out.push(b'}');
        }
        Decimals::String => string(out, digits),
    }
}

/// The unscaled integer `unscaled` (decimal digits, maybe with `-`) with `scale` digits after the point.
pub(super) fn scaled_decimal(out: &mut Vec<u8>, unscaled: &str, scale: usize, decimals: Decimals) -> Result<(), String> {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    let significant = digits.trim_start_matches('0').len();
    if significant > 34 {
        return Err(format!("decimal {sign}{digits} (scale {scale}) has more than the 34 digits Decimal128 keeps"));
    }
    let text = if scale == 0 {
        format!("{sign}{digits}")
    } else {
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    };
    decimal(out, &text, decimals);
    Ok(())
}

/// A date-time, milliseconds since the Unix epoch: ISO-8601 in UTC for years
/// 1970–9999 (as relaxed extended JSON writes it), `$numberLong` otherwise.
pub(super) fn date(out: &mut Vec<u8>, millis: i64) {
    out.extend_from_slice(b"{\"$date\":");
    match iso8601(millis) {
        Some(s) => string(out, &s),
        None => {
            out.extend_from_slice(b"{\"$numberLong\":\"");
            int(out, millis);
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b'}');
}

fn iso8601(millis: i64) -> Option<String> {
    if !(0..253_402_300_800_000).contains(&millis) {
        return None;
    }
    let (days, ms) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    Some(format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{frac:03}Z"))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes `{"k":v,…}` one member at a time.
pub(super) struct Object {
    first: bool,
}

impl Object {
    pub(super) fn open(out: &mut Vec<u8>) -> Object {
        out.push(b'{');
        Object { first: true }
    }

    pub(super) fn key(&mut self, out: &mut Vec<u8>, key: &str) {
        if !std::mem::take(&mut self.first) {
            out.push(b',');
        }
        string(out, key);
        out.push(b':');
    }

    pub(super) fn close(self, out: &mut Vec<u8>) {
        out.push(b'}');
    }
}

/// Writes `[a,b,…]`.
pub(super) struct Array {
    first: bool,
}

impl Array {
    pub(super) fn open(out: &mut Vec<u8>) -> Array {
        out.push(b'[');
        Array { first: true }
    }

    pub(super) fn item(&mut self, out: &mut Vec<u8>) {
        if !std::mem::take(&mut self.first) {
            out.push(b',');
        }
    }

    pub(super) fn close(self, out: &mut Vec<u8>) {
        out.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dates_are_iso_in_range_and_number_long_outside() {
        assert_eq!(w(|o| date(o, 0)), r#"{"$date":"1970-01-01T00:00:00.000Z"}"#);
        assert_eq!(w(|o| date(o, 1_700_000_000_123)), r#"{"$date":"2023-11-14T22:13:20.123Z"}"#);
        assert_eq!(w(|o| date(o, 951_782_400_000)), r#"{"$date":"2000-02-29T00:00:00.000Z"}"#);
        assert_eq!(w(|o| date(o, -1)), r#"{"$date":{"$numberLong":"-1"}}"#);
    }

    #[test]
    fn doubles_stay_doubles_and_odd_ones_are_named() {
        assert_eq!(w(|o| double(o, 1.0)), "1.0");
        assert_eq!(w(|o| double(o, 2.5e-300)), "2.5e-300");
        assert_eq!(w(|o| float(o, 0.1)), "0.1");
        assert_eq!(w(|o| double(o, f64::NAN)), r#"{"$numberDouble":"NaN"}"#);
        assert_eq!(w(|o| double(o, f64::NEG_INFINITY)), r#"{"$numberDouble":"-Infinity"}"#);
    }

    #[test]
    fn decimals_place_the_point_by_scale_and_refuse_past_34_digits() {
        let d = |u: &str, s| {
            let mut o = Vec::new();
            scaled_decimal(&mut o, u, s, Decimals::Decimal128).map(|()| String::from_utf8(o).unwrap())
        };
        assert_eq!(d("1234", 2).unwrap(), r#"{"$numberDecimal":"12.34"}"#);
        assert_eq!(d("-5", 3).unwrap(), r#"{"$numberDecimal":"-0.005"}"#);
        assert_eq!(d("7", 0).unwrap(), r#"{"$numberDecimal":"7"}"#);
        assert!(d(&"9".repeat(35), 2).unwrap_err().contains("34 digits"));
        assert_eq!(w(|o| uint(o, u64::MAX, Decimals::Decimal128)), r#"{"$numberDecimal":"18446744073709551615"}"#);
        assert_eq!(w(|o| uint(o, u64::MAX, Decimals::String)), r#""18446744073709551615""#);
        let mut o = Vec::new();
        scaled_decimal(&mut o, "-1234", 2, Decimals::String).unwrap();
        assert_eq!(o, br#""-12.34""#);
    }

    #[test]
    fn binary_and_strings() {
        assert_eq!(w(|o| binary(o, b"\x00\xff", 0)), r#"{"$binary":{"base64":"AP8=","subType":"00"}}"#);
        assert_eq!(w(|o| string(o, "a\"b\n")), r#""a\"b\n""#);
    }
}
