// rtsnap viewer: shows the newest still of every camera that the rtsnap daemon keeps in
// Workers KV (binding STILLS, keys `latest/<camera>`), behind Cloudflare Access.
//
// Routes (GET/HEAD only):  /  ·  /api/cameras  ·  /img/<camera>

import { verifyAccess } from './access.js';
import { renderPage } from './page.js';
import { ALLOWED_IMAGE_TYPES, CAMERA_RE, LATEST_PREFIX, listCameras, num } from './cameras.js';

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
