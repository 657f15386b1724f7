// A hostile JavaScript plugin for the tests (tests/tests/hostile_lang.rs): one component,
// switched by its params, misbehaves on one record and passes every other one through.
//
// Params:
// - `mode`: what it does on the trigger record (see MODES below and README.md) —
//   loop | sleep | bomb | passwd | socket | env | print.
// - `trigger`: the `num` of the record it misbehaves on.
//
// What JavaScript offers in a componentize-js (StarlingMonkey) component decides the shape of
// some modes: there is no synchronous sleep (no SharedArrayBuffer, no Atomics), no file or
// socket API (no require, no process, no WebSocket) and no environment (no process.env).
// `fetch` exists, but `sluice plugin build` leaves out componentize-js's `http` feature, so
// calling it (any URL: http:, file:) traps at once with `unreachable`.
import { map, PluginError, log } from 'sluice-plugin';

let mode = null;
let trigger = null;

const MODES = {
  // An endless loop: epoch interruption ends the call.
  loop() {
    for (;;) {}
  },
  // A timer of an hour. StarlingMonkey runs its event loop when an export returns, until no
  // work is pending: it waits for the timer on a WASI clock (subscribe-duration + poll),
  // which is the wait the host counts. (Polling performance.now() until an hour passed is
  // only an endless loop: each read moves the monotonic clock 1 µs, no wait at all.)
  sleep() {
    setTimeout(() => log.warn('slept an hour and woke up'), 3600 * 1000);
    return 'set a timer of an hour';
  },
  // 1 MiB at a time, each kept.
  bomb() {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
  },
  // No file API: the one way to a file's bytes is fetch with a file: URL. (Not a dynamic
  // import(): it traps the same, and with a literal path rolldown bundles the build
  // machine's /etc/passwd instead.)
  passwd() {
    log.warn('passwd: fetch(\'file:///etc/passwd\')');
    return `fetch(file:///etc/passwd) returned ${fetch('file:///etc/passwd')}`;
  },
  // No sockets (no WebSocket either): fetch over TCP is the only network API.
  socket() {
    log.warn('socket: fetch(\'http://127.0.0.1:9092/\')');
    return `fetch(http://127.0.0.1:9092/) returned ${fetch('http://127.0.0.1:9092/')}`;
  },
  // No process.env: the environment as much as JavaScript can see of it.
  env() {
    const env = globalThis.process?.env ?? {};
    return `environment seen: ${JSON.stringify(env)} (process: ${typeof globalThis.process})`;
  },
  // 100 MiB, a 1 MiB line at a time.
  print() {
    const line = 'x'.repeat((1 << 20) - 1);
    for (let i = 0; i < 100; i++) console.log(line);
    return 'printed 100 MiB';
  },
};

function setup(params) {
  const m = params.require('mode');
  if (!Object.hasOwn(MODES, m)) throw new PluginError(`parameter \`mode\` = ${JSON.stringify(m)}: not one of ${Object.keys(MODES).join(', ')}`);
  mode = m;
  trigger = params.parse('trigger', Number, null);
  if (!Number.isSafeInteger(trigger)) throw new PluginError('parameter `trigger`: an integer is needed');
}

export default map((doc) => {
  if (doc === null || typeof doc !== 'object' || doc.num !== trigger) return doc;
  // Whatever the mode did and survived is this record's error: the record never passes.
  throw new PluginError(`${mode}: ${MODES[mode]()}`);
}, { init: setup });
