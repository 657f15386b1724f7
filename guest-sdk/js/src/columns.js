// The contract's columns (guest-sdk/wit/columns.md) in plain JavaScript: a batch read into
// records, a batch result written one record at a time. No WebAssembly: tested natively.

export const ABSENT = 0xffffffff;
export const NO_TIMESTAMP = -1n;
export const INVALID_INPUT_TAG = new Uint8Array([0, ...new TextEncoder().encode('sluice:invalid-input'), 0]);
export const DROP = 0, EMIT = 1, ERROR = 2;
export const INSERT = 0, UPSERT = 1, DELETE = 2, UPDATE = 3, REPLACE = 4, DELETE_WHERE = 5;
export const FLAG_UPSERT = 1, OPTION_ORDERED = 1;
/** Numbers per output: operation, flags, filter span, document span, collection span. */
export const WIDTH = 8;

const utf8 = new TextDecoder('utf-8'); // header keys: U+FFFD for bad bytes
const encoder = new TextEncoder();

/** One input record. `value` is null for a tombstone; offsets and timestamps are Numbers. */
export class Record {
  constructor(topic, partition, offset, timestamp = null, key = null, value = null, headers = []) {
    Object.assign(this, { topic, partition, offset, timestamp, key, value, headers });
  }
  /** The first header called `name`: its value (null when it has none), or undefined. */
  header(name) {
    const h = this.headers.find(([k]) => k === name);
    return h === undefined ? undefined : h[1];
  }
  keyString() {
    if (this.key === null) return null;
    try { return new TextDecoder('utf-8', { fatal: true }).decode(this.key); } catch { return null; }
  }
}

const num = (x) => (typeof x === 'bigint' ? Number(x) : x);

/** The records of a batch (the WIT `batch`, as jco/componentize-js hands it over). */
export function* readBatch({ topic, partition, offsets, timestamps, spans, headerSpans, data }) {
  const n = offsets.length;
  if (timestamps.length !== n || spans.length !== 6 * n) throw new Error('batch columns of different lengths');
  for (let i = 0; i < n; i++) {
    const b = 6 * i;
    const [ks, kl, vs, vl, fh, hc] = [spans[b], spans[b + 1], spans[b + 2], spans[b + 3], spans[b + 4], spans[b + 5]];
    const headers = [];
    for (let h = fh; h < fh + hc; h++) {
      const [hks, hkl, hvs, hvl] = [headerSpans[4 * h], headerSpans[4 * h + 1], headerSpans[4 * h + 2], headerSpans[4 * h + 3]];
      headers.push([utf8.decode(data.subarray(hks, hks + hkl)), hvl === ABSENT ? null : data.subarray(hvs, hvs + hvl)]);
    }
    const ts = num(timestamps[i]);
    yield new Record(topic, partition, num(offsets[i]), ts === -1 ? null : ts,
      kl === ABSENT ? null : data.subarray(ks, ks + kl), vl === ABSENT ? null : data.subarray(vs, vs + vl), headers);
  }
}

/** Writes a batch result's columns. */
export class ResultWriter {
  constructor(capacity = 1 << 16, ordered = false) {
    this.options = ordered ? OPTION_ORDERED : 0;
    this.outcomes = [];
    this.outputs = [];
    this.buf = new Uint8Array(capacity);
    this.len = 0;
    this.markOut = 0;
    this.markData = 0;
  }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  /** Append a string as UTF-8; returns its byte length. */
  text(s) {
    this.reserve(s.length * 3);
    const { written } = encoder.encodeInto(s, this.buf.subarray(this.len));
    this.len += written;
    return written;
  }
  begin() {
    this.markOut = this.outputs.length;
    this.markData = this.len;
  }
  /** A part (a string or bytes, as it is; null: absent): its span. */
  part(p) {
    if (p === null || p === undefined) return [0, ABSENT];
    const s = this.len;
    return [s, typeof p === 'string' ? this.text(p) : (this.bytes(p), p.length)];
  }
  /** An output: its filter (update, replace, delete-where), its JSON document (null for
   *  delete-where), each a string or bytes as it is, then its collection name. */
  output(operation, document, collection = null, filter = null, upsert = false) {
    const f = this.part(filter), d = this.part(document), c = this.part(collection);
    this.outputs.push(operation, upsert ? FLAG_UPSERT : 0, ...f, ...d, ...c);
  }
  emitted() {
    const first = this.markOut / WIDTH, count = this.outputs.length / WIDTH - first;
    if (count) this.outcomes.push(EMIT, first, count); else this.outcomes.push(DROP, 0, 0);
  }
  failed(message, invalidInput = false) {
    this.outputs.length = this.markOut;
    this.len = this.markData;
    if (invalidInput) this.bytes(INVALID_INPUT_TAG);
    const start = this.len;
    this.outcomes.push(ERROR, start, this.text(String(message)));
  }
  /** The WIT `batch-result`. */
  result() {
    return { outcomes: Uint32Array.from(this.outcomes), outputs: Uint32Array.from(this.outputs), data: this.buf.slice(0, this.len),
      options: this.options };
  }
}

const LEGACY = ['value is not JSON', 'value is not a JSON object', 'record has no value'];

/** Decode a result's columns (for tests): {kind:'drop'}
 *  | {kind:'emit', outputs:[{operation, filter, document, upsert, collection}]} (absent parts null)
 *  | {kind:'error', message, invalidInput}. Not a validator (the host checks results). */
export function readResult({ outcomes, outputs, data }) {
  const out = [];
  const d = (s, l) => utf8.decode(data.subarray(s, s + l));
  for (let i = 0; i < outcomes.length / 3; i++) {
    const [kind, first, count] = [outcomes[3 * i], outcomes[3 * i + 1], outcomes[3 * i + 2]];
    if (kind === DROP || (kind === EMIT && count === 0)) out.push({ kind: 'drop' });
    else if (kind === EMIT) {
      const items = [];
      for (let j = first; j < first + count; j++) {
        const [op, flags, fs, fl, ds, dl, cs, cl] = Array.from(outputs.slice(WIDTH * j, WIDTH * j + WIDTH));
        const p = (s, l) => (l === ABSENT ? null : d(s, l));
        items.push({ operation: op, filter: p(fs, fl), document: p(ds, dl), upsert: (flags & FLAG_UPSERT) !== 0, collection: p(cs, cl) });
      }
      out.push({ kind: 'emit', outputs: items });
    } else if (kind === ERROR) {
      const message = d(first, count);
      const t = INVALID_INPUT_TAG.length;
      const tagged = first >= t && INVALID_INPUT_TAG.every((b, k) => data[first - t + k] === b);
      out.push({ kind: 'error', message, invalidInput: tagged || LEGACY.some((p) => message.startsWith(p)) });
    } else throw new Error(`unknown outcome kind ${kind}`);
  }
  return out;
}
