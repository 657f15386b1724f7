// The enrich plugin through the SDK, natively: the exact documents the Rust enrich
// (plugins/enrich) stores for the same records (its unit tests' inputs, and the seed's).
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { Record } from 'sluice-plugin';
import { run } from 'sluice-plugin/testing';
import plugin from './plugin.js';

const enc = new TextEncoder();
beforeEach(() => plugin.init([]));

/** The JSON text of each record's one inserted document (an error fails the test). */
function stored(records, opts) {
  return run(plugin, records, { ...opts, raw: true }).map((o) => {
    assert.ok(o.kind === 'emit' && o.outputs.length === 1 && o.outputs[0].operation === 0 && o.outputs[0].collection === null, JSON.stringify(o));
    return o.outputs[0].document;
  });
}

test('adds square and source (Rust: adds_square_and_source)', () => {
  assert.deepEqual(stored([new Record('testnum', 2, 41, null, null, enc.encode('{"num":12}'))]), [
    '{"num":12,"source":{"offset":41,"partition":2,"topic":"testnum"},"square":144}',
  ]);
});

test('the seed\'s records, as the Rust enrich stores them', () => {
  assert.deepEqual(stored(['{"num":1}', '{"num":500}', '{"num":-3}'], { topic: 'testnum' }), [
    '{"num":1,"source":{"offset":0,"partition":0,"topic":"testnum"},"square":1}',
    '{"num":500,"source":{"offset":1,"partition":0,"topic":"testnum"},"square":250000}',
    '{"num":-3,"source":{"offset":2,"partition":0,"topic":"testnum"},"square":9}',
  ]);
});

test('keys sorted at every depth, like serde_json', () => {
  assert.deepEqual(stored(['{"z":{"b":1,"a":[{"d":1,"c":"é"}]},"num":2}']), [
    '{"num":2,"source":{"offset":0,"partition":0,"topic":"t"},"square":4,"z":{"a":[{"c":"é","d":1}],"b":1}}',
  ]);
});

test('rejects bad input (Rust: rejects_bad_input)', () => {
  const out = run(plugin, ['{"num": 1.5}', '{"num": 9223372036854775807}', '{"num": 3037000500}', 'nope', '{"num": true}']);
  assert.deepEqual(out[0], { kind: 'error', message: 'no integer field `num` in {"num":1.5}', invalidInput: false });
  // Rust reads i64::MAX and reports the overflow; here it is not an exact integer to begin with.
  assert.deepEqual(out[1], { kind: 'error', message: 'no integer field `num` in {"num":9223372036854776000}', invalidInput: false });
  assert.deepEqual(out[2], { kind: 'error', message: 'num 3037000500 squared overflows 64 bits', invalidInput: false });
  assert.ok(out[3].kind === 'error' && out[3].message.startsWith('value is not JSON') && out[3].invalidInput);
  assert.deepEqual(out[4], { kind: 'error', message: 'no integer field `num` in {"num":true}', invalidInput: false });
});

test('init checks the field name (Rust: init_checks_field_name)', () => {
  assert.throws(() => plugin.init([['square_field', 'a.b']]), (e) => e === 'parameter `square_field` = "a.b" is not a usable MongoDB field name');
  plugin.init([['square_field', 'sq']]);
  assert.deepEqual(stored(['{"num":3}']), ['{"num":3,"source":{"offset":0,"partition":0,"topic":"t"},"sq":9}']);
});
