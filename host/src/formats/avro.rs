//! Avro binary (one datum, the writer's schema from the registry) to relaxed
//! extended JSON, the way the MongoDB Kafka sink connector maps Avro to BSON:
//! records and maps are documents, `bytes`/`fixed` binary, enums their symbol,
//! a union its branch's value; logical types become real BSON types —
//! `timestamp-*`/`local-timestamp-*` and `date` a date (micro- and nanoseconds
//! truncated to milliseconds), `decimal` a Decimal128 (at most 34 digits),
//! `uuid` its string form, `time-*` a number (milli- or microseconds since
//! midnight), `duration` a `{months, days, millis}` document.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value;

use super::json::{self, Array, Object};

/// A writer schema and the schemas it references (registry references, in dependency order).
#[derive(Debug)]
pub struct AvroSchema {
    root: Schema,
    refs: Vec<Schema>,
}

impl AvroSchema {
    /// `text` is the schema; `refs` the referenced schemas' texts, each before those that use it.
    pub fn parse(text: &str, refs: &[String]) -> Result<AvroSchema, String> {
        let (root, refs) = Schema::parse_str_with_list(text, refs).map_err(|e| format!("not a valid Avro schema: {e}"))?;
        let this = AvroSchema { root, refs };
        // Resolve once here, so a dangling reference is the schema's error, not every record's.
        this.reader(json::Decimals::Decimal128)?;
        Ok(this)
    }

    /// A reader of this schema's data, for a batch.
    pub fn reader(&self, decimals: json::Decimals) -> Result<AvroReader<'_>, String> {
        let all = || self.refs.iter().chain(std::iter::once(&self.root)).collect::<Vec<_>>();
        let resolved = ResolvedSchema::new_with_schemata(all()).map_err(|e| format!("Avro schema does not resolve: {e}"))?;
        let names: HashMap<Name, &Schema> = resolved.get_names().clone();
        let datum = apache_avro::reader::datum::GenericDatumReader::builder(&self.root)
            .resolved_writer_schemata(resolved)
            .build()
            .map_err(|e| format!("Avro schema does not resolve: {e}"))?;
        Ok(AvroReader { root: &self.root, names, datum, decimals })
    }
}

pub struct AvroReader<'s> {
    root: &'s Schema,
    names: HashMap<Name, &'s Schema>,
    datum: apache_avro::reader::datum::GenericDatumReader<'s>,
    decimals: json::Decimals,
}

impl AvroReader<'_> {
    /// One datum as JSON into `out`; the whole payload must be that datum.
    pub fn decode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut cursor = payload;
        let value = self.datum.read_value(&mut cursor).map_err(|e| format!("does not match its Avro schema: {e}"))?;
        if !cursor.is_empty() {
            return Err(format!(
                "does not match its Avro schema: {} of its {} bytes are left over after the datum",
                cursor.len(),
                payload.len()
            ));
        }
        self.write(&value, self.root, out)
    }

    fn resolve<'a>(&'a self, schema: &'a Schema) -> Result<&'a Schema, String> {
        match schema {
            Schema::Ref { name } => {
                self.names.get(name).copied().ok_or_else(|| format!("Avro schema names {name:?}, which it does not define"))
            }
            s => Ok(s),
        }
    }

    fn write(&self, value: &Value, schema: &Schema, out: &mut Vec<u8>) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        match (value, schema) {
            (Value::Null, _) => json::null(out),
            (Value::Boolean(b), _) => json::bool(out, *b),
            (Value::Int(i), _) => json::int(out, i64::from(*i)),
            (Value::Long(i), _) => json::int(out, *i),
            (Value::Float(f), _) => json::float(out, *f),
            (Value::Double(f), _) => json::double(out, *f),
            (Value::Bytes(b) | Value::Fixed(_, b), _) => json::binary(out, b, 0),
            (Value::String(s), _) => json::string(out, s),
            (Value::Enum(_, symbol), _) => json::string(out, symbol),
            (Value::Uuid(u), _) => json::string(out, &u.hyphenated().to_string()),
            (Value::Union(i, inner), Schema::Union(u)) => {
                let branch = u.variants().get(*i as usize).ok_or_else(|| format!("union branch {i} is not in the schema"))?;
                self.write(inner, branch, out)?;
            }
            (Value::Array(items), Schema::Array(a)) => {
                let mut arr = Array::open(out);
                for item in items {
                    arr.item(out);
                    self.write(item, &a.items, out)?;
                }
                arr.close(out);
            }
            (Value::Map(entries), Schema::Map(m)) => {
                // Avro maps are unordered: sorted keys, so the same datum is the same document.
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort();
                let mut obj = Object::open(out);
                for k in keys {
                    obj.key(out, k);
                    self.write(&entries[k], &m.types, out)?;
                }
                obj.close(out);
            }
            (Value::Record(fields), Schema::Record(r)) => {
                let mut obj = Object::open(out);
                for ((name, v), field) in fields.iter().zip(&r.fields) {
                    obj.key(out, name);
                    self.write(v, &field.schema, out)?;
                }
                obj.close(out);
            }
            (Value::Date(days), _) => json::date(out, i64::from(*days) * 86_400_000),
            (Value::TimeMillis(ms), _) => json::int(out, i64::from(*ms)),
            (Value::TimeMicros(us), _) => json::int(out, *us),
            (Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms), _) => json::date(out, *ms),
            (Value::TimestampMicros(us) | Value::LocalTimestampMicros(us), _) => json::date(out, us.div_euclid(1000)),
            (Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns), _) => json::date(out, ns.div_euclid(1_000_000)),
            (Value::Decimal(d), Schema::Decimal(s)) => {
                let unscaled = num_bigint::BigInt::from(d.clone());
                json::scaled_decimal(out, &unscaled.to_string(), s.scale, self.decimals)?;
            }
            (Value::BigDecimal(d), _) => {
                let (unscaled, scale) = d.as_bigint_and_exponent();
                if scale < 0 {
                    json::scaled_decimal(out, &format!("{unscaled}{}", "0".repeat(scale.unsigned_abs() as usize)), 0, self.decimals)?;
                } else {
                    json::scaled_decimal(out, &unscaled.to_string(), scale as usize, self.decimals)?;
                }
            }
            (Value::Duration(d), _) => {
                let mut obj = Object::open(out);
                for (k, v) in [("months", u32::from(d.months())), ("days", u32::from(d.days())), ("millis", u32::from(d.millis()))] {
                    obj.key(out, k);
                    json::int(out, i64::from(v));
                }
                obj.close(out);
            }
            (v, s) => return Err(format!("Avro value {v:?} does not fit its schema {s:?}")),
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(deprecated)] // to_avro_datum: the simplest writer for test data
mod tests {
    use super::*;
    use apache_avro::to_avro_datum;

