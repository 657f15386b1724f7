// Run a plugin natively on records (no WebAssembly): what `node --test` uses.
import { ABSENT, Record, readResult } from './columns.js';
import { Output } from './index.js';

const enc = new TextEncoder();

/** Records (Record objects, or JSON strings for values) through `plugin` (what map/filter/flatMap return):
 *  one outcome each: {kind:'drop'} | {kind:'emit', outputs:[Output]} | {kind:'error', message, invalidInput}. */
export function run(plugin, records, { topic = 't', partition = 0 } = {}) {
  const offsets = [], timestamps = [], spans = [], headerSpans = [], parts = [];
  let len = 0;
  const put = (b) => { parts.push(b); const s = len; len += b.length; return s; };
  records.forEach((r, i) => {
    if (!(r instanceof Record)) r = new Record(topic, partition, i, null, null, r === null ? null : enc.encode(r));
    const first = headerSpans.length / 4;
    for (const [k, v] of r.headers) {
      const kb = enc.encode(k);
      headerSpans.push(put(kb), kb.length);
      if (v === null) headerSpans.push(0, ABSENT); else headerSpans.push(put(v), v.length);
    }
    for (const part of [r.key, r.value]) {
      if (part === null) spans.push(0, ABSENT); else spans.push(put(part), part.length);
    }
    spans.push(first, r.headers.length);
    offsets.push(BigInt(r.offset));
    timestamps.push(BigInt(r.timestamp ?? -1));
  });
  const data = new Uint8Array(len);
  let o = 0;
  for (const p of parts) { data.set(p, o); o += p.length; }
  const result = plugin.process({ topic, partition, offsets: BigInt64Array.from(offsets), timestamps: BigInt64Array.from(timestamps),
    spans: Uint32Array.from(spans), headerSpans: Uint32Array.from(headerSpans), data });
  return readResult(result).map((x) => x.kind === 'emit'
    ? { kind: 'emit', outputs: x.outputs.map((y) => new Output(y.operation, JSON.parse(y.document), y.collection)) } : x);
}
