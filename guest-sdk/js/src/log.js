// Log through the host (tagged with the plugin's name, rate-limited); to stderr natively.
// The component build maps 'sluice:plugin/host@<version>' to the WIT import; natively, `setHost`
// is never called and lines go to console.error.
let host = null;
export function setHost(logFn) { host = logFn; }
const line = (level) => (message) => (host ? host(level, String(message)) : console.error(`[plugin ${level}] ${message}`));
export const trace = line('trace'), debug = line('debug'), info = line('info'), warn = line('warn'), error = line('error');
