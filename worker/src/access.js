// Cloudflare Access JWT verification (header `Cf-Access-Jwt-Assertion`, RS256, JWKS by kid).
//
// Fails closed: a missing configuration is a 500, anything wrong with the token a 403, and
// keys that cannot be fetched (with nothing cached) a 503.

/** How long a fetched JWKS is trusted before it is fetched again. */
export const JWKS_TTL_MS = 60 * 60 * 1000;
/** An unknown `kid` triggers a refetch, but at most this often. */
export const UNKNOWN_KID_REFETCH_MS = 60 * 1000;
/** Allowed clock skew for `exp` / `nbf`. */
export const CLOCK_SKEW_S = 60;
/** Header values longer than this are rejected without parsing. */
const MAX_TOKEN_LENGTH = 16 * 1024;
/** Bound on the JWKS request. */
const JWKS_FETCH_TIMEOUT_MS = 5000;

/**
 * @typedef {{ ok: true, identity: string, claims: Record<string, unknown> }
 *   | { ok: false, status: number, reason: string }} AccessResult
 */

/**
 * @typedef {Object} JwksCacheEntry
 * @property {Map<string, Promise<CryptoKey>>} keys   by kid
 * @property {number} fetchedAt                        ms epoch, 0 if never
 * @property {number} lastUnknownKidRefetch            ms epoch, 0 if never
 * @property {number} lastFailure                      ms epoch of the last failed fetch, 0 if none
 * @property {Promise<void> | null} inflight
 */

/** Module-scope cache, keyed by certs URL (one isolate may serve several configs in tests). */
/** @type {Map<string, JwksCacheEntry>} */
const jwksCache = new Map();

/** For tests only: forget every cached key set. */
export function resetJwksCache() {
  jwksCache.clear();
}

/**
 * `myteam.cloudflareaccess.com`, `https://myteam.cloudflareaccess.com/` -> `myteam.cloudflareaccess.com`.
 * Returns null if what is left does not look like a host name.
 * @param {unknown} value
 */
