import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Record } from 'sluice-plugin';
import { run } from 'sluice-plugin/testing';
import plugin, { enrich } from './app.js';

test('adds square and source, in the Rust plugin field order', () => {
  const out = enrich({ num: 12 }, new Record('testnum', 2, 41));
  assert.deepEqual(out, { num: 12, square: 144, source: { topic: 'testnum', partition: 2, offset: 41 } });
  assert.equal(JSON.stringify(out), '{"num":12,"source":{"offset":41,"partition":2,"topic":"testnum"},"square":144}');
});

test('rejects bad input', () => {
  const out = run(plugin, ['{"num": 1.5}', '{"num": 3037000500}', 'nope']);
  assert.ok(out[0].kind === 'error' && out[0].message.includes('no integer field') && !out[0].invalidInput);
  assert.ok(out[1].kind === 'error' && /overflows|2\^53/.test(out[1].message));
  assert.ok(out[2].kind === 'error' && out[2].invalidInput);
});

test('init checks the field name', () => {
  assert.throws(() => plugin.init([['square_field', 'a.b']]));
  plugin.init([]);
});
