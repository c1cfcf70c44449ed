// Reading the cameras' newest stills (`latest/<camera>`) from KV list metadata.

export const CAMERA_RE = /^(?!\.)[A-Za-z0-9._-]{1,64}$/;
export const LATEST_PREFIX = 'latest/';
/** Used when a still's metadata has no usable interval_ms. */
export const DEFAULT_INTERVAL_MS = 5000;
/** A camera is stale when its newest still is older than this many intervals. */
export const STALE_INTERVALS = 3;
/** Upper bound on list() pages per request (1,000 keys each). */
export const MAX_LIST_PAGES = 10;
export const ALLOWED_IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/avif']);

/**
 * @typedef {Object} CameraInfo
 * @property {string} name
 * @property {number | null} captured_ms
 * @property {number | null} age_ms
 * @property {number | null} width
 * @property {number | null} height
 * @property {number | null} bytes
 * @property {number} interval_ms
 * @property {boolean} stale
 */

/** @param {unknown} v */
export function num(v) {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

/**
 * Every camera's newest still, from list metadata only (no per-key reads).
 * @param {{ STILLS: KVNamespace }} env
 * @param {number} nowMs
 * @returns {Promise<CameraInfo[]>}
 */
export async function listCameras(env, nowMs) {
  /** @type {CameraInfo[]} */
  const cameras = [];
  let cursor = undefined;
  for (let page = 0; page < MAX_LIST_PAGES; page++) {
    /** @type {any} */
    const result = await env.STILLS.list({ prefix: LATEST_PREFIX, cursor });
    for (const k of result.keys) {
      const name = k.name.slice(LATEST_PREFIX.length);
      if (!CAMERA_RE.test(name)) continue; // not written by rtsnap; never rendered
      const m = k.metadata && typeof k.metadata === 'object' ? k.metadata : {};
      const captured = num(m.captured_ms);
      const interval = num(m.interval_ms) || DEFAULT_INTERVAL_MS;
      const age = captured === null ? null : nowMs - captured;
      cameras.push({
        name,
        captured_ms: captured,
        age_ms: age,
        width: num(m.width),
        height: num(m.height),
        bytes: num(m.bytes),
        interval_ms: interval,
        stale: age === null || age > STALE_INTERVALS * interval,
      });
    }
    if (result.list_complete || !result.cursor) break;
    cursor = result.cursor;
  }
  // Case-insensitive, ties broken by code point so the order is total and stable.
  const cmp = (x, y) => (x < y ? -1 : x > y ? 1 : 0);
  cameras.sort((a, b) => cmp(a.name.toLowerCase(), b.name.toLowerCase()) || cmp(a.name, b.name));
  return cameras;
}

