//! JSON to Avro in Confluent's wire format, for `sluice produce --value-format
//! avro`: the schema is registered under the topic's subject (`<topic>-value`,
//! Confluent's TopicNameStrategy) and each JSON line becomes one datum.
//!
//! The JSON is read by the schema: numbers for `int`/`long`/`float`/`double`;
//! strings for `string`, `enum` symbols and `uuid`; `bytes`/`fixed` from a
//! string's UTF-8 bytes or `{"$binary": {"base64": …}}`; `decimal` from a
//! string or number (`"12.34"`); `date` from a day count or `"YYYY-MM-DD"`;
//! `timestamp-*` from a number in the type's unit, an ISO-8601 UTC string or
//! `{"$date": …}`; a record's missing field takes its default; a union takes
//! the first branch the value fits (`null` for null).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value;
use base64::Engine as _;
use serde_json::Value as Json;

pub struct AvroEncoder {
    schema: Schema,
    id: u32,
}

impl AvroEncoder {
    /// `text`: an Avro schema without references; `id`: its id in the registry.
    pub fn new(text: &str, id: u32) -> Result<AvroEncoder, String> {
        let schema = Schema::parse_str(text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
        Ok(AvroEncoder { schema, id })
    }

    /// One JSON value as `0, id, datum`.
    pub fn encode(&self, json: &str) -> Result<Vec<u8>, String> {
        let json: Json = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let resolved = ResolvedSchema::new(&self.schema).map_err(|e| e.to_string())?;
        let value = to_value(&json, &self.schema, resolved.get_names(), "")?;
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema).build().map_err(|e| e.to_string())?;
        let datum = writer.write_value_to_vec(value).map_err(|e| format!("does not fit the schema: {e}"))?;
        let mut out = Vec::with_capacity(datum.len() + 5);
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&datum);
        Ok(out)
    }
}

/// JSON checked against a JSON Schema, in Confluent's wire format.
pub struct JsonSchemaEncoder {
    schema: super::json_schema::JsonSchema,
    id: u32,
}

impl JsonSchemaEncoder {
    pub fn new(text: &str, id: u32) -> Result<JsonSchemaEncoder, String> {
        Ok(JsonSchemaEncoder { schema: super::json_schema::JsonSchema::parse(text, &[])?, id })
    }

    pub fn encode(&self, json: &str) -> Result<Vec<u8>, String> {
        let mut out = vec![0];
        out.extend_from_slice(&self.id.to_be_bytes());
        self.schema.decode(json.as_bytes(), &mut out).map_err(|e| format!("value {e}"))?;
        Ok(out)
    }
}

