// Run a plugin natively on records (no WebAssembly): what `node --test` uses.
//
//   import plugin from './plugin.js';
//   assert.deepEqual(run(plugin, ['{"num": 3}']), [{ kind: 'emit', outputs: [Output.insert({ num: 3, square: 9 })] }]);
import { ABSENT, Record, readResult } from './columns.js';
import { Output } from './index.js';

const enc = new TextEncoder();

/** Records through `plugin` (what map/filter/flatMap return) as one batch; one outcome each:
 *  {kind:'drop'} | {kind:'emit', outputs:[Output]} | {kind:'error', message, invalidInput}.
 *  A record is a Record, or a value (JSON text; null for a tombstone) given offset = its index.
 *  A batch is one topic partition: `topic` and `partition` default to the first Record's (else
 *  't', 0). With `raw: true` an output's document is the exact JSON text the plugin wrote. */
export function run(plugin, records, { topic, partition, raw = false } = {}) {
  const first = records.find((r) => r instanceof Record);
  topic ??= first ? first.topic : 't';
  partition ??= first ? first.partition : 0;
  const offsets = [], timestamps = [], spans = [], headerSpans = [], parts = [];
  let len = 0;
  const put = (b) => { parts.push(b); const s = len; len += b.length; return s; };
  records.forEach((r, i) => {
    if (!(r instanceof Record)) r = new Record(topic, partition, i, null, null, r === null ? null : enc.encode(r));
    else if (r.topic !== topic || r.partition !== partition) throw new Error(`a batch is one topic partition: ${r.topic}/${r.partition} is not ${topic}/${partition}`);
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
    ? { kind: 'emit', outputs: x.outputs.map((y) => {
      const parse = (t) => (t === null || raw ? t : JSON.parse(t));
      return new Output(y.operation, parse(y.document), y.collection, parse(y.filter), y.upsert);
    }) } : x);
}
