// Adds computed fields: `square` (= num²) and the record's source coordinates under `source`
// (`topic`, `partition`, `offset`). Parameter `square_field` renames the `square` field.
// The JavaScript twin of plugins/enrich (Rust).
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
  // JSON numbers are doubles here: integers beyond 2^53 are not exact (the Rust plugin reads i64).
  if (!Number.isSafeInteger(n)) throw new PluginError(`no integer field \`num\` in ${JSON.stringify(doc)}`);
  const square = BigInt(n) * BigInt(n);
  if (square > I64_MAX) throw new PluginError(`num ${n} squared overflows 64 bits`);
  if (square > BigInt(Number.MAX_SAFE_INTEGER)) throw new PluginError(`num ${n} squared is beyond 2^53 (not exact in JavaScript)`);
  // Fields in the order the Rust plugin stores them (serde_json sorts an object's keys).
  doc.source = { offset: record.offset, partition: record.partition, topic: record.topic };
  doc[field] = Number(square);
  return Object.fromEntries(Object.entries(doc).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export default map(enrich, { init: setup });