fn to_value(j: &Json, s: &Schema, names: &HashMap<Name, &Schema>, at: &str) -> Result<Value, String> {
    let err = |what: &str| Err(format!("{}: {j} is not {what}", if at.is_empty() { "/" } else { at }));
    let int = || j.as_i64();
    Ok(match s {
        Schema::Ref { name } => return to_value(j, names.get(name).ok_or(format!("{at}: unknown type {name:?}"))?, names, at),
        Schema::Null => match j {
            Json::Null => Value::Null,
            _ => return err("null"),
        },
        Schema::Boolean => match j.as_bool() {
            Some(b) => Value::Boolean(b),
            None => return err("a boolean"),
        },
        Schema::Int => match int().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Value::Int(i),
            None => return err("an int"),
        },
        Schema::Long => match int() {
            Some(i) => Value::Long(i),
            None => return err("a long"),
        },
        Schema::Float => match j.as_f64() {
            Some(f) => Value::Float(f as f32),
            None => return err("a float"),
        },
        Schema::Double => match j.as_f64() {
            Some(f) => Value::Double(f),
            None => return err("a double"),
        },
        Schema::String => match j.as_str() {
            Some(t) => Value::String(t.to_owned()),
            None => return err("a string"),
        },
        Schema::Bytes => Value::Bytes(bytes(j).ok_or_else(|| format!("{at}: {j} is not bytes (a string or $binary)"))?),
        Schema::Fixed(f) => match bytes(j) {
            Some(b) if b.len() == f.size => Value::Fixed(f.size, b),
            _ => return err(&format!("{} bytes (fixed)", f.size)),
        },
        Schema::Enum(e) => match j.as_str().and_then(|t| e.symbols.iter().position(|s| s == t)) {
            Some(i) => Value::Enum(i as u32, e.symbols[i].clone()),
            None => return err(&format!("one of {:?}", e.symbols)),
        },
        Schema::Array(a) => match j.as_array() {
            Some(items) => Value::Array(
                items.iter().enumerate().map(|(i, v)| to_value(v, &a.items, names, &format!("{at}/{i}"))).collect::<Result<_, _>>()?,
            ),
            None => return err("an array"),
        },
        Schema::Map(m) => match j.as_object() {
            Some(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), to_value(v, &m.types, names, &format!("{at}/{k}"))?)))
                    .collect::<Result<_, String>>()?,
            ),
            None => return err("an object (map)"),
        },
        Schema::Record(r) => {
            let Some(o) = j.as_object() else { return err("an object (record)") };
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let path = format!("{at}/{}", f.name);
                let v = match (o.get(&f.name), &f.default) {
                    (Some(v), _) => to_value(v, &f.schema, names, &path)?,
                    (None, Some(d)) => default_value(d, &f.schema, names, &path)?,
                    (None, None) => return Err(format!("{path}: missing, and the field has no default")),
                };
                fields.push((f.name.clone(), v));
            }
            if let Some(extra) = o.keys().find(|k| !r.lookup.contains_key(*k)) {
                return Err(format!("{at}/{extra}: not a field of record {}", r.name));
            }
            Value::Record(fields)
        }
        Schema::Union(u) => {
            let mut why = Vec::new();
            for (i, branch) in u.variants().iter().enumerate() {
                match to_value(j, branch, names, at) {
                    Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                    Err(e) => why.push(e),
                }
            }
            return Err(format!("{}: {j} fits no branch of the union ({})", if at.is_empty() { "/" } else { at }, why.join("; ")));
        }
        Schema::Decimal(d) => {
            let text = match j {
                Json::String(t) => t.clone(),
                Json::Number(n) => n.to_string(),
                _ => return err("a decimal (a string like \"12.34\")"),
            };
            let unscaled =
                unscaled(&text, d.scale).ok_or_else(|| format!("{at}: {text:?} is not a decimal with at most {} places", d.scale))?;
            let mut b = unscaled.to_signed_bytes_be();
            if let apache_avro::schema::InnerDecimalSchema::Fixed(f) = &d.inner {
                if b.len() > f.size {
                    return err(&format!("a decimal that fits {} bytes", f.size));
                }
                let fill = if unscaled.sign() == num_bigint::Sign::Minus { 0xff } else { 0 };
                let mut padded = vec![fill; f.size - b.len()];
                padded.extend_from_slice(&b);
                b = padded;
            }
            Value::Decimal(apache_avro::Decimal::from(b))
        }
        Schema::BigDecimal => return err("supported: big-decimal is not"),
        Schema::Uuid(_) => match j.as_str().and_then(|t| apache_avro::Uuid::parse_str(t).ok()) {
            Some(u) => Value::Uuid(u),
            None => return err("a UUID string"),
        },
        Schema::Date => match (int(), j.as_str().and_then(parse_date)) {
            (Some(d), _) => Value::Date(i32::try_from(d).map_err(|_| format!("{at}: day {d} out of range"))?),
            (_, Some(d)) => Value::Date(d as i32),
            _ => return err("a date (days since 1970-01-01, or \"YYYY-MM-DD\")"),
        },
        Schema::TimeMillis => match int().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Value::TimeMillis(i),
            None => return err("milliseconds since midnight"),
        },
        Schema::TimeMicros => match int() {
            Some(i) => Value::TimeMicros(i),
            None => return err("microseconds since midnight"),
        },
        Schema::TimestampMillis | Schema::LocalTimestampMillis => Value::TimestampMillis(timestamp(j, 1, at)?),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => Value::TimestampMicros(timestamp(j, 1000, at)?),
        Schema::TimestampNanos | Schema::LocalTimestampNanos => Value::TimestampNanos(timestamp(j, 1_000_000, at)?),
        Schema::Duration(_) => return err("supported: duration is not"),
    })
    .map(|v| match (s, v) {
        // The local variants carry their own value kinds.
        (Schema::LocalTimestampMillis, Value::TimestampMillis(t)) => Value::LocalTimestampMillis(t),
        (Schema::LocalTimestampMicros, Value::TimestampMicros(t)) => Value::LocalTimestampMicros(t),
        (Schema::LocalTimestampNanos, Value::TimestampNanos(t)) => Value::LocalTimestampNanos(t),
        (_, v) => v,
    })
}

/// A field's default (Avro writes a union's default for its first branch).
fn default_value(d: &Json, s: &Schema, names: &HashMap<Name, &Schema>, at: &str) -> Result<Value, String> {
    match s {
        Schema::Union(u) => {
            let first = u.variants().first().ok_or_else(|| format!("{at}: an empty union"))?;
            Ok(Value::Union(0, Box::new(to_value(d, first, names, at)?)))
        }
        s => to_value(d, s, names, at),
    }
}

