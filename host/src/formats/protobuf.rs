//! Protobuf (the registry's `.proto` text, compiled here; the record's message
//! indexes pick the message) to relaxed extended JSON, with the proto field
//! names as Kafka Connect's Protobuf converter keeps them: every field, unset
//! ones at their default (fields with presence and unset: `null`; oneof members
//! not set: left out); enums by name; `bytes` binary; 64-bit integers numbers
//! (`uint64` past int64: Decimal128); maps documents with sorted keys;
//! `google.protobuf.Timestamp` a date, the wrappers their value, `Struct`/
//! `Value`/`ListValue` plain JSON.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::json::{self, Array, Decimals, Object};

/// The name the registry's schema text is compiled under (its references keep their own).
const ROOT: &str = "__sluice_root__.proto";

#[derive(Debug)]
pub struct ProtoSchema {
    /// The root file's top-level messages, in declaration order: what message indexes count.
    messages: Vec<MessageDescriptor>,
}

struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl ProtoSchema {
    /// `text` is the schema; `refs` the referenced files by import name.
    pub fn parse(text: &str, refs: &[(String, String)]) -> Result<ProtoSchema, String> {
        let mut sources: HashMap<String, String> = refs.iter().cloned().collect();
        sources.insert(ROOT.to_owned(), text.to_owned());
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(sources));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(ROOT).map_err(|e| format!("not a valid Protobuf schema: {e}"))?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool.get_file_by_name(ROOT).ok_or("the compiled Protobuf schema has no root file")?;
        let messages: Vec<MessageDescriptor> = file.messages().collect();
        if messages.is_empty() {
            return Err("the Protobuf schema defines no message".into());
        }
        Ok(ProtoSchema { messages })
    }

    /// The message that Confluent's message indexes name, and the payload after them.
    fn message<'p>(&self, payload: &'p [u8]) -> Result<(MessageDescriptor, &'p [u8]), String> {
        let (indexes, rest) = message_indexes(payload)?;
        let mut desc = self.messages.get(indexes[0]).ok_or_else(|| format!("message index {} is not in the schema", indexes[0]))?.clone();
        for &i in &indexes[1..] {
            let child = desc.child_messages().nth(i);
            desc = child.ok_or_else(|| format!("nested message index {i} is not in {}", desc.full_name()))?;
        }
        Ok((desc, rest))
    }

    /// A payload after the schema id (message indexes, then the message) as JSON into `out`.
    pub fn decode(&self, payload: &[u8], out: &mut Vec<u8>, decimals: Decimals) -> Result<(), String> {
        let (desc, bytes) = self.message(payload)?;
        let name = desc.full_name().to_owned();
        let msg = DynamicMessage::decode(desc, bytes).map_err(|e| format!("does not match its Protobuf schema ({name}): {e}"))?;
        write_message(&msg, out, decimals)
    }
}

/// Confluent's message indexes: a zig-zag varint count, then that many zig-zag
/// varints (the path to the message); a count of 0 stands for `[0]`.
fn message_indexes(mut buf: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    let mut read = || -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first().ok_or("the message indexes are cut short")?;
            buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err("a message index is not a valid varint".into())
    };
    let count = read()?;
    if !(0..=100).contains(&count) {
        return Err(format!("message index count {count} is not valid"));
    }
    let mut indexes = Vec::with_capacity(count.max(1) as usize);
    for _ in 0..count {
        let i = read()?;
        indexes.push(usize::try_from(i).map_err(|_| format!("message index {i} is negative"))?);
    }
    if indexes.is_empty() {
        indexes.push(0);
    }
    Ok((indexes, buf))
}