export function normalizeTeamDomain(value) {
  if (typeof value !== 'string') return null;
  let v = value.trim().toLowerCase();
  v = v.replace(/^https:\/\//, '').replace(/\/+$/, '');
  if (!/^[a-z0-9.-]+(:[0-9]{1,5})?$/.test(v) || v.startsWith('.') || v.length > 253) return null;
  return v;
}

/**
 * Verifies the request's Access token.
 * @param {Request} request
 * @param {Record<string, unknown>} env
 * @param {number} [nowMs]
 * @returns {Promise<AccessResult>}
 */
export async function verifyAccess(request, env, nowMs = Date.now()) {
  const team = normalizeTeamDomain(env.TEAM_DOMAIN);
  const aud = typeof env.POLICY_AUD === 'string' ? env.POLICY_AUD.trim() : '';
  if (!team || !aud || isPlaceholder(aud) || isPlaceholder(String(env.TEAM_DOMAIN))) {
    return { ok: false, status: 500, reason: 'Access is not configured' };
  }
  const issuer = `https://${team}`;
  const certsUrl =
    typeof env.ACCESS_CERTS_URL === 'string' && env.ACCESS_CERTS_URL.trim() !== ''
      ? env.ACCESS_CERTS_URL.trim()
      : `${issuer}/cdn-cgi/access/certs`;

  const token = request.headers.get('Cf-Access-Jwt-Assertion');
  if (token === null || token.trim() === '') {
    return { ok: false, status: 403, reason: 'missing Access token' };
  }
  const parsed = parseJwt(token.trim());
  if (!parsed) return invalid();
  const { header, payload, signingInput, signature } = parsed;
  if (header.alg !== 'RS256' || typeof header.kid !== 'string' || header.kid === '') return invalid();

  let key;
  try {
    key = await getKey(certsUrl, header.kid, nowMs);
  } catch {
    return { ok: false, status: 503, reason: 'Access keys unavailable' };
  }
  if (!key) return invalid();

  let valid = false;
  try {
    valid = await crypto.subtle.verify('RSASSA-PKCS1-v1_5', key, signature, signingInput);
  } catch {
    valid = false;
  }
  if (!valid) return invalid();

  if (payload.iss !== issuer) return invalid();
  const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  if (!audiences.some((a) => typeof a === 'string' && a === aud)) return invalid();
  const nowS = nowMs / 1000;
  if (typeof payload.exp !== 'number' || !Number.isFinite(payload.exp)) return invalid();
  if (nowS > payload.exp + CLOCK_SKEW_S) return invalid();
  if (payload.nbf !== undefined) {
    if (typeof payload.nbf !== 'number' || !Number.isFinite(payload.nbf)) return invalid();
    if (nowS < payload.nbf - CLOCK_SKEW_S) return invalid();
  }
  // Users carry `email`, service tokens `common_name` (the client id); both are accepted.
  const identity =
    typeof payload.email === 'string' && payload.email !== ''
      ? payload.email
      : typeof payload.common_name === 'string' && payload.common_name !== ''
        ? payload.common_name
        : typeof payload.sub === 'string'
          ? payload.sub
          : '';
  return { ok: true, identity, claims: payload };
}

/** @returns {AccessResult} */
function invalid() {
  return { ok: false, status: 403, reason: 'invalid Access token' };
}

/** The placeholders shipped in wrangler.toml must never count as configuration. */
function isPlaceholder(v) {
  return /^<.*>$/.test(v.trim()) || /replace[-_ ]?me/i.test(v);
}

/**
 * @param {string} token
 * @returns {null | { header: any, payload: any, signingInput: Uint8Array, signature: Uint8Array }}
 */
function parseJwt(token) {
  if (token.length > MAX_TOKEN_LENGTH) return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  if (!parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p))) return null;
  try {
    const header = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[0])));
    const payload = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[1])));
    if (!isObject(header) || !isObject(payload)) return null;
    const signature = b64urlDecode(parts[2]);
    const signingInput = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
    return { header, payload, signingInput, signature };
  } catch {
    return null;
  }
}

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** @param {string} s base64url without padding */
function b64urlDecode(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * The verification key for `kid`, or null if the JWKS does not have it.
 * Throws only when keys could not be fetched and nothing usable is cached.
 * @param {string} certsUrl
 * @param {string} kid
 * @param {number} nowMs
 * @returns {Promise<CryptoKey | null>}
 */
async function getKey(certsUrl, kid, nowMs) {
  let entry = jwksCache.get(certsUrl);
  if (!entry) {
    entry = { keys: new Map(), fetchedAt: 0, lastUnknownKidRefetch: 0, lastFailure: 0, inflight: null };
    jwksCache.set(certsUrl, entry);
  }
  const expired = entry.fetchedAt === 0 || nowMs - entry.fetchedAt > JWKS_TTL_MS;
  // After a failed fetch, a stale key set keeps serving for a minute before the next attempt.
  const backingOff = entry.fetchedAt !== 0 && nowMs - entry.lastFailure < UNKNOWN_KID_REFETCH_MS;
  if (expired && !backingOff) {
    try {
      await refresh(entry, certsUrl, nowMs);
    } catch (e) {
      // A stale key set is still better than none when the refresh fails.
      if (entry.fetchedAt === 0) throw e;
    }
  }
  if (!entry.keys.has(kid) && nowMs - entry.lastUnknownKidRefetch >= UNKNOWN_KID_REFETCH_MS) {
    // Possibly a rotated key: fetch once, rate-limited per isolate.
    entry.lastUnknownKidRefetch = nowMs;
    try {
      await refresh(entry, certsUrl, nowMs);
    } catch {
      return null;
    }
  }
  const key = entry.keys.get(kid);
  if (!key) return null;
  try {
    return await key;
  } catch {
    return null;
  }
}

/**
 * Fetches the JWKS (deduplicating concurrent fetches) and replaces the cached keys.
 * @param {JwksCacheEntry} entry
 * @param {string} certsUrl
 * @param {number} nowMs
 */
function refresh(entry, certsUrl, nowMs) {
  if (entry.inflight) return entry.inflight;
  entry.inflight = (async () => {
    const res = await fetch(certsUrl, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(JWKS_FETCH_TIMEOUT_MS),
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`JWKS fetch failed: ${res.status}`);
    }
    const body = await res.json();
    if (!isObject(body) || !Array.isArray(body.keys)) throw new Error('JWKS malformed');
    /** @type {Map<string, Promise<CryptoKey>>} */
    const keys = new Map();
    for (const jwk of body.keys) {
      if (!isObject(jwk) || jwk.kty !== 'RSA' || typeof jwk.kid !== 'string') continue;
      if (jwk.alg !== undefined && jwk.alg !== 'RS256') continue;
      if (jwk.use !== undefined && jwk.use !== 'sig') continue;
      if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') continue;
      const p = crypto.subtle.importKey(
        'jwk',
        { kty: 'RSA', n: jwk.n, e: jwk.e, alg: 'RS256', ext: true },
        { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
        false,
        ['verify'],
      );
      p.catch(() => {}); // a bad key only fails the tokens that name it
      keys.set(jwk.kid, p);
    }
    entry.keys = keys;
    entry.fetchedAt = nowMs;
  })().catch((e) => {
    entry.lastFailure = nowMs;
    throw e;
  }).finally(() => {
    entry.inflight = null;
  });
  return entry.inflight;
}
