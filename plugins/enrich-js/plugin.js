// Adds computed fields: `square` (= num²) and the record's source coordinates under `source`
// (`topic`, `partition`, `offset`). Parameter `square_field` renames the `square` field.
//
// The JavaScript twin of plugins/enrich (Rust): it stores the same documents, byte for byte,
// within what JavaScript numbers allow (see `enrich`).
import { map, PluginError } from 'sluice-plugin';

const I64_MAX = 2n ** 63n - 1n;
let field = 'square';

function setup(params) {
  const f = params.get('square_field') ?? 'square';
  if (f === '' || f.startsWith('$') || f.includes('.')) {
    throw new PluginError(`parameter \`square_field\` = ${JSON.stringify(f)} is not a usable MongoDB field name`);
  }
  field = f;
}

export function enrich(doc, record) {
  const n = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? doc.num : undefined;
  // JSON numbers are doubles here: an integer beyond 2^53 is not exact, and 1.0 reads as 1
  // (the Rust plugin reads an i64 and refuses 1.0). Squares beyond 2^53 are refused rather
  // than stored rounded.
  if (!Number.isSafeInteger(n)) throw new PluginError(`no integer field \`num\` in ${rustJson(doc)}`);
  // Exact as a Number up to |n| = 94906265 (the square stays within 2^53); BigInt only beyond.
  if (Math.abs(n) > 94906265) {
    const square = BigInt(n) * BigInt(n);
    if (square > I64_MAX) throw new PluginError(`num ${n} squared overflows 64 bits`);
    if (square > BigInt(Number.MAX_SAFE_INTEGER)) throw new PluginError(`num ${n} squared is beyond 2^53 (not exact in JavaScript)`);
  }
  // Same order as the Rust plugin, so a `square_field` named "source" loses to `source`.
  doc[field] = n * n;
  doc.source = { topic: record.topic, partition: record.partition, offset: record.offset };
  return sorted(doc);
}

// The Rust SDK's serde_json keeps every object's keys sorted (nested ones too), and the host
// stores keys in the order given: sort them to store the very same documents. (Keys that look
// like array indices would still come first in a JS object; MongoDB field names rarely do.)
function sorted(v) {
  if (Array.isArray(v)) return v.map(sorted);
  if (v === null || typeof v !== 'object') return v;
  const keys = Object.keys(v);
  // UTF-16 order is code-point order unless a key has a surrogate (a character beyond U+FFFF).
  keys.sort(keys.some((k) => SURROGATE.test(k)) ? byCodePoint : undefined);
  const out = {};
  for (const k of keys) out[k] = sorted(v[k]);
  return out;
}

const SURROGATE = /[\uD800-\uDFFF]/;

// serde_json's BTreeMap orders keys by their UTF-8 bytes, i.e. by code point (not UTF-16 units).
const byCodePoint = (a, b) => {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
};

// `v` as serde_json displays it in an error message (compact, sorted keys).
const rustJson = (v) => JSON.stringify(sorted(v));

export default map(enrich, { init: setup });
