//! A batch through the chain as the pipeline runs it: keys and values decoded
//! first (when they are not JSON), the chain on the records that decoded, and
//! the others failed as `invalid-input` in their places. The run's workers,
//! `sluice plugin test` and `sluice dlq replay` all go through here.

use crate::formats::Decoder;
use crate::plugin::chain::{Chain, Results};
use crate::plugin::runtime::RuntimeError;
use crate::record::SourceRecord;

/// The chain's results for `records` (the originals: their dead letters keep their bytes).
/// The decoder's schemas must have been fetched ([`Decoder::prepare`]).
pub fn process(chain: &mut Chain, decoder: Option<&Decoder>, records: &[SourceRecord]) -> Result<Results, RuntimeError> {
    match decoder {
        None => chain.process(records),
        Some(decoder) => {
            let decoded = decoder.decode_batch(records);
            Ok(chain.process(&decoded.records)?.spread(records.len(), &decoded.positions, decoded.failed))
        }
    }
}
