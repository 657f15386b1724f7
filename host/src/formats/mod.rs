//! Record formats: keys and values in Confluent's wire format (Avro, Protobuf,
//! JSON Schema, a schema id from a registry) or raw bytes, read into JSON
//! before the plugin chain — plugins see JSON whatever the topic carries, and
//! stay free of I/O. JSON topics pass through untouched.
//!
//! Decoding is in two steps, so a registry outage is a retry and never a poison
//! record: [`Decoder::missing`] + [`Decoder::fetch`] (async, the only I/O) bring
//! every schema id of a batch into the cache; then [`Decoder::decode_batch`]
//! (CPU only) turns each record into the one the chain sees, or into its
//! `invalid-input` failure (not in the wire format, an id the registry does not
//! know, a payload that does not match its schema). A failed record keeps its
//! original bytes for its dead letter, which `sluice dlq replay` decodes again.

mod avro;
pub mod encode;
mod json;
mod json_schema;
mod protobuf;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Decimals, Format, KafkaConfig, SchemaRegistryConfig};
use crate::record::{Failure, FailureKind, SourceRecord};
pub use registry::{Entry, Registry, RegistryError, Schema};

/// Reads keys and values by their configured formats.
pub struct Decoder {
    key: Format,
    value: Format,
    decimals: Decimals,
    registry: Option<Registry>,
}

/// A batch as the chain sees it: the records that decoded (in order), where
/// each came from in the batch, and the ones that failed.
#[derive(Debug, Default)]
pub struct DecodedBatch {
    pub records: Vec<SourceRecord>,
    pub positions: Vec<usize>,
    pub failed: Vec<(usize, Failure)>,
}

/// Which part of a record.
#[derive(Clone, Copy)]
enum Part {
    Key,
    Value,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

/// A schema id and the payload after it: Confluent's wire format (byte 0, then
/// the id as a big-endian u32).
pub fn frame(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [first, ..] if bytes.len() >= 5 => Err(format!(
            "is not in Confluent's wire format: its first byte is 0x{first:02x}, not the magic byte 0{}",
            if *first == b'{' || *first == b'[' { " (it looks like plain JSON)" } else { "" }
        )),
        _ => Err(format!("is not in Confluent's wire format: {} bytes, fewer than the 5 of its header", bytes.len())),
    }
}

impl Decoder {
    /// `None` when keys and values are both JSON: nothing to do.
    pub fn new(kafka: &KafkaConfig, registry: Option<&SchemaRegistryConfig>) -> Result<Option<Arc<Decoder>>, String> {
        Decoder::with_formats(kafka.key_format, kafka.value_format, kafka.decimals, registry)
    }

    pub fn with_formats(
        key: Format,
        value: Format,
        decimals: Decimals,
        registry: Option<&SchemaRegistryConfig>,
    ) -> Result<Option<Arc<Decoder>>, String> {
        if key == Format::Json && value == Format::Json {
            return Ok(None);
        }
        let registry = match registry {
            Some(cfg) if key.uses_registry() || value.uses_registry() => Some(Registry::new(cfg)?),
            None if key.uses_registry() || value.uses_registry() => {
                return Err(format!("key format {key} / value format {value} need a [schema_registry]"));
            }
            _ => None,
        };
        Ok(Some(Arc::new(Decoder { key, value, decimals, registry })))
    }

