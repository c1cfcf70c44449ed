// Cloudflare Access JWT verification, in workerd via Miniflare. Keys, JWKS and tokens are made
// here; the Worker's JWKS fetch is answered by Miniflare's outboundService (no network).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  AUD, ISSUER, TEAM, CERTS_URL, accessWorker, makeKey, signJwt, userClaims, serviceClaims,
} from './helpers.mjs';

const PATH = 'http://viewer.example/api/cameras';

async function get(mf, headers = {}, path = PATH) {
  const res = await mf.dispatchFetch(path, { headers });
  const body = await res.text();
  return { status: res.status, body, headers: res.headers };
}
const tok = (t) => ({ 'Cf-Access-Jwt-Assertion': t });

describe('Access: token verification', () => {
  let w;
  const key = makeKey('key-1');
  const other = makeKey('key-other'); // never published
  before(async () => {
    w = await accessWorker();
    w.jwks.keys = [key.jwk];
  });
  after(() => w.mf.dispose());

  test('valid user token passes', async () => {
    const r = await get(w.mf, tok(signJwt(userClaims(), { key })));
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body).cameras, []);
  });

  test('valid service token (common_name, aud as string) passes', async () => {
    const r = await get(w.mf, tok(signJwt(serviceClaims(), { key })));
    assert.equal(r.status, 200, r.body);
  });

  test('aud array with several entries passes if it contains POLICY_AUD', async () => {
    const r = await get(w.mf, tok(signJwt(userClaims({ aud: ['other', AUD] }), { key })));
    assert.equal(r.status, 200, r.body);
  });

  test('small clock skew is tolerated', async () => {
    const now = Math.floor(Date.now() / 1000);
    const r = await get(w.mf, tok(signJwt(userClaims({ exp: now - 20, nbf: now + 20 }), { key })));
    assert.equal(r.status, 200, r.body);
  });

  test('the JWKS was fetched once and is cached', () => {
    assert.equal(w.jwks.fetches, 1);
    assert.deepEqual(w.jwks.other, []);
  });

  const now = () => Math.floor(Date.now() / 1000);
  const rejected = {
    'wrong aud': () => signJwt(userClaims({ aud: ['someone-else'] }), { key }),
    'aud missing': () => signJwt(userClaims({ aud: undefined }), { key }),
    'wrong iss': () => signJwt(userClaims({ iss: 'https://evil.cloudflareaccess.com' }), { key }),
    'iss without https': () => signJwt(userClaims({ iss: TEAM }), { key }),
    expired: () => signJwt(userClaims({ exp: now() - 3600, iat: now() - 7200, nbf: now() - 7200 }), { key }),
    'exp missing': () => signJwt(userClaims({ exp: undefined }), { key }),
    'exp not a number': () => signJwt(userClaims({ exp: String(now() + 600) }), { key }),
    'nbf in the future': () => signJwt(userClaims({ nbf: now() + 3600 }), { key }),
    'unknown kid': () => signJwt(userClaims(), { key: other }),
    'known kid, signed by another key': () => signJwt(userClaims(), { key: other, header: { kid: key.kid } }),
    'bad signature (payload altered)': () => {
      const [h, , s] = signJwt(userClaims(), { key }).split('.');
      const p = Buffer.from(JSON.stringify(userClaims({ email: 'admin@example.com' }))).toString('base64url');
      return `${h}.${p}.${s}`;
    },
    'bad signature (truncated)': () => signJwt(userClaims(), { key }).slice(0, -10),
    'alg none': () => signJwt(userClaims(), { key, header: { alg: 'none' } }) + 'AAAA',
    'alg none, empty signature': () => signJwt(userClaims(), { key, header: { alg: 'none' } }),
    'HS256 with the public key as secret': () =>
      signJwt(userClaims(), { key, header: { alg: 'HS256' }, hmacSecret: Buffer.from(key.jwk.n, 'base64url') }),
    'RS512 header': () => signJwt(userClaims(), { key, header: { alg: 'RS512' } }),
    'no kid': () => signJwt(userClaims(), { key, header: { kid: undefined } }),
    'malformed: not a JWT': () => 'hello',
    'malformed: two parts': () => signJwt(userClaims(), { key }).split('.').slice(0, 2).join('.'),
    'malformed: four parts': () => signJwt(userClaims(), { key }) + '.AAAA',
    'malformed: header not JSON': () => {
      const [, p, s] = signJwt(userClaims(), { key }).split('.');
      return `${Buffer.from('{oops').toString('base64url')}.${p}.${s}`;
    },
    'malformed: payload is an array': () => {
      const [h, , s] = signJwt(userClaims(), { key }).split('.');
      return `${h}.${Buffer.from('[1]').toString('base64url')}.${s}`;
    },
    'malformed: illegal characters': () => signJwt(userClaims(), { key }).replace('.', '.+/'),
    'malformed: huge': () => 'a'.repeat(20000) + '.b.c',
    'Bearer prefix': () => 'Bearer ' + signJwt(userClaims(), { key }),
  };
  for (const [name, make] of Object.entries(rejected)) {
    test(`${name} -> 403`, async () => {
      const r = await get(w.mf, tok(make()));
      assert.equal(r.status, 403, r.body);
      assert.equal(r.body.trim(), 'invalid Access token');
      assert.match(r.headers.get('content-type'), /^text\/plain/);
    });
  }

  test('missing header -> 403', async () => {
    const r = await get(w.mf, {});
    assert.equal(r.status, 403);
    assert.equal(r.body.trim(), 'missing Access token');
  });

  test('empty header -> 403', async () => {
    const r = await get(w.mf, tok(''));
    assert.equal(r.status, 403);
  });

  test('the CF_Authorization cookie alone is not accepted', async () => {
    const r = await get(w.mf, { cookie: `CF_Authorization=${signJwt(userClaims(), { key })}` });
    assert.equal(r.status, 403);
  });

  test('every route is protected, including 404 and 405 ones', async () => {
    for (const p of ['/', '/img/porch', '/img/..', '/nope']) {
      assert.equal((await get(w.mf, {}, `http://viewer.example${p}`)).status, 403, p);
    }
    const res = await w.mf.dispatchFetch('http://viewer.example/', { method: 'POST', body: 'x' });
    assert.equal(res.status, 403);
    await res.arrayBuffer();
  });

  test('a valid token on /img reaches the route (404: no such camera)', async () => {
    const r = await get(w.mf, tok(signJwt(userClaims(), { key })), 'http://viewer.example/img/porch');
    assert.equal(r.status, 404);
  });
});