    const ORDER: &str = r#"{
      "type": "record", "name": "Order", "namespace": "sluice.test",
      "fields": [
        {"name": "id", "type": "long"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "state", "type": {"type": "enum", "name": "State", "symbols": ["NEW", "PAID"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "double"}},
        {"name": "blob", "type": "bytes"},
        {"name": "ratio", "type": "float"}
      ]}"#;

    fn order_value() -> Value {
        Value::Record(vec![
            ("id".into(), Value::Long(7_000_000_000)),
            ("qty".into(), Value::Int(3)),
            ("price".into(), Value::Decimal(apache_avro::Decimal::from(1234i64.to_be_bytes().to_vec()))),
            ("at".into(), Value::TimestampMillis(1_700_000_000_123)),
            ("day".into(), Value::Date(19_000)),
            ("ref".into(), Value::Uuid(apache_avro::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap())),
            ("note".into(), Value::Union(1, Box::new(Value::String("fragile".into())))),
            ("state".into(), Value::Enum(1, "PAID".into())),
            ("tags".into(), Value::Array(vec![Value::String("a".into()), Value::String("b".into())])),
            ("attrs".into(), Value::Map([("z".to_string(), Value::Double(1.0)), ("a".to_string(), Value::Double(0.5))].into())),
            ("blob".into(), Value::Bytes(vec![0, 255])),
            ("ratio".into(), Value::Float(0.1)),
        ])
    }

    fn decode(schema: &AvroSchema, payload: &[u8]) -> Result<String, String> {
        let mut out = Vec::new();
        schema.reader(json::Decimals::Decimal128)?.decode(payload, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn logical_types_become_bson_types() {
        let schema = AvroSchema::parse(ORDER, &[]).unwrap();
        let bytes = to_avro_datum(&schema.root, order_value()).unwrap();
        let json = decode(&schema, &bytes).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"id":7000000000,"qty":3,"price":{"$numberDecimal":"12.34"},"at":{"$date":"2023-11-14T22:13:20.123Z"},"#,
                r#""day":{"$date":"2022-01-08T00:00:00.000Z"},"ref":"67e55044-10b1-426f-9247-bb680e5fe0c8","note":"fragile","#,
                r#""state":"PAID","tags":["a","b"],"attrs":{"a":0.5,"z":1.0},"blob":{"$binary":{"base64":"AP8=","subType":"00"}},"#,
                r#""ratio":0.1}"#
            )
        );
    }

    #[test]
    fn a_payload_that_does_not_fit_is_an_error_not_a_guess() {
        let schema = AvroSchema::parse(ORDER, &[]).unwrap();
        let bytes = to_avro_datum(&schema.root, order_value()).unwrap();
        assert!(decode(&schema, &bytes[..bytes.len() - 3]).unwrap_err().contains("does not match its Avro schema"));
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"xyz");
        assert!(decode(&schema, &longer).unwrap_err().contains("3 of its"));
    }

    #[test]
    fn references_resolve_and_bad_schemas_are_refused() {
        let money = r#"{"type": "record", "name": "Money", "namespace": "m", "fields": [{"name": "cents", "type": "long"}]}"#;
        let root = r#"{"type": "record", "name": "Line", "fields": [{"name": "cost", "type": "m.Money"}]}"#;
        let schema = AvroSchema::parse(root, &[money.to_string()]).unwrap();
        let bytes =
            to_avro_datum(&schema.root, Value::Record(vec![("cost".into(), Value::Record(vec![("cents".into(), Value::Long(5))]))]));
        // The datum writer cannot see the reference; the bytes of {cents: 5} are one zig-zag varint.
        assert!(bytes.is_err() || !bytes.as_ref().unwrap().is_empty());
        assert_eq!(decode(&schema, &[10]).unwrap(), r#"{"cost":{"cents":5}}"#);
        assert!(AvroSchema::parse(root, &[]).unwrap_err().contains("Avro"));
        assert!(AvroSchema::parse("{", &[]).unwrap_err().contains("not a valid Avro schema"));
    }
}
