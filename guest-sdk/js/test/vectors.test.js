// The SDK's columns against the contract's test vectors (guest-sdk/wit/vectors.json), natively.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { INVALID_INPUT_TAG, Record, ResultWriter, readBatch, readResult } from '../src/columns.js';

const V = JSON.parse(readFileSync(process.env.SLUICE_VECTORS ?? new URL('../../wit/vectors.json', import.meta.url), 'utf8'));
const OPS = { insert: 0, upsert: 1, delete: 2, update: 3, replace: 4, 'delete-where': 5 };
const hx = (h) => (h === null ? null : Uint8Array.from(Buffer.from(h, 'hex')));
const toHex = (b) => Buffer.from(b).toString('hex');

test('constants', () => {
  assert.equal(V.contract, 'sluice:plugin@0.3.0');
  assert.equal(toHex(INVALID_INPUT_TAG), V.invalid_input_tag);
});

for (const v of V.batches) {
  test(`batch ${v.name}: columns read into records`, () => {
    const c = v.columns;
    const got = [...readBatch({ topic: v.topic, partition: v.partition, offsets: BigInt64Array.from(c.offsets.map(BigInt)),
      timestamps: BigInt64Array.from(c.timestamps.map(BigInt)), spans: Uint32Array.from(c.spans),
      headerSpans: Uint32Array.from(c.header_spans), data: hx(c.data) })];
    const want = (v.decoded ?? v.records).map((r) => new Record(v.topic, v.partition, r.offset, r.timestamp, hx(r.key), hx(r.value),
      r.headers.map(([k, val]) => [Buffer.from(k, 'hex').toString('utf8'), hx(val)])));
    assert.deepEqual(got.map((r) => ({ ...r })), want.map((r) => ({ ...r })));
  });
}

function write(outcomes, ordered) {
  const w = new ResultWriter(4, ordered); // small: exercises growing
  for (const o of outcomes) {
    w.begin();
    if (o.kind === 'drop') w.emitted();
    else if (o.kind === 'emit') { for (const x of o.outputs) w.output(OPS[x.operation], x.document, x.collection, x.filter, x.upsert); w.emitted(); }
    else w.failed(o.message, o.invalid_input);
  }
  const r = w.result();
  return { outcomes: Array.from(r.outcomes), outputs: Array.from(r.outputs), data: toHex(r.data), options: r.options };
}

for (const v of V.results) {
  if (!v.decode_only) test(`result ${v.name}: outcomes written into columns`, () => assert.deepEqual(write(v.outcomes, v.ordered), v.columns));
  test(`result ${v.name}: columns read back`, () => {
    const c = v.columns;
    const got = readResult({ outcomes: Uint32Array.from(c.outcomes), outputs: Uint32Array.from(c.outputs), data: hx(c.data) });
    const want = v.outcomes.map((o) => (o.kind === 'drop' || (o.kind === 'emit' && o.outputs.length === 0) ? { kind: 'drop' }
      : o.kind === 'emit' ? { kind: 'emit', outputs: o.outputs.map((x) => ({ operation: OPS[x.operation], filter: x.filter, document: x.document, upsert: x.upsert, collection: x.collection })) }
        : { kind: 'error', message: o.message, invalidInput: o.invalid_input }));
    assert.deepEqual(got, want);
  });
}

test('an error after outputs discards them', () => {
  const w = new ResultWriter();
  w.begin(); w.output(0, '{"a":1}', 'c'); w.failed('late');
  const r = w.result();
  assert.deepEqual([Array.from(r.outcomes), Array.from(r.outputs), Buffer.from(r.data).toString()], [[2, 0, 4], [], 'late']);
});
