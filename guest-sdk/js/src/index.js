// Write Sluice plugins in JavaScript as plain functions:
//
//   import { map } from 'sluice-plugin';
//   export const transform = map((doc, record) => ({ ...doc, square: doc.num ** 2 }));
//
// Shapes: filter(fn) keeps records (written unchanged) when fn(doc, record) is truthy;
// map(fn) returns an object, an Output, or null/undefined (drop); flatMap(fn) returns an
// iterable of objects/Outputs. Each takes { init(params) } as a second argument. Whatever
// fn throws is that record's error. The contract's columns are never seen by authors
// (they live in columns.js, which the package does not export).
//
// JSON: JSON.parse / JSON.stringify, so objects keep insertion order (Rust plugins store
// keys sorted) and integers beyond 2^53 are not exact.
//
// Status (issue #16): tested natively against the contract's vectors. A component built
// with componentize-js imports WASI 0.2, which the host does not link yet: running
// JavaScript plugins in the host arrives with the host's WASI support (the next step of
// #16); until then the host refuses such a component at load.
import { DELETE, DELETE_WHERE, INSERT, REPLACE, UPDATE, UPSERT, ResultWriter, readBatch } from './columns.js';
export { Record } from './columns.js';
export * as log from './log.js';

export const CONTRACT_VERSION = 'sluice:plugin@0.3.0';

let ordered = false;
/** Ask the host to write this plugin's outputs strictly in order (e.g. in init). Off by default:
 *  consecutive inserts may then be written in any order (faster). */
export function setOrdered(on = true) { ordered = Boolean(on); }

/** A record's error with exactly this message (other errors get their name in front). */
export class PluginError extends Error {}
class InvalidInput extends PluginError {}

/** One write: insert, upsert or delete by `_id`; or, by a filter (values matched literally),
 *  update with operators ($set, $unset, $inc, $mul, $min, $max, $currentDate, $push, $addToSet,
 *  $pull, $rename, $setOnInsert), replace, or delete one document. */
export class Output {
  constructor(operation, document, collection = null, filter = null, upsert = false) {
    Object.assign(this, { operation, document, collection, filter, upsert });
  }
  static insert(document, collection = null) { return new Output(INSERT, document, collection); }
  static upsert(document, collection = null) { return new Output(UPSERT, document, collection); }
  static delete(id, collection = null) { return new Output(DELETE, { _id: id }, collection); }
  static update(filter, update, collection = null) { return new Output(UPDATE, update, collection, filter); }
  static replaceWhere(filter, document, collection = null) { return new Output(REPLACE, document, collection, filter); }
  static deleteWhere(filter, collection = null) { return new Output(DELETE_WHERE, null, collection, filter); }
  /** An update or replace that inserts when nothing matches its filter (upsert). */
  orInsert() { return new Output(this.operation, this.document, this.collection, this.filter, this.operation === UPDATE || this.operation === REPLACE); }
  inCollection(collection) { return new Output(this.operation, this.document, collection, this.filter, this.upsert); }
}

/** The plugin's parameters (a Map of strings) with helpers. */
export class Params extends Map {
  require(key) {
    if (!this.has(key)) throw new PluginError(`missing parameter \`${key}\``);
    return this.get(key);
  }
  /** Parsed with `parse` (e.g. Number), `fallback` when absent; NaN or a throw is an error naming it. */
  parse(key, parse, fallback) {
    if (!this.has(key)) return fallback;
    const raw = this.get(key);
    let v;
    try { v = parse(raw); } catch (e) { throw new PluginError(`parameter \`${key}\` = ${JSON.stringify(raw)}: ${e.message ?? e}`); }
    if (typeof v === 'number' && Number.isNaN(v)) throw new PluginError(`parameter \`${key}\` = ${JSON.stringify(raw)}: not a number`);
    return v;
  }
}

// fatal: bytes that are not UTF-8 are not JSON; ignoreBOM: keep a BOM, so it is not JSON either (as serde_json).
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const compact = (v) => { try { return JSON.stringify(v); } catch { return String(v); } };

function value(record) {
  if (record.value === null) throw new InvalidInput('record has no value (tombstone)');
  try {
    return JSON.parse(decoder.decode(record.value));
  } catch (e) {
    throw new InvalidInput(`value is not JSON: ${e.message ?? e}`);
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function emit(w, out) {
  const o = out instanceof Output ? out : Output.insert(out);
  const filtered = o.operation === UPDATE || o.operation === REPLACE || o.operation === DELETE_WHERE;
  let filter = null, text = null;
  if (filtered) {
    if (!isObject(o.filter)) throw new PluginError(`the filter is not a JSON object: ${compact(o.filter)}`);
    try { filter = JSON.stringify(o.filter); } catch (e) { throw new PluginError(`cannot serialise the filter: ${e.message ?? e}`); }
  }
  if (o.operation !== DELETE_WHERE) {
    if (!isObject(o.document)) throw new PluginError(`the output is not a JSON object: ${compact(o.document)}`);
    try { text = JSON.stringify(o.document); } catch (e) { throw new PluginError(`cannot serialise output: ${e.message ?? e}`); }
  }
  w.output(o.operation, text, o.collection, filter, Boolean(o.upsert) && (o.operation === UPDATE || o.operation === REPLACE));
}

const message = (e) => (e instanceof PluginError ? e.message : e instanceof Error ? `${e.name}: ${e.message}` : String(e));

const ONE = {
  filter(fn, record, w) {
    const doc = value(record);
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new InvalidInput(`value is not a JSON object: ${compact(doc)}`);
    if (fn(doc, record)) w.output(INSERT, record.value, null); // kept unchanged: the bytes as they came
  },
  map(fn, record, w) {
    const out = fn(value(record), record);
    if (out !== null && out !== undefined) emit(w, out);
  },
  flatMap(fn, record, w) {
    for (const out of fn(value(record), record)) emit(w, out);
  },
};

/** The `transform` export for a function of a shape: what the component exports. */
function plugin(shape, fn, { init } = {}) {
  const one = ONE[shape];
  return {
    init(pairs) {
      if (!init) return;
      try {
        init(new Params(pairs));
      } catch (e) {
        throw message(e); // componentize-js: a thrown value is the result's error
      }
    },
    process(batch) {
      const w = new ResultWriter(Math.max(1024, batch.data.length * 2), ordered);
      for (const record of readBatch(batch)) {
        w.begin();
        try {
          one(fn, record, w);
        } catch (e) {
          w.failed(message(e), e instanceof InvalidInput);
          continue;
        }
        w.emitted();
      }
      return w.result();
    },
  };
}

export const filter = (fn, opts) => plugin('filter', fn, opts);
export const map = (fn, opts) => plugin('map', fn, opts);
export const flatMap = (fn, opts) => plugin('flatMap', fn, opts);
