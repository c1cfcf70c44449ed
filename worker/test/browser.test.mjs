// End to end in a real browser: 8 cameras' JPEGs go into KV through the fake REST API's bulk
// endpoint (as the rtsnap daemon sends them), the Worker serves the viewer on 127.0.0.1, and
// headless Chromium takes a screenshot and dumps the DOM after the page's scripts ran.
// Skipped (with a message) when no Chromium is installed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeCfApi, startWorker } from './fake-cf-api.mjs';
import { makeJpegs } from './helpers.mjs';

const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
const CAMERAS = ['porch', 'garage', 'backyard', 'driveway', 'front-door', 'side_gate', 'shed.2', 'Living-Room'];
const STALE = new Set(['shed.2', 'driveway']);

function findChromium() {
  const candidates = [process.env.CHROMIUM, 'chromium', 'chromium-browser', 'google-chrome'].filter(Boolean);
  for (const c of candidates) {
    try {
      execFileSync(c, ['--version'], { stdio: 'ignore', timeout: 20000 });
      return c;
    } catch {
      // try the next one
    }
  }
  return null;
}

const chromium = findChromium();
const skip = chromium ? false : 'no chromium found (apt-get install -y chromium, or set CHROMIUM=/path)';
if (skip) console.log(`# browser test skipped: ${skip}`);

/** Runs headless Chromium once, bounded in time, with a fresh profile. */
function runChromium(args, timeoutMs = 60000) {
  const profile = mkdtempSync(path.join(tmpdir(), 'rtsnap-chromium-'));
  const flags = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
    `--user-data-dir=${profile}`,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(chromium, [...flags, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`chromium did not finish in ${timeoutMs} ms\n${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      rmSync(profile, { recursive: true, force: true });
      if (code !== 0) reject(new Error(`chromium exited ${code}\n${stderr.slice(-2000)}`));
      else resolve({ stdout, stderr });
    });
  });
}

let w, api;
before(async () => {
  if (skip) return;
  w = await startWorker({ bindings: { DEV_DISABLE_ACCESS: 'true' } });
  api = await startFakeCfApi({ kv: w.kv, account: 'acc', namespace: 'ns', token: 'tok' });
  const jpegs = makeJpegs(CAMERAS.length);
  const now = Date.now();
  const items = CAMERAS.map((camera, i) => ({
    key: `latest/${camera}`,
    value: jpegs[i].toString('base64'),
    base64: true,
    metadata: {
      camera,
      captured_ms: STALE.has(camera) ? now - 10 * 60 * 1000 : now - 1000 * (i + 1),
      width: 320,
      height: 180,
      content_type: 'image/jpeg',
      bytes: jpegs[i].length,
      interval_ms: 5000,
    },
  }));
  const res = await fetch(`${api.url}/accounts/acc/storage/kv/namespaces/ns/bulk`, {
    method: 'PUT',
    headers: { Authorization: 'Bearer tok', 'content-type': 'application/json' },
    body: JSON.stringify(items),
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).result.successful_key_count, CAMERAS.length);
});

after(async () => {
  await api?.close();
  await w?.mf.dispose();
});

test('viewer shows 8 cameras in Chromium: screenshot + DOM', { skip, timeout: 180000 }, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const url = w.url.href; // http://127.0.0.1:PORT/
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const shot = path.join(ARTIFACTS, 'viewer.png');
  rmSync(shot, { force: true });
  await runChromium([`--screenshot=${shot}`, '--window-size=1280,900', '--virtual-time-budget=5000', url]);
  assert.ok(statSync(shot).size > 10000, 'screenshot written');

  // Phone-sized: one column.
  const mobile = path.join(ARTIFACTS, 'viewer-mobile.png');
  await runChromium([`--screenshot=${mobile}`, '--window-size=390,844', '--virtual-time-budget=3000', url]);
  assert.ok(statSync(mobile).size > 5000, 'mobile screenshot written');

  const { stdout: dom } = await runChromium(['--window-size=1280,900', '--virtual-time-budget=5000', '--dump-dom', url]);
  writeFileSync(path.join(ARTIFACTS, 'viewer.dom.html'), dom);

  const imgs = [...dom.matchAll(/<img\b[^>]*>/g)].map((m) => m[0]);
  assert.equal(imgs.length, 8, 'eight <img>');
  for (const img of imgs) assert.match(img, /data-loaded="1"/, `loaded: ${img}`);
  for (const cam of CAMERAS) {
    assert.ok(dom.includes(`data-name="${cam}"`), `card for ${cam}`);
  }
  // Stale badges visible exactly on the stale cameras; ages were rendered by the script.
  const cards = [...dom.matchAll(/<article class="([^"]*)" data-name="([^"]+)">([\s\S]*?)<\/article>/g)];
  assert.equal(cards.length, 8);
  for (const [, cls, name, inner] of cards) {
    const stale = STALE.has(name);
    assert.equal(/\bstale\b/.test(cls), stale, `${name} stale class`);
    assert.equal(/<span class="badge">stale<\/span>/.test(inner), stale, `${name} badge visible`);
    assert.match(inner, stale ? /10 min ago/ : /\d+ s ago/, `${name} age`);
  }
  assert.match(dom, /id="status"[^>]*>updated /);
  // Sorted case-insensitively.
  assert.deepEqual(cards.map((c) => c[2]), [...CAMERAS].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase())));
});