    fn parts<'r>(&self, rec: &'r SourceRecord) -> [(Part, Format, Option<&'r [u8]>); 2] {
        [(Part::Key, self.key, rec.key.as_deref()), (Part::Value, self.value, rec.value.as_deref())]
    }

    /// The schema ids of `records` not yet fetched (each once).
    pub fn missing(&self, records: &[SourceRecord]) -> Vec<u32> {
        let Some(registry) = &self.registry else { return Vec::new() };
        let mut ids = Vec::new();
        for rec in records {
            for (_, format, bytes) in self.parts(rec) {
                if let (true, Some(bytes)) = (format.uses_registry(), bytes)
                    && let Ok((id, _)) = frame(bytes)
                    && !ids.contains(&id)
                    && registry.get(id).is_none()
                {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Fetch these ids into the cache. `Err`: the registry is away or refused us.
    pub async fn fetch(&self, ids: &[u32]) -> Result<(), RegistryError> {
        let Some(registry) = &self.registry else { return Ok(()) };
        for &id in ids {
            registry.fetch(id).await?;
        }
        Ok(())
    }

    /// `missing` then `fetch`.
    pub async fn prepare(&self, records: &[SourceRecord]) -> Result<(), RegistryError> {
        self.fetch(&self.missing(records)).await
    }

    /// The cached schemas of `records`' ids, for one pass over them.
    fn snapshot(&self, records: &[SourceRecord]) -> HashMap<u32, Entry> {
        let mut out = HashMap::new();
        let Some(registry) = &self.registry else { return out };
        for rec in records {
            for (_, format, bytes) in self.parts(rec) {
                if let (true, Some(bytes)) = (format.uses_registry(), bytes)
                    && let Ok((id, _)) = frame(bytes)
                    && !out.contains_key(&id)
                    && let Some(entry) = registry.get(id)
                {
                    out.insert(id, entry);
                }
            }
        }
        out
    }

    /// Each record as the chain sees it, or its failure. Every schema id must
    /// have been fetched ([`Decoder::prepare`]); one that was not fails its record.
    pub fn decode_batch(&self, records: &[SourceRecord]) -> DecodedBatch {
        let mut out =
            DecodedBatch { records: Vec::with_capacity(records.len()), positions: Vec::with_capacity(records.len()), failed: Vec::new() };
        let schemas = self.snapshot(records);
        let mut readers = Readers { schemas: &schemas, avro: HashMap::new(), decimals: self.decimals };
        for (i, rec) in records.iter().enumerate() {
            match self.decode_with(rec, &mut readers) {
                Ok(r) => {
                    out.records.push(r);
                    out.positions.push(i);
                }
                Err(f) => out.failed.push((i, f)),
            }
        }
        out
    }

    /// One record (tools: `plugin test`, `dlq replay`).
    pub fn decode(&self, rec: &SourceRecord) -> Result<SourceRecord, Failure> {
        let schemas = self.snapshot(std::slice::from_ref(rec));
        self.decode_with(rec, &mut Readers { schemas: &schemas, avro: HashMap::new(), decimals: self.decimals })
    }

    fn decode_with<'s>(&self, rec: &SourceRecord, readers: &mut Readers<'s>) -> Result<SourceRecord, Failure> {
        let mut decoded = SourceRecord {
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: None,
            value: None,
            headers: rec.headers.clone(),
        };
        for (part, format, bytes) in self.parts(rec) {
            let slot = match part {
                Part::Key => &mut decoded.key,
                Part::Value => &mut decoded.value,
            };
            *slot = match bytes {
                None => None,
                Some(b) => Some(decode_part(format, b, readers).map_err(|m| Failure {
                    plugin: None,
                    plugin_version: None,
                    kind: FailureKind::InvalidInput,
                    message: format!("{} {m}", part.name()),
                })?),
            };
        }
        Ok(decoded)
    }
}

fn decode_part<'s>(format: Format, bytes: &[u8], readers: &mut Readers<'s>) -> Result<Vec<u8>, String> {
    match format {
        Format::Json => Ok(bytes.to_vec()),
        Format::Raw => {
            let mut out = Vec::with_capacity(bytes.len() * 4 / 3 + 48);
            json::binary(&mut out, bytes, 0);
            Ok(out)
        }
        Format::Avro | Format::Protobuf | Format::JsonSchema => {
            let (id, payload) = frame(bytes)?;
            let schema: &'s Schema = match readers.schemas.get(&id) {
                Some(Ok(s)) => s,
                Some(Err(m)) => return Err(format!("cannot be read: {m}")),
                None => return Err(format!("has schema id {id}, which was not fetched from the registry")),
            };
            let mut out = Vec::with_capacity(payload.len() * 2 + 16);
            let result = match (format, schema) {
                (Format::Avro, Schema::Avro(s)) => readers.avro(id, s).and_then(|r| r.decode(payload, &mut out)),
                (Format::Protobuf, Schema::Protobuf(s)) => s.decode(payload, &mut out, readers.decimals),
                (Format::JsonSchema, Schema::Json(s)) => s.decode(payload, &mut out),
                (f, s) => return Err(format!("has schema id {id}, a {} schema, but its format is {f}", s.type_name())),
            };
            result.map_err(|m| format!("(schema id {id}) {m}"))?;
            Ok(out)
        }
    }
}

/// A batch's schemas, and its Avro readers, one per schema id (resolving a
/// schema's names costs more than reading a small record).
struct Readers<'s> {
    schemas: &'s HashMap<u32, Entry>,
    avro: HashMap<u32, avro::AvroReader<'s>>,
    decimals: Decimals,
}

impl<'s> Readers<'s> {
    fn avro(&mut self, id: u32, schema: &'s avro::AvroSchema) -> Result<&avro::AvroReader<'s>, String> {
        if !self.avro.contains_key(&id) {
            self.avro.insert(id, schema.reader(self.decimals)?);
        }
        Ok(&self.avro[&id])
    }
}
