// Shared test helpers: RSA keys and JWTs made locally, a Worker in Miniflare whose only
// "internet" is a JWKS served from this process, and small JPEGs.

import { generateKeyPairSync, createSign, createHmac, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { startWorker } from './fake-cf-api.mjs';

export const TEAM = 'rtsnap-test.cloudflareaccess.com';
export const ISSUER = `https://${TEAM}`;
export const AUD = 'f3c1a1f8e6a54f0c9b7d2e4a6c8b0d1e3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e';
export const CERTS_URL = `${ISSUER}/cdn-cgi/access/certs`;

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** A fresh RS256 key pair and its public JWK. */
export function makeKey(kid = randomUUID()) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, jwk };
}

/**
 * Signs a JWT. `header` overrides header fields; `alg: 'HS256'` uses `hmacSecret`.
 * @param {object} payload
 * @param {{ key?: ReturnType<typeof makeKey>, header?: object, hmacSecret?: string|Buffer }} o
 */
export function signJwt(payload, { key, header = {}, hmacSecret } = {}) {
  const h = { alg: 'RS256', kid: key?.kid, typ: 'JWT', ...header };
  const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(payload))}`;
  let sig;
  if (h.alg === 'RS256') {
    sig = createSign('RSA-SHA256').update(input).sign(key.privateKey);
  } else if (h.alg === 'HS256') {
    sig = createHmac('sha256', hmacSecret).update(input).digest();
  } else {
    sig = Buffer.alloc(0);
  }
  return `${input}.${b64url(sig)}`;
}

/** Claims like those of an Access user token. */
export function userClaims(over = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    aud: [AUD],
    email: 'viewer@example.com',
    exp: now + 600,
    iat: now,
    nbf: now,
    iss: ISSUER,
    type: 'app',
    identity_nonce: 'nonce',
    sub: randomUUID(),
    country: 'DE',
    ...over,
  };
}

/** Claims like those of an Access service token (common_name instead of email). */
export function serviceClaims(over = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    aud: AUD,
    common_name: 'a1b2c3d4.access',
    exp: now + 600,
    iat: now,
    iss: ISSUER,
    sub: '',
    type: 'app',
    ...over,
  };
}

/**
 * A Worker in Miniflare with Access on. Its outbound fetches are answered here: `jwks.keys`
 * (mutable) at CERTS_URL (and at any extra URL in `jwks.urls`), 503 for everything else.
 * @param {Record<string,string>} bindings
 */
export async function accessWorker(bindings = {}) {
  const jwks = { keys: [], fetches: 0, urls: new Set([CERTS_URL]), other: [] };
  const w = await startWorker({
    bindings: { TEAM_DOMAIN: TEAM, POLICY_AUD: AUD, ...bindings },
    outboundService: (req) => {
      if (jwks.urls.has(req.url)) {
        jwks.fetches++;
        return new Response(JSON.stringify({ keys: jwks.keys, public_cert: {}, public_certs: [] }), {
          headers: { 'content-type': 'application/json' },
        });
      }
      jwks.other.push(req.url);
      return new Response('no network in tests', { status: 503 });
    },
  });
  return { ...w, jwks };
}

/** Small valid JPEGs, made with ffmpeg if present, else a built-in 16x8 one. */
export function makeJpegs(count, { width = 320, height = 180 } = {}) {
  const out = [];
  for (let i = 0; i < count; i++) {
    try {
      out.push(
        execFileSync(
          'ffmpeg',
          ['-loglevel', 'error', '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=1`,
            '-vf', `hue=h=${(i * 360) / count}`, '-frames:v', '1', '-f', 'image2pipe', '-c:v', 'mjpeg', '-'],
          { timeout: 20000, stdio: ['ignore', 'pipe', 'pipe'] },
        ),
      );
    } catch {
      out.push(Buffer.from(TINY_JPEG_B64, 'base64'));
    }
  }
  return out;
}

/** A 16x8 baseline JPEG (solid blue-grey), for machines without ffmpeg. */
export const TINY_JPEG_B64 =
  '/9j/4AAQSkZJRgABAgAAAQABAAD//gAQTGF2YzU5LjM3LjEwMAD/2wBDAAgQEBMQExYWFhYWFhoYGhsbGxoaGhobGxsdHR0iIiIdHR0bGx0dICAiIiUmJSMjIiMmJigoKDAwLi44ODpFRVP/xABMAAEBAAAAAAAAAAAAAAAAAAAABgEBAQAAAAAAAAAAAAAAAAAABQYQAQAAAAAAAAAAAAAAAAAAAAARAQAAAAAAAAAAAAAAAAAAAAD/wAARCAAIABADASIAAhEAAxEA/9oADAMBAAIRAxEAPwCbAUQF/9k=';
