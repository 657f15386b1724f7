import { test } from 'node:test';
import assert from 'node:assert/strict';
import { filter, flatMap, map, Output, PluginError, Record } from '../src/index.js';
import { run } from '../src/testing.js';

const enc = new TextEncoder();

test('map: outputs, drop, errors', () => {
  const p = map((doc, record) => {
    switch (doc.n) {
      case 0: return null;
      case 1: return Output.upsert({ _id: 1, x: 'é' }).inCollection('other');
      case 2: return Output.delete(7);
      case 3: throw new PluginError('three');
      case 4: return [1];
      default: return { n: doc.n, k: record.keyString(), h: new TextDecoder().decode(record.header('h')) };
    }
  });
  const recs = [0, 1, 2, 3, 4, 5].map((i) => new Record('t', 0, i, null, enc.encode('k'), enc.encode(`{"n":${i}}`), [['h', enc.encode('v')]]));
  const out = run(p, [...recs, '', null, '{"n": NaN}']);
  assert.deepEqual(out.slice(0, 6), [
    { kind: 'drop' },
    { kind: 'emit', outputs: [new Output(1, { _id: 1, x: 'é' }, 'other')] },
    { kind: 'emit', outputs: [new Output(2, { _id: 7 }, null)] },
    { kind: 'error', message: 'three', invalidInput: false },
    { kind: 'error', message: 'the output is not a JSON object: [1]', invalidInput: false },
    { kind: 'emit', outputs: [new Output(0, { n: 5, k: 'k', h: 'v' }, null)] },
  ]);
  assert.ok(out[6].kind === 'error' && out[6].invalidInput && out[6].message.startsWith('value is not JSON'));
  assert.deepEqual(out[7], { kind: 'error', message: 'record has no value (tombstone)', invalidInput: true });
  assert.ok(out[8].invalidInput);
});

test('filter keeps the bytes and wants objects', () => {
  const p = filter((doc) => doc.num % 2 === 0);
  assert.deepEqual(run(p, ['{"num": 2}', '{"num":3}', '[1]']), [
    { kind: 'emit', outputs: [new Output(0, { num: 2 }, null)] },
    { kind: 'drop' },
    { kind: 'error', message: 'value is not a JSON object: [1]', invalidInput: true },
  ]);
});

test('flatMap discards the outputs of a failing record; other errors get their name', () => {
  const p = flatMap(function* (doc) {
    for (let i = 0; i < doc.k; i++) yield { i };
    if (doc.fail) throw new TypeError('late');
  });
  assert.deepEqual(run(p, ['{"k":2}', '{"k":2,"fail":true}', '{"k":0}']), [
    { kind: 'emit', outputs: [new Output(0, { i: 0 }), new Output(0, { i: 1 })] },
    { kind: 'error', message: 'TypeError: late', invalidInput: false },
    { kind: 'drop' },
  ]);
});

test('init gets the params; its error is the init error', () => {
  let factor;
  const p = map((d) => d, { init(params) { factor = params.parse('factor', Number, 2); } });
  p.init([['factor', '3']]);
  assert.equal(factor, 3);
  assert.throws(() => p.init([['factor', 'x']]), (e) => typeof e === 'string' && e.includes('parameter `factor`'));
});

test('raw documents are the bytes written; the batch is the first record\'s topic partition', () => {
  const p = map((doc, record) => ({ ...doc, at: [record.topic, record.partition, record.offset] }));
  const rec = new Record('orders', 3, 41, null, null, enc.encode('{"b":"é","a":1.5}'));
  assert.deepEqual(run(p, [rec], { raw: true }), [{ kind: 'emit', outputs: [new Output(0, '{"b":"é","a":1.5,"at":["orders",3,41]}')] }]);
  assert.throws(() => run(p, [rec, new Record('other', 3, 42, null, null, enc.encode('{}'))]), /one topic partition/);
});

test('not JSON as serde_json sees it: a BOM, bytes that are not UTF-8', () => {
  const p = map((doc) => ({ v: doc }));
  const out = run(p, ['\ufeff{"n": 1}', new Record('t', 0, 1, null, null, Uint8Array.of(0x7b, 0xff, 0x7d))]);
  assert.ok(out.every((o) => o.kind === 'error' && o.invalidInput && o.message.startsWith('value is not JSON')), JSON.stringify(out));
});

test('log goes to stderr natively', async () => {
  const { info } = await import('../src/log.js');
  const lines = [];
  const orig = console.error;
  console.error = (l) => lines.push(l);
  try { info('loaded 3 rules'); } finally { console.error = orig; }
  assert.deepEqual(lines, ['[plugin info] loaded 3 rules']);
});

test('writes by filter, upsert and the ordered switch', async () => {
  const { flatMap, Output, setOrdered } = await import('../src/index.js');
  const { run } = await import('../src/testing.js');
  const p = flatMap((doc) => [
    Output.update({ _id: doc.k }, { $inc: { n: 1 } }).orInsert(),
    Output.replaceWhere({ name: 'a' }, { name: 'a', v: 2 }).inCollection('c'),
    Output.deleteWhere({ name: { $gt: '' } }),
    Output.insert({ x: 1 }).orInsert(),
  ]);
  assert.deepEqual(run(p, ['{"k": "id"}']), [{ kind: 'emit', outputs: [
    new Output(3, { $inc: { n: 1 } }, null, { _id: 'id' }, true),
    new Output(4, { name: 'a', v: 2 }, 'c', { name: 'a' }, false),
    new Output(5, null, null, { name: { $gt: '' } }, false),
    new Output(0, { x: 1 }, null, null, false),
  ] }]);
  setOrdered(true);
  assert.equal(p.process({ topic: 't', partition: 0, offsets: new BigInt64Array(), timestamps: new BigInt64Array(),
    spans: new Uint32Array(), headerSpans: new Uint32Array(), data: new Uint8Array() }).options, 1);
  setOrdered(false);
});
