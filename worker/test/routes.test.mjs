// Routes of the Worker in workerd (Access disabled with DEV_DISABLE_ACCESS for these tests).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWorker } from './fake-cf-api.mjs';
import { makeJpegs } from './helpers.mjs';

const BASE = 'http://viewer.example';

function meta(camera, capturedMs, jpeg, over = {}) {
  return {
    camera,
    captured_ms: capturedMs,
    width: 320,
    height: 180,
    content_type: 'image/jpeg',
    bytes: jpeg.length,
    interval_ms: 5000,
    ...over,
  };
}

describe('routes', () => {
  let w;
  const [porchJpeg, yardJpeg, oldJpeg] = makeJpegs(3);
  const now = Date.now();
  const porchAt = now - 2000;
  before(async () => {
    w = await startWorker({ bindings: { DEV_DISABLE_ACCESS: 'true' } });
    // Miniflare's proxy wants a plain Uint8Array, not a pooled Buffer.
    const kv = { put: (k, v, o) => w.kv.put(k, new Uint8Array(v), o) };
    await kv.put('latest/porch', porchJpeg, { metadata: meta('porch', porchAt, porchJpeg) });
    await kv.put('latest/yard.cam-2_B', yardJpeg, {
      metadata: meta('yard.cam-2_B', now - 14000, yardJpeg, { interval_ms: 10000 }),
    });
    await kv.put('latest/garage', oldJpeg, { metadata: meta('garage', now - 16000, oldJpeg) });
    await kv.put('latest/no-meta', oldJpeg); // written without metadata
    await kv.put('latest/html', oldJpeg, { metadata: meta('html', now, oldJpeg, { content_type: 'text/html' }) });
    // Keys that are not valid camera names never show up.
    await kv.put('latest/.hidden', oldJpeg, { metadata: meta('.hidden', now, oldJpeg) });
    await kv.put('latest/<img src=x onerror=alert(1)>', oldJpeg, { metadata: meta('x', now, oldJpeg) });
    await kv.put('history/porch/20261125T141500.123Z', oldJpeg, {
      metadata: meta('porch', now - 60000, oldJpeg),
      expirationTtl: 3600,
    });
  });
  after(() => w.mf.dispose());

  test('GET /api/cameras lists latest/ keys with ages and stale flags', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/api/cameras`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = await res.json();
    assert.ok(Math.abs(body.now_ms - Date.now()) < 10000);
    assert.deepEqual(
      body.cameras.map((c) => c.name),
      ['garage', 'html', 'no-meta', 'porch', 'yard.cam-2_B'],
    );
    const by = Object.fromEntries(body.cameras.map((c) => [c.name, c]));
    assert.deepEqual(Object.keys(by.porch).sort(), [
      'age_ms', 'bytes', 'captured_ms', 'height', 'interval_ms', 'name', 'stale', 'width',
    ]);
    assert.equal(by.porch.captured_ms, porchAt);
    assert.equal(by.porch.age_ms, body.now_ms - porchAt);
    assert.equal(by.porch.bytes, porchJpeg.length);
    assert.equal(by.porch.width, 320);
    assert.equal(by.porch.stale, false);
    assert.equal(by['yard.cam-2_B'].stale, false, '14 s old, interval 10 s: not stale');
    assert.equal(by.garage.stale, true, '16 s old, interval 5 s: stale');
    assert.equal(by['no-meta'].stale, true);
    assert.equal(by['no-meta'].captured_ms, null);
    assert.equal(by['no-meta'].interval_ms, 5000);
  });

  test('GET /img/<camera> streams the JPEG with capture headers', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/img/porch`);
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.ok(body.equals(porchJpeg), 'bytes unchanged');
    assert.equal(res.headers.get('content-type'), 'image/jpeg');
    assert.equal(res.headers.get('etag'), `"${porchAt}-${porchJpeg.length}"`);
    assert.equal(res.headers.get('cache-control'), 'private, no-cache');
    assert.equal(res.headers.get('x-capture-time'), new Date(porchAt).toISOString());
    assert.match(res.headers.get('x-capture-time'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(res.headers.get('last-modified'), new Date(porchAt).toUTCString());
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  });

  test('If-None-Match -> 304 without a body', async () => {
    const etag = `"${porchAt}-${porchJpeg.length}"`;
    for (const inm of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await w.mf.dispatchFetch(`${BASE}/img/porch`, { headers: { 'If-None-Match': inm } });
      assert.equal(res.status, 304, inm);
      assert.equal(res.headers.get('etag'), etag);
      assert.equal(res.headers.get('cache-control'), 'private, no-cache');
      assert.equal((await res.arrayBuffer()).byteLength, 0);
    }
    const res = await w.mf.dispatchFetch(`${BASE}/img/porch`, { headers: { 'If-None-Match': '"1-2"' } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  });

  test('If-Modified-Since -> 304 when nothing newer', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/img/porch`, {
      headers: { 'If-Modified-Since': new Date(porchAt + 1000).toUTCString() },
    });
    assert.equal(res.status, 304);
    await res.arrayBuffer();
    const res2 = await w.mf.dispatchFetch(`${BASE}/img/porch`, {
      headers: { 'If-Modified-Since': new Date(porchAt - 5000).toUTCString() },
    });
    assert.equal(res2.status, 200);
    await res2.arrayBuffer();
  });

  test('HEAD /img/<camera> has the headers and no body', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/img/porch`, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('etag'), `"${porchAt}-${porchJpeg.length}"`);
    assert.equal((await res.arrayBuffer()).byteLength, 0);
  });

  test('a non-image content_type in metadata is served as image/jpeg', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/img/html`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/jpeg');
    await res.arrayBuffer();
  });

  test('a still without metadata is served without capture headers', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/img/no-meta`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('etag'), null);
    assert.equal(res.headers.get('content-type'), 'image/jpeg');
    await res.arrayBuffer();
  });

  test('unknown camera -> 404 JSON', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/img/attic`);
    assert.equal(res.status, 404);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(await res.json(), { error: 'unknown camera' });
  });

  test('bad camera names -> 400', async () => {
    for (const p of ['/img/', '/img/.hidden', '/img/a%2Fb', '/img/a/b', '/img/%3Cx%3E', `/img/${'a'.repeat(65)}`, '/img/a%20b', '/img/..%2Flatest%2Fporch']) {
      const res = await w.mf.dispatchFetch(`${BASE}${p}`);
      assert.equal(res.status, 400, p);
      assert.deepEqual(await res.json(), { error: 'bad camera name' });
    }
    const ok = await w.mf.dispatchFetch(`${BASE}/img/${'a'.repeat(64)}`);
    assert.equal(ok.status, 404);
    await ok.arrayBuffer();
  });

  test('GET / renders the grid with security headers', async () => {
    const res = await w.mf.dispatchFetch(`${BASE}/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy');
    const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
    assert.ok(nonce, csp);
    assert.match(csp, /default-src 'none'; img-src 'self';/);
    assert.match(csp, /connect-src 'self'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    const html = await res.text();
    assert.match(html, /<div id="grid">/);
    assert.match(html, /<meta name="viewport" content="width=device-width, initial-scale=1">/);
    assert.equal((html.match(/<article class="cam/g) || []).length, 5);
    assert.match(html, new RegExp(`<img src="/img/porch\\?v=${porchAt}"`));
    assert.match(html, /<article class="cam stale" data-name="garage">/);
    assert.match(html, /<article class="cam" data-name="porch">/);
    // Every inline script/style carries the nonce; nothing is loaded from elsewhere.
    for (const m of html.matchAll(/<(script|style)([^>]*)>/g)) {
      if (/type="application\/json"/.test(m[2])) continue;
      assert.match(m[2], new RegExp(`nonce="${nonce.replace(/[+/=]/g, '\\$&')}"`), m[0]);
    }
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
    assert.doesNotMatch(html, /onerror=alert/);
    assert.doesNotMatch(html, /data-name="\.hidden"|"name":"\.hidden"/);
    assert.doesNotMatch(html, /<img src=x/);
  });

  test('nonce differs per response', async () => {
    const a = (await w.mf.dispatchFetch(`${BASE}/`)).headers.get('content-security-policy');
    const b = (await w.mf.dispatchFetch(`${BASE}/`)).headers.get('content-security-policy');
    assert.notEqual(a, b);
  });

  test('other methods -> 405, other paths -> 404', async () => {
    for (const [method, p] of [['POST', '/'], ['PUT', '/img/porch'], ['DELETE', '/img/porch'], ['POST', '/api/cameras'], ['PATCH', '/nope']]) {
      const res = await w.mf.dispatchFetch(`${BASE}${p}`, { method, body: method === 'DELETE' ? undefined : 'x' });
      assert.equal(res.status, 405, `${method} ${p}`);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      await res.arrayBuffer();
    }
    for (const p of ['/index.html', '/api', '/api/cameras/', '/img', '/favicon.ico']) {
      const res = await w.mf.dispatchFetch(`${BASE}${p}`);
      assert.equal(res.status, 404, p);
      await res.arrayBuffer();
    }
  });

  test('history keys are stored but not reported', async () => {
    const list = await w.kv.list({ prefix: 'history/' });
    assert.equal(list.keys.length, 1);
    const body = await (await w.mf.dispatchFetch(`${BASE}/api/cameras`)).text();
    assert.doesNotMatch(body, /history/);
  });
});

describe('routes: empty namespace', () => {
  test('page says there are no cameras yet', async () => {
    const w = await startWorker({ bindings: { DEV_DISABLE_ACCESS: 'true' } });
    try {
      const html = await (await w.mf.dispatchFetch(`${BASE}/`)).text();
      assert.match(html, /<p id="empty">No cameras yet/);
      const body = await (await w.mf.dispatchFetch(`${BASE}/api/cameras`)).json();
      assert.deepEqual(body.cameras, []);
    } finally {
      await w.mf.dispose();
    }
  });
});
