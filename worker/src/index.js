// rtsnap viewer: shows the newest still of every camera that the rtsnap daemon keeps in
// Workers KV (binding STILLS, keys `latest/<camera>`), behind Cloudflare Access.
//
// Routes (GET/HEAD only):  /  ·  /api/cameras  ·  /img/<camera>

import { verifyAccess } from './access.js';
import { renderPage } from './page.js';

export const CAMERA_RE = /^(?!\.)[A-Za-z0-9._-]{1,64}$/;
export const LATEST_PREFIX = 'latest/';
/** Used when a still's metadata has no usable interval_ms. */
export const DEFAULT_INTERVAL_MS = 5000;
/** A camera is stale when its newest still is older than this many intervals. */
export const STALE_INTERVALS = 3;
/** Upper bound on list() pages per request (1,000 keys each). */
const MAX_LIST_PAGES = 10;
const ALLOWED_IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/avif']);

/**
 * @typedef {Object} Env
 * @property {KVNamespace} STILLS
 * @property {string} [TEAM_DOMAIN]
 * @property {string} [POLICY_AUD]
 * @property {string} [ACCESS_CERTS_URL]
 * @property {string} [DEV_DISABLE_ACCESS]
 */

export default {
  /**
   * @param {Request} request
   * @param {Env} env
   */
  async fetch(request, env) {
    try {
      return await handle(request, env);
    } catch (err) {
      console.error('rtsnap worker error', err && err.stack ? err.stack : err);
      return text(500, 'internal error');
    }
  },
};

/**
 * @param {Request} request
 * @param {Env} env
 */
async function handle(request, env) {
  if (env.DEV_DISABLE_ACCESS !== 'true') {
    const access = await verifyAccess(request, env);
    if (!access.ok) return text(access.status, access.reason);
  }

  const method = request.method.toUpperCase();
  if (method !== 'GET' && method !== 'HEAD') {
    return text(405, 'method not allowed', { Allow: 'GET, HEAD' });
  }
  const head = method === 'HEAD';
  const url = new URL(request.url);
  const path = url.pathname;

  let res;
  if (path === '/') {
    res = await handlePage(env);
  } else if (path === '/api/cameras') {
    res = await handleCameras(env);
  } else if (path.startsWith('/img/')) {
    res = await handleImage(request, env, path.slice('/img/'.length));
  } else {
    res = json(404, { error: 'not found' });
  }
  if (head && res.body) {
    await res.body.cancel();
    return new Response(null, { status: res.status, headers: res.headers });
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Cameras

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
function num(v) {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

/**
 * Every camera's newest still, from list metadata only (no per-key reads).
 * @param {Env} env
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
  cameras.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return cameras;
}

/** @param {Env} env */
async function handleCameras(env) {
  const now = Date.now();
  const cameras = await listCameras(env, now);
  return json(200, { cameras, now_ms: now });
}

// ---------------------------------------------------------------------------------------------
// Images

/**
 * @param {Request} request
 * @param {Env} env
 * @param {string} rawName  path after /img/, not decoded
 */
async function handleImage(request, env, rawName) {
  if (!CAMERA_RE.test(rawName)) return json(400, { error: 'bad camera name' });
  const { value, metadata } = await env.STILLS.getWithMetadata(LATEST_PREFIX + rawName, {
    type: 'stream',
    cacheTtl: 30,
  });
  if (value === null) return json(404, { error: 'unknown camera' });

  /** @type {Record<string, any>} */
  const m = metadata && typeof metadata === 'object' ? metadata : {};
  const ct = typeof m.content_type === 'string' ? m.content_type.toLowerCase() : '';
  const headers = new Headers({
    'Content-Type': ALLOWED_IMAGE_TYPES.has(ct) ? ct : 'image/jpeg',
    'Cache-Control': 'private, no-cache',
    'X-Content-Type-Options': 'nosniff',
    'Content-Security-Policy': "default-src 'none'",
  });
  const captured = num(m.captured_ms);
  const bytes = num(m.bytes);
  if (captured !== null) {
    const etag = `"${Math.trunc(captured)}-${bytes === null ? 0 : Math.trunc(bytes)}"`;
    const date = new Date(captured);
    headers.set('ETag', etag);
    headers.set('X-Capture-Time', date.toISOString());
    headers.set('Last-Modified', date.toUTCString());
    if (notModified(request, etag, captured)) {
      await value.cancel();
      return new Response(null, { status: 304, headers });
    }
  }
  return new Response(value, { status: 200, headers });
}

/**
 * @param {Request} request
 * @param {string} etag
 * @param {number} capturedMs
 */
function notModified(request, etag, capturedMs) {
  const inm = request.headers.get('If-None-Match');
  if (inm !== null) {
    // If-None-Match wins over If-Modified-Since; weak comparison as RFC 9110 asks for GET.
    return inm
      .split(',')
      .map((t) => t.trim().replace(/^W\//, ''))
      .some((t) => t === '*' || t === etag);
  }
  const ims = request.headers.get('If-Modified-Since');
  if (ims !== null) {
    const since = Date.parse(ims);
    return Number.isFinite(since) && Math.floor(capturedMs / 1000) * 1000 <= since;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Page

/** @param {Env} env */
async function handlePage(env) {
  const now = Date.now();
  const cameras = await listCameras(env, now);
  const nonceBytes = new Uint8Array(16);
  crypto.getRandomValues(nonceBytes);
  const nonce = btoa(String.fromCharCode(...nonceBytes));
  const html = renderPage({ cameras, nowMs: now, nonce });
  return new Response(html, {
    status: 200,
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Cache-Control': 'private, no-store',
      'Content-Security-Policy':
        `default-src 'none'; img-src 'self'; style-src 'nonce-${nonce}'; ` +
        `script-src 'nonce-${nonce}'; connect-src 'self'; base-uri 'none'; ` +
        `form-action 'none'; frame-ancestors 'none'`,
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * @param {number} status
 * @param {string} body
 * @param {Record<string, string>} [extra]
 */
function text(status, body, extra = {}) {
  return new Response(body + '\n', {
    status,
    headers: {
      'Content-Type': 'text/plain; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      ...extra,
    },
  });
}

/**
 * @param {number} status
 * @param {unknown} body
 */
function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      'Content-Type': 'application/json; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
    },
  });
}