describe('Access: key rotation', () => {
  let w;
  const oldKey = makeKey('old');
  const newKey = makeKey('new');
  before(async () => {
    w = await accessWorker();
    w.jwks.keys = [oldKey.jwk];
  });
  after(() => w.mf.dispose());

  test('a new kid triggers exactly one refetch and then passes', async () => {
    assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key: oldKey })))).status, 200);
    assert.equal(w.jwks.fetches, 1);
    // Access rotates: the JWKS now has both keys, tokens are signed with the new one.
    w.jwks.keys = [newKey.jwk, oldKey.jwk];
    const r = await get(w.mf, tok(signJwt(userClaims(), { key: newKey })));
    assert.equal(r.status, 200, r.body);
    assert.equal(w.jwks.fetches, 2);
    // Both keep working without further fetches.
    assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key: newKey })))).status, 200);
    assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key: oldKey })))).status, 200);
    assert.equal(w.jwks.fetches, 2);
  });

  test('unknown kids do not refetch more than once a minute', async () => {
    const stranger = makeKey('stranger');
    for (let i = 0; i < 5; i++) {
      assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key: stranger })))).status, 403);
    }
    assert.equal(w.jwks.fetches, 2, 'refetch was rate-limited');
  });
});

describe('Access: configuration', () => {
  const key = makeKey('cfg');

  async function withWorker(bindings, fn) {
    const w = await accessWorker(bindings);
    w.jwks.keys = [key.jwk];
    try {
      await fn(w);
    } finally {
      await w.mf.dispose();
    }
  }

  test('TEAM_DOMAIN with https:// and trailing slash is accepted', () =>
    withWorker({ TEAM_DOMAIN: `https://${TEAM}/` }, async (w) => {
      assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key })))).status, 200);
      assert.equal(w.jwks.fetches, 1);
    }));

  test('missing TEAM_DOMAIN -> 500 Access is not configured', () =>
    withWorker({ TEAM_DOMAIN: '' }, async (w) => {
      const r = await get(w.mf, tok(signJwt(userClaims(), { key })));
      assert.equal(r.status, 500);
      assert.equal(r.body.trim(), 'Access is not configured');
      assert.equal(w.jwks.fetches, 0);
    }));

  test('missing POLICY_AUD -> 500', () =>
    withWorker({ POLICY_AUD: '' }, async (w) => {
      assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key })))).status, 500);
    }));

  test('the wrangler.toml placeholders fail closed', () =>
    withWorker(
      { TEAM_DOMAIN: '<your-team>.cloudflareaccess.com', POLICY_AUD: '<your Access application AUD tag>' },
      async (w) => {
        const r = await get(w.mf, tok(signJwt(userClaims(), { key })));
        assert.equal(r.status, 500);
        assert.equal(r.body.trim(), 'Access is not configured');
      },
    ));

  test('DEV_DISABLE_ACCESS other than "true" keeps Access on', () =>
    withWorker({ DEV_DISABLE_ACCESS: 'false' }, async (w) => {
      assert.equal((await get(w.mf, {})).status, 403);
    }));

  test('DEV_DISABLE_ACCESS="true" turns it off', () =>
    withWorker({ DEV_DISABLE_ACCESS: 'true' }, async (w) => {
      assert.equal((await get(w.mf, {})).status, 200);
    }));

  test('ACCESS_CERTS_URL overrides where the JWKS comes from', () =>
    withWorker({ ACCESS_CERTS_URL: 'http://127.0.0.1:9/certs' }, async (w) => {
      w.jwks.urls = new Set(['http://127.0.0.1:9/certs']);
      assert.equal((await get(w.mf, tok(signJwt(userClaims(), { key })))).status, 200);
      assert.equal(w.jwks.fetches, 1);
      assert.deepEqual(w.jwks.other, []);
    }));

  test('unreachable JWKS -> 503, nothing passes', () =>
    withWorker({}, async (w) => {
      w.jwks.urls = new Set();
      const r = await get(w.mf, tok(signJwt(userClaims(), { key })));
      assert.equal(r.status, 503);
      assert.deepEqual(w.jwks.other, [CERTS_URL]);
    }));

  test('issuer is derived from TEAM_DOMAIN', () => {
    assert.equal(ISSUER, `https://${TEAM}`);
  });
});
