// The fake KV REST API: what a client (the rtsnap daemon) writes through it is what the Worker
// serves. Also the standalone CLI.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startFakeCfApi, startWorker } from './fake-cf-api.mjs';
import { makeJpegs } from './helpers.mjs';

const ACC = 'acc123';
const NS = 'ns456';
const TOKEN = 'secret-token';

describe('fake Cloudflare KV REST API', () => {
  let w, api, ns;
  const auth = { Authorization: `Bearer ${TOKEN}` };
  const jpegs = makeJpegs(2);

  before(async () => {
    w = await startWorker({ bindings: { DEV_DISABLE_ACCESS: 'true' } });
    api = await startFakeCfApi({ kv: w.kv, account: ACC, namespace: NS, token: TOKEN });
    ns = `${api.url}/accounts/${ACC}/storage/kv/namespaces/${NS}`;
  });
  after(async () => {
    await api.close();
    await w.mf.dispose();
  });

  const bulk = (items, headers = auth) =>
    fetch(`${ns}/bulk`, { method: 'PUT', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(items) });

  test('bulk write of latest + history, then the Worker serves it byte for byte', async () => {
    const captured = Date.now() - 1000;
    const m = { camera: 'porch', captured_ms: captured, width: 320, height: 180, content_type: 'image/jpeg', bytes: jpegs[0].length, interval_ms: 5000 };
    const res = await bulk([
      { key: 'latest/porch', value: jpegs[0].toString('base64'), base64: true, metadata: m },
      { key: 'history/porch/20261125T141500.123Z', value: jpegs[1].toString('base64'), base64: true, expiration_ttl: 3600, metadata: m },
    ]);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      success: true, errors: [], messages: [], result: { successful_key_count: 2, unsuccessful_keys: [] },
    });
    const img = await w.mf.dispatchFetch('http://v/img/porch');
    assert.equal(img.status, 200);
    assert.ok(Buffer.from(await img.arrayBuffer()).equals(jpegs[0]));
    assert.equal(img.headers.get('etag'), `"${captured}-${jpegs[0].length}"`);
    const cams = await (await w.mf.dispatchFetch('http://v/api/cameras')).json();
    assert.deepEqual(cams.cameras.map((c) => [c.name, c.stale]), [['porch', false]]);
    const hist = await w.kv.list({ prefix: 'history/' });
    assert.equal(hist.keys.length, 1);
    assert.ok(hist.keys[0].expiration > Date.now() / 1000 + 3500);
  });

  test('bulk value without base64 is stored as UTF-8 text', async () => {
    assert.equal((await bulk([{ key: 'note', value: 'héllo' }])).status, 200);
    assert.equal(await w.kv.get('note'), 'héllo');
  });

  test('authentication: missing -> 401, wrong token/account -> 403, unknown namespace -> 404', async () => {
    let r = await bulk([], {});
    assert.equal(r.status, 401);
    let b = await r.json();
    assert.equal(b.success, false);
    assert.equal(b.errors[0].code, 10000);
    r = await bulk([], { Authorization: 'Bearer wrong' });
    assert.equal(r.status, 403);
    assert.equal((await r.json()).errors[0].code, 10000);
    r = await fetch(`${api.url}/accounts/other/storage/kv/namespaces/${NS}/bulk`, { method: 'PUT', headers: auth, body: '[]' });
    assert.equal(r.status, 403);
    await r.arrayBuffer();
    r = await fetch(`${api.url}/accounts/${ACC}/storage/kv/namespaces/nope/bulk`, { method: 'PUT', headers: auth, body: '[]' });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).errors[0].code, 10013);
  });

  test('validation: TTL < 60, metadata > 1024 B, bad JSON, bad base64, long key', async () => {
    const cases = [
      [[{ key: 'a', value: 'x', expiration_ttl: 30 }], 400],
      [[{ key: 'a', value: 'x', metadata: { pad: 'x'.repeat(1100) } }], 413],
      [{ not: 'an array' }, 400],
      [[{ key: 'a', value: '!!!', base64: true }], 400],
      [[{ key: 'k'.repeat(513), value: 'x' }], 414],
      [[{ key: 'a', value: 5 }], 400],
    ];
    for (const [items, status] of cases) {
      const r = await bulk(items);
      assert.equal(r.status, status, JSON.stringify(items).slice(0, 80));
      const b = await r.json();
      assert.equal(b.success, false);
      assert.ok(b.errors[0].message);
    }
    const r = await fetch(`${ns}/bulk`, { method: 'PUT', headers: auth, body: '[{' });
    assert.equal(r.status, 400);
    await r.arrayBuffer();
    assert.equal(await w.kv.get('a'), null, 'a failed bulk writes nothing');
  });

  test('single PUT with a raw body and expiration_ttl, GET returns the same bytes', async () => {
    const key = 'history/garage/20261125T141505.000Z';
    let r = await fetch(`${ns}/values/${encodeURIComponent(key)}?expiration_ttl=120`, { method: 'PUT', headers: auth, body: jpegs[1] });
    assert.equal(r.status, 200);
    assert.equal((await r.json()).success, true);
    r = await fetch(`${ns}/values/${encodeURIComponent(key)}`, { headers: auth });
    assert.equal(r.status, 200);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(jpegs[1]));
    const listed = await w.kv.list({ prefix: 'history/garage/' });
    assert.ok(listed.keys[0].expiration <= Date.now() / 1000 + 121);
    r = await fetch(`${ns}/values/${encodeURIComponent(key)}?expiration_ttl=10`, { method: 'PUT', headers: auth, body: 'x' });
    assert.equal(r.status, 400);
    await r.arrayBuffer();
  });

  test('single PUT as multipart keeps binary bytes and metadata intact', async () => {
    // Bytes that would trip a naive text parser: CRLF, a fake boundary, invalid UTF-8.
    const value = Buffer.concat([jpegs[0], Buffer.from('\r\n--not-the-boundary\r\n\xff\xfe', 'latin1')]);
    const boundary = 'rtsnapBoundary7MA4YWxkTrZu0gW';
    const meta = { camera: 'side', captured_ms: Date.now(), width: 320, height: 180, content_type: 'image/jpeg', bytes: value.length, interval_ms: 5000 };
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="value"\r\nContent-Type: application/octet-stream\r\n\r\n`),
      value,
      Buffer.from(`\r\n--${boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n${JSON.stringify(meta)}\r\n--${boundary}--\r\n`),
    ]);
    const r = await fetch(`${ns}/values/latest%2Fside`, {
      method: 'PUT',
      headers: { ...auth, 'content-type': `multipart/form-data; boundary=${boundary}` },
      body,
    });
    assert.equal(r.status, 200, await r.clone().text());
    await r.arrayBuffer();
    const img = await w.mf.dispatchFetch('http://v/img/side');
    assert.ok(Buffer.from(await img.arrayBuffer()).equals(value));
    assert.equal(img.headers.get('x-capture-time'), new Date(meta.captured_ms).toISOString());
    const md = await (await fetch(`${ns}/metadata/latest%2Fside`, { headers: auth })).json();
    assert.deepEqual(md.result, meta);
  });

  test('GET of a missing key -> 404 with code 10009', async () => {
    const r = await fetch(`${ns}/values/latest%2Fnothing`, { headers: auth });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).errors[0].code, 10009);
  });

  test('keys listing with prefix, limit and cursor; the Worker paginates too', async () => {
    const items = [];
    for (let i = 0; i < 1205; i++) {
      items.push({ key: `latest/cam${String(i).padStart(4, '0')}`, value: 'AA==', base64: true,
        metadata: { camera: `cam${i}`, captured_ms: Date.now(), interval_ms: 5000, bytes: 1 } });
    }
    assert.equal((await bulk(items)).status, 200);
    let r = await (await fetch(`${ns}/keys?prefix=latest%2Fcam&limit=1000`, { headers: auth })).json();
    assert.equal(r.success, true);
    assert.equal(r.result.length, 1000);
    assert.equal(r.result[0].name, 'latest/cam0000');
    assert.equal(r.result[0].metadata.camera, 'cam0');
    assert.ok(r.result_info.cursor);
    r = await (await fetch(`${ns}/keys?prefix=latest%2Fcam&cursor=${encodeURIComponent(r.result_info.cursor)}`, { headers: auth })).json();
    assert.equal(r.result.length, 205);
    assert.equal(r.result_info.cursor, '');
    const cams = await (await w.mf.dispatchFetch('http://v/api/cameras')).json();
    assert.equal(cams.cameras.filter((c) => c.name.startsWith('cam')).length, 1205);
  });

  test('bulk delete', async () => {
    assert.equal((await bulk([{ key: 'd/1', value: 'a' }, { key: 'd/2', value: 'b' }])).status, 200);
    const del = await fetch(`${ns}/bulk/delete`, { method: 'POST', headers: auth, body: JSON.stringify(['d/1', 'd/2']) });
    assert.equal(del.status, 200);
    assert.equal((await del.json()).result.successful_key_count, 2);
    assert.equal((await w.kv.list({ prefix: 'd/' })).keys.length, 0);
  });

  test('injected failures: 429 with retry-after, then normal service', async () => {
    const r0 = await fetch(`${api.url.replace('/client/v4', '')}/__fake/fail-next`, {
      method: 'POST', body: JSON.stringify({ status: 429, code: 10048, count: 2, retry_after: 1, path_contains: '/bulk' }),
    });
    assert.equal(r0.status, 200);
    await r0.arrayBuffer();
    for (let i = 0; i < 2; i++) {
      const r = await bulk([{ key: 'x', value: 'y' }]);
      assert.equal(r.status, 429);
      assert.equal(r.headers.get('retry-after'), '1');
      assert.equal((await r.json()).errors[0].code, 10048);
    }
    assert.equal((await bulk([{ key: 'x', value: 'y' }])).status, 200);
    const stats = await (await fetch(`${api.url.replace('/client/v4', '')}/__fake/stats`)).json();
    assert.equal(stats.failures_injected, 2);
    assert.ok(stats.keys_written > 0);
  });
});

describe('fake Cloudflare KV REST API: standalone CLI', () => {
  const script = fileURLToPath(new URL('./fake-cf-api.mjs', import.meta.url));

  /** Starts the CLI and waits (bounded) for its READY and WORKER lines. */
  async function startCli() {
    const child = spawn(process.execPath, [script, '--port', '0', '--account', ACC, '--namespace', NS, '--token', TOKEN], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const lines = createInterface({ input: child.stdout });
    const got = {};
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`CLI did not get ready in 20 s: ${stderr}`)), 20000);
      lines.on('line', (l) => {
        const m = /^(READY|WORKER) (\S+)$/.exec(l);
        if (m) got[m[1]] = m[2];
        if (got.READY && got.WORKER) {
          clearTimeout(t);
          resolve(undefined);
        }
      });
      child.on('exit', (c) => reject(new Error(`CLI exited ${c}: ${stderr}`)));
    });
    return { child, api: got.READY, worker: got.WORKER };
  }

  const exited = (child, ms) =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve(true);
      const t = setTimeout(() => resolve(false), ms);
      child.on('exit', () => {
        clearTimeout(t);
        resolve(true);
      });
    });

  test('prints READY/WORKER, stores through the API, serves through the Worker, stops on SIGTERM', async () => {
    const { child, api, worker } = await startCli();
    try {
      assert.match(api, /^http:\/\/127\.0\.0\.1:\d+\/client\/v4$/);
      assert.match(worker, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      const jpeg = makeJpegs(1)[0];
      const r = await fetch(`${api}/accounts/${ACC}/storage/kv/namespaces/${NS}/bulk`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify([{ key: 'latest/porch', value: jpeg.toString('base64'), base64: true,
          metadata: { camera: 'porch', captured_ms: Date.now(), width: 320, height: 180, content_type: 'image/jpeg', bytes: jpeg.length, interval_ms: 5000 } }]),
      });
      assert.equal(r.status, 200);
      await r.arrayBuffer();
      // Standalone mode has Access disabled.
      const img = await fetch(`${worker}img/porch`);
      assert.equal(img.status, 200);
      assert.ok(Buffer.from(await img.arrayBuffer()).equals(jpeg));
    } finally {
      child.kill('SIGTERM');
      assert.ok(await exited(child, 10000), 'exits within 10 s of SIGTERM');
    }
  });

  test('SIGKILL of the CLI also takes the Worker (workerd) down', async () => {
    const { child, worker } = await startCli();
    assert.equal((await fetch(`${worker}api/cameras`)).status, 200);
    child.kill('SIGKILL');
    assert.ok(await exited(child, 5000));
    let down = false;
    for (let i = 0; i < 50 && !down; i++) {
      await new Promise((r) => setTimeout(r, 200));
      try {
        const r = await fetch(`${worker}api/cameras`, { signal: AbortSignal.timeout(1000) });
        await r.arrayBuffer();
      } catch {
        down = true;
      }
    }
    assert.ok(down, 'Worker port closed within 10 s');
  });
});