fn write_message(msg: &DynamicMessage, out: &mut Vec<u8>, d: Decimals) -> Result<(), String> {
    let desc = msg.descriptor();
    match desc.full_name() {
        "google.protobuf.Timestamp" => {
            let (secs, nanos) = (msg.get_field_by_name("seconds"), msg.get_field_by_name("nanos"));
            let secs = secs.as_ref().and_then(|v| v.as_i64()).unwrap_or(0);
            let nanos = nanos.as_ref().and_then(|v| v.as_i32()).unwrap_or(0);
            json::date(out, secs.saturating_mul(1000).saturating_add(i64::from(nanos) / 1_000_000));
            return Ok(());
        }
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => {
            let field = desc.get_field_by_name("value").ok_or("a wrapper without `value`")?;
            return write_value(&msg.get_field(&field), &field.kind(), out, d);
        }
        "google.protobuf.Struct" => {
            let field = desc.get_field_by_name("fields").ok_or("a Struct without `fields`")?;
            return write_value(&msg.get_field(&field), &field.kind(), out, d);
        }
        "google.protobuf.ListValue" => {
            let field = desc.get_field_by_name("values").ok_or("a ListValue without `values`")?;
            return write_value(&msg.get_field(&field), &field.kind(), out, d);
        }
        "google.protobuf.Value" => {
            return match msg.fields().next() {
                Some((field, v)) if field.name() != "null_value" => write_value(v, &field.kind(), out, d),
                _ => {
                    json::null(out);
                    Ok(())
                }
            };
        }
        _ => {}
    }
    let mut obj = Object::open(out);
    for field in desc.fields() {
        let set = msg.has_field(&field);
        if !set && field.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
            continue;
        }
        obj.key(out, field.name());
        if !set && field.supports_presence() {
            json::null(out);
        } else {
            write_value(&msg.get_field(&field), &field.kind(), out, d)?;
        }
    }
    obj.close(out);
    Ok(())
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(u) => u.to_string(),
        MapKey::U64(u) => u.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn write_value(value: &Value, kind: &Kind, out: &mut Vec<u8>, d: Decimals) -> Result<(), String> {
    match value {
        Value::Bool(b) => json::bool(out, *b),
        Value::I32(i) => json::int(out, i64::from(*i)),
        Value::I64(i) => json::int(out, *i),
        Value::U32(u) => json::int(out, i64::from(*u)),
        Value::U64(u) => json::uint(out, *u, d),
        Value::F32(f) => json::float(out, *f),
        Value::F64(f) => json::double(out, *f),
        Value::String(s) => json::string(out, s),
        Value::Bytes(b) => json::binary(out, b, 0),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => json::string(out, v.name()),
            // A number this schema does not name (a newer writer): kept as the number.
            None => json::int(out, i64::from(*n)),
        },
        Value::Message(m) => write_message(m, out, d)?,
        Value::List(items) => {
            let mut arr = Array::open(out);
            for item in items {
                arr.item(out);
                write_value(item, kind, out, d)?;
            }
            arr.close(out);
        }
        Value::Map(map) => {
            // A map field's kind is its entry message: the values' kind is the entry's `value`.
            let value_kind = kind.as_message().map(|m| m.map_entry_value_field().kind()).ok_or("a map value without its entry type")?;
            let mut entries: Vec<(String, &Value)> = map.iter().map(|(k, v)| (map_key(k), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut obj = Object::open(out);
            for (k, v) in entries {
                obj.key(out, &k);
                write_value(v, &value_kind, out, d)?;
            }
            obj.close(out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost::Message as _;

    const SCHEMA: &str = r#"
        syntax = "proto3";
        package sluice.test;
        import "google/protobuf/timestamp.proto";
        message Other { string x = 1; }
        message Order {
          int64 id = 1;
          string customer = 2;
          repeated string tags = 3;
          map<string, int32> counts = 4;
          Status status = 5;
          google.protobuf.Timestamp at = 6;
          Line line = 7;
          optional string note = 8;
          oneof pay { string card = 9; string cash = 10; }
          bytes blob = 11;
          double total = 12;
          message Line { int32 qty = 1; }
        }
        enum Status { NEW = 0; PAID = 1; }
    "#;

    /// A payload as Confluent frames it after the schema id: indexes [1] (Order), then the message.
    fn framed(msg: &DynamicMessage, indexes: &[u8]) -> Vec<u8> {
        let mut out = indexes.to_vec();
        msg.encode(&mut out).unwrap();
        out
    }

    fn order(schema: &ProtoSchema) -> DynamicMessage {
        let desc = schema.messages[1].clone();
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("id", Value::I64(7_000_000_000));
        m.set_field_by_name("tags", Value::List(vec![Value::String("a".into())]));
        m.set_field_by_name(
            "counts",
            Value::Map([(MapKey::String("z".into()), Value::I32(2)), (MapKey::String("b".into()), Value::I32(1))].into()),
        );
        m.set_field_by_name("status", Value::EnumNumber(1));
        let ts = desc.parent_pool().get_message_by_name("google.protobuf.Timestamp").unwrap();
        let mut t = DynamicMessage::new(ts);
        t.set_field_by_name("seconds", Value::I64(1_700_000_000));
        t.set_field_by_name("nanos", Value::I32(123_000_000));
        m.set_field_by_name("at", Value::Message(t));
        m.set_field_by_name("cash", Value::String("yes".into()));
        m.set_field_by_name("blob", Value::Bytes(vec![0u8, 255].into()));
        m.set_field_by_name("total", Value::F64(3.0));
        m
    }

    fn decode(schema: &ProtoSchema, payload: &[u8]) -> Result<String, String> {
        let mut out = Vec::new();
        schema.decode(payload, &mut out, Decimals::Decimal128)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn indexes_pick_the_message_and_fields_map_like_connect() {
        let schema = ProtoSchema::parse(SCHEMA, &[]).unwrap();
        // [1]: count 1 (zig-zag 2), index 1 (zig-zag 2).
        let json = decode(&schema, &framed(&order(&schema), &[2, 2])).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"id":7000000000,"customer":"","tags":["a"],"counts":{"b":1,"z":2},"status":"PAID","#,
                r#""at":{"$date":"2023-11-14T22:13:20.123Z"},"line":null,"note":null,"cash":"yes","#,
                r#""blob":{"$binary":{"base64":"AP8=","subType":"00"}},"total":3.0}"#
            )
        );
        // A count of 0 is the first message; nested [1, 1] is Order.Line ([1, 0] is the map's
        // entry type, which protoc also declares as a nested message: Confluent counts it too).
        let other = DynamicMessage::new(schema.messages[0].clone());
        assert_eq!(decode(&schema, &framed(&other, &[0])).unwrap(), r#"{"x":""}"#);
        let line = DynamicMessage::new(schema.messages[1].child_messages().nth(1).unwrap());
        assert_eq!(decode(&schema, &framed(&line, &[4, 2, 2])).unwrap(), r#"{"qty":0}"#);
    }

    #[test]
    fn bad_indexes_payloads_and_schemas_are_errors() {
        let schema = ProtoSchema::parse(SCHEMA, &[]).unwrap();
        assert!(decode(&schema, &[2, 10]).unwrap_err().contains("message index 5 is not in the schema"));
        assert!(decode(&schema, &[2]).unwrap_err().contains("cut short"));
        assert!(decode(&schema, &[2, 2, 0xff, 0xff]).unwrap_err().contains("does not match its Protobuf schema"));
        assert!(ProtoSchema::parse("syntax = \"proto3\"; message {", &[]).unwrap_err().contains("not a valid Protobuf schema"));
        let imports = "syntax = \"proto3\"; import \"other.proto\"; message A { B b = 1; }";
        assert!(ProtoSchema::parse(imports, &[]).is_err());
        let refs = [("other.proto".to_string(), "syntax = \"proto3\"; message B { int32 n = 1; }".to_string())];
        let schema = ProtoSchema::parse(imports, &refs).unwrap();
        assert_eq!(decode(&schema, &[0, 10, 2, 8, 5]).unwrap(), r#"{"b":{"n":5}}"#);
    }
}