fn bytes(j: &Json) -> Option<Vec<u8>> {
    match j {
        Json::String(t) => Some(t.as_bytes().to_vec()),
        Json::Object(o) => {
            let b64 = o.get("$binary")?.get("base64")?.as_str()?;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        }
        _ => None,
    }
}

/// `"12.34"` at scale 2 → 1234 (more places than the scale: `None`).
fn unscaled(text: &str, scale: usize) -> Option<num_bigint::BigInt> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > scale || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    format!("{int}{frac:0<scale$}").parse().ok()
}

/// A timestamp in `per_milli` units of a millisecond: a number in the unit, an ISO string, or `{"$date": …}`.
fn timestamp(j: &Json, per_milli: i64, at: &str) -> Result<i64, String> {
    let from_millis = |ms: i64| ms.checked_mul(per_milli).ok_or_else(|| format!("{at}: timestamp out of range"));
    match j {
        Json::Number(n) => n.as_i64().ok_or_else(|| format!("{at}: {n} is not an integer timestamp")),
        Json::String(t) => from_millis(parse_iso(t).ok_or_else(|| format!("{at}: {t:?} is not an ISO-8601 UTC time"))?),
        Json::Object(o) => match o.get("$date") {
            Some(Json::String(t)) => from_millis(parse_iso(t).ok_or_else(|| format!("{at}: {t:?} is not an ISO-8601 UTC time"))?),
            Some(Json::Number(n)) => from_millis(n.as_i64().ok_or_else(|| format!("{at}: {n} is not integer milliseconds"))?),
            Some(Json::Object(l)) => from_millis(
                l.get("$numberLong")
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{at}: a $date I cannot read"))?,
            ),
            _ => Err(format!("{at}: {j} is not a timestamp")),
        },
        _ => Err(format!("{at}: {j} is not a timestamp")),
    }
}

/// `YYYY-MM-DD` → days since 1970-01-01.
fn parse_date(t: &str) -> Option<i64> {
    let mut p = t.splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // H. Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff…]Z` → milliseconds since the epoch.
fn parse_iso(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
    let (date, time) = t.split_once('T')?;
    let days = parse_date(date)?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut p = hms.splitn(3, ':');
    let (h, m, s): (i64, i64, i64) = (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
    let millis: i64 = if frac.is_empty() { 0 } else { format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()? };
    Some(days * 86_400_000 + h * 3_600_000 + m * 60_000 + s * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::avro::AvroSchema;

    const SCHEMA: &str = r#"{"type": "record", "name": "T", "fields": [
        {"name": "n", "type": "long"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "neg", "type": {"type": "fixed", "name": "F", "size": 4, "logicalType": "decimal", "precision": 6, "scale": 1}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}, "default": "A"}
    ]}"#;

    #[test]
    fn json_goes_in_and_the_decoder_gives_it_back() {
        let enc = AvroEncoder::new(SCHEMA, 42).unwrap();
        let bytes = enc.encode(r#"{"n": 5, "price": "12.3", "neg": -2.5, "at": "2023-11-14T22:13:20.123Z", "day": "2022-01-08"}"#).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
        let schema = AvroSchema::parse(SCHEMA, &[]).unwrap();
        let mut out = Vec::new();
        schema.reader(crate::config::Decimals::Decimal128).unwrap().decode(&bytes[5..], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"n":5,"price":{"$numberDecimal":"12.30"},"neg":{"$numberDecimal":"-2.5"},"#,
                r#""at":{"$date":"2023-11-14T22:13:20.123Z"},"day":{"$date":"2022-01-08T00:00:00.000Z"},"note":null,"kind":"A"}"#
            )
        );
    }

    #[test]
    fn values_that_do_not_fit_say_where() {
        let enc = AvroEncoder::new(SCHEMA, 1).unwrap();
        let e = enc.encode(r#"{"n": "x", "price": "1", "neg": 1, "at": 0, "day": 0}"#).unwrap_err();
        assert!(e.contains("/n: \"x\" is not a long"), "{e}");
        let e = enc.encode(r#"{"n": 1, "price": "1.234", "neg": 1, "at": 0, "day": 0}"#).unwrap_err();
        assert!(e.contains("/price"), "{e}");
        let e = enc.encode(r#"{"n": 1, "price": "1", "neg": 1, "at": 0, "day": 0, "zzz": 1}"#).unwrap_err();
        assert!(e.contains("/zzz: not a field"), "{e}");
        let e = enc.encode(r#"{"price": "1", "neg": 1, "at": 0, "day": 0}"#).unwrap_err();
        assert!(e.contains("/n: missing"), "{e}");
    }
}
