#!/usr/bin/env node
// A fake of the Cloudflare Workers KV REST API (the part rtsnap uses), storing into a Miniflare
// KV namespace so that the Worker under test sees what a client wrote.
//
//   PUT    /client/v4/accounts/{acc}/storage/kv/namespaces/{ns}/bulk         JSON [{key,value,base64,expiration,expiration_ttl,metadata}]
//   POST   /client/v4/accounts/{acc}/storage/kv/namespaces/{ns}/bulk/delete  JSON ["key", ...]
//   PUT    .../values/{key}[?expiration_ttl=&expiration=]   raw body, or multipart/form-data with `value` and `metadata`
//   GET    .../values/{key}                                  raw bytes
//   DELETE .../values/{key}
//   GET    .../metadata/{key}
//   GET    .../keys?prefix=&limit=&cursor=
//
// Test control (no auth, loopback only):
//   POST /__fake/fail-next   JSON {status, count=1, code, message, retry_after, path_contains}
//   GET  /__fake/stats       {requests, writes, keys_written, failures_injected, last_requests:[...]}
//
// Standalone:
//   node test/fake-cf-api.mjs --port 0 --account ACC --namespace NS --token TOKEN
//        [--worker-port 0] [--persist DIR] [--exit-on-stdin-eof] [--verbose]
// prints `READY http://127.0.0.1:PORT/client/v4` and `WORKER http://127.0.0.1:PORT2/` on stdout.
// The Worker in standalone mode runs with DEV_DISABLE_ACCESS="true" (no Cloudflare Access).

import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MAX_VALUE_BYTES = 25 * 1024 * 1024;
export const MAX_KEY_BYTES = 512;
export const MAX_METADATA_BYTES = 1024;
export const MAX_BULK_ITEMS = 10000;
export const MAX_BULK_BYTES = 100 * 1024 * 1024;
export const MIN_TTL_S = 60;

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const WORKER_SCRIPT = path.resolve(HERE, '../src/index.js');
export const COMPATIBILITY_DATE = '2026-04-01';

class ApiError extends Error {
  /** @param {number} status @param {number} code @param {string} message @param {Record<string,string>} [headers] */
  constructor(status, code, message, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

function envelope(result, errors = []) {
  return { success: errors.length === 0, errors, messages: [], result };
}

function sendJson(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length, ...headers });
  res.end(data);
}

/** Reads the whole body, refusing more than `limit` bytes. */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let failed = false;
    req.on('data', (c) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        reject(new ApiError(413, 10011, `request body larger than ${limit} bytes`));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => failed || resolve(Buffer.concat(chunks)));
    req.on('error', (e) => failed || reject(e));
  });
}

/** Minimal multipart/form-data parser that keeps binary parts intact. */
export function parseMultipart(body, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  if (!m) throw new ApiError(400, 10026, 'multipart body without boundary');
  const boundary = Buffer.from(`--${(m[1] || m[2]).trim()}`);
  /** @type {Record<string, Buffer>} */
  const fields = {};
  let pos = body.indexOf(boundary);
  if (pos < 0) throw new ApiError(400, 10026, 'malformed multipart body');
  for (;;) {
    pos += boundary.length;
    if (body.slice(pos, pos + 2).toString() === '--') break; // closing boundary
    if (body.slice(pos, pos + 2).toString() === '\r\n') pos += 2;
    const headEnd = body.indexOf('\r\n\r\n', pos);
    if (headEnd < 0) throw new ApiError(400, 10026, 'malformed multipart body');
    const head = body.slice(pos, headEnd).toString('utf8');
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), boundary]), headEnd + 4);
    if (next < 0) throw new ApiError(400, 10026, 'malformed multipart body');
    const name = /content-disposition:[^\r\n]*\bname="([^"]*)"/i.exec(head);
    if (name) fields[name[1]] = body.slice(headEnd + 4, next);
    pos = next + 2;
  }
  return fields;
}

function checkKey(key) {
  if (typeof key !== 'string' || key === '') throw new ApiError(400, 10016, 'key must be a non-empty string');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new ApiError(414, 10033, `key longer than ${MAX_KEY_BYTES} bytes`);
  if (key === '.' || key === '..') throw new ApiError(400, 10016, 'illegal key name');
}

/** @returns {{expiration?: number, expirationTtl?: number}} */
function checkExpiry(expiration, ttl) {
  const out = {};
  if (ttl !== undefined && ttl !== null && ttl !== '') {
    const n = Number(ttl);
    if (!Number.isInteger(n) || n < MIN_TTL_S) {
      throw new ApiError(400, 10019, `Invalid expiration_ttl of ${ttl}. Expiration TTL must be at least ${MIN_TTL_S}.`);
    }
    out.expirationTtl = n;
  }
  if (expiration !== undefined && expiration !== null && expiration !== '') {
    const n = Number(expiration);
    if (!Number.isInteger(n) || n < Math.floor(Date.now() / 1000) + MIN_TTL_S) {
      throw new ApiError(400, 10020, `Invalid expiration of ${expiration}. Expiration must be at least ${MIN_TTL_S} seconds in the future.`);
    }
    out.expiration = n;
  }
  return out;
}

function checkMetadata(meta) {
  if (meta === undefined || meta === null) return undefined;
  const size = Buffer.byteLength(JSON.stringify(meta));
  if (size > MAX_METADATA_BYTES) throw new ApiError(413, 10027, `metadata larger than ${MAX_METADATA_BYTES} bytes (${size})`);
  return meta;
}

function checkValue(buf) {
  if (buf.length > MAX_VALUE_BYTES) throw new ApiError(413, 10011, `value larger than ${MAX_VALUE_BYTES} bytes`);
  return buf;
}

/**
 * Starts the fake API on 127.0.0.1.
 * @param {{ kv: any, account: string, namespace: string, token: string, port?: number, verbose?: boolean }} opts
 *   kv: a KVNamespace, e.g. `await mf.getKVNamespace('STILLS')`
 */
export async function startFakeCfApi({ kv, account, namespace, token, port = 0, verbose = false }) {
  const stats = { requests: 0, writes: 0, keys_written: 0, failures_injected: 0, last_requests: [] };
  /** @type {{status:number,count:number,code:number,message:string,retry_after?:number,path_contains?:string}[]} */
  const faults = [];

  async function route(req, res, url) {
    const p = url.pathname;
    if (p === '/__fake/stats' && req.method === 'GET') return sendJson(res, 200, stats);
    if (p === '/__fake/fail-next' && req.method === 'POST') {
      const spec = JSON.parse((await readBody(req, 65536)).toString() || '{}');
      faults.push({
        status: Number(spec.status) || 500,
        count: Number(spec.count) || 1,
        code: Number(spec.code) || 10001,
        message: String(spec.message || 'injected failure'),
        retry_after: spec.retry_after,
        path_contains: spec.path_contains,
      });
      return sendJson(res, 200, { ok: true, pending: faults.length });
    }

    const m = /^\/client\/v4\/accounts\/([^/]+)\/storage\/kv\/namespaces\/([^/]+)\/(.+)$/.exec(p);
    if (!m) throw new ApiError(404, 7003, 'Could not route to ' + p + ', perhaps your object identifier is invalid?');

    const auth = req.headers.authorization;
    if (!auth || !/^Bearer\s+\S+$/i.test(auth)) throw new ApiError(401, 10000, 'Authentication error');
    if (auth.replace(/^Bearer\s+/i, '') !== token) throw new ApiError(403, 10000, 'Authentication error');
    if (decodeURIComponent(m[1]) !== account) throw new ApiError(403, 10000, 'Authentication error');
    if (decodeURIComponent(m[2]) !== namespace) throw new ApiError(404, 10013, 'namespace not found');

    const fi = faults.findIndex((f) => !f.path_contains || p.includes(f.path_contains));
    if (fi >= 0) {
      const f = faults[fi];
      if (--f.count <= 0) faults.splice(fi, 1);
      stats.failures_injected++;
      const headers = f.retry_after !== undefined ? { 'retry-after': String(f.retry_after) } : {};
      await readBody(req, MAX_BULK_BYTES + 1).catch(() => {});
      return sendJson(res, f.status, envelope(null, [{ code: f.code, message: f.message }]), headers);
    }

    const rest = m[3];
    const method = req.method;
    if (rest === 'bulk' && method === 'PUT') return bulkPut(req, res);
    if (rest === 'bulk/delete' && method === 'POST') return bulkDelete(req, res);
    if (rest === 'keys' && method === 'GET') return listKeys(res, url);
    const vm = /^values\/(.+)$/.exec(rest);
    if (vm) {
      const key = decodeURIComponent(vm[1]);
      checkKey(key);
      if (method === 'PUT') return putValue(req, res, url, key);
      if (method === 'GET') return getValue(res, key);
      if (method === 'DELETE') {
        await kv.delete(key);
        return sendJson(res, 200, envelope(null));
      }
      throw new ApiError(405, 10000, 'method not allowed');
    }
    const mm = /^metadata\/(.+)$/.exec(rest);
    if (mm && method === 'GET') {
      const key = decodeURIComponent(mm[1]);
      checkKey(key);
      const r = await kv.getWithMetadata(key, { type: 'arrayBuffer' });
      if (r.value === null) throw new ApiError(404, 10009, 'get: \'key not found\'');
      return sendJson(res, 200, envelope(r.metadata ?? null));
    }
    throw new ApiError(405, 10000, `unsupported ${method} ${rest}`);
  }

  async function bulkPut(req, res) {
    const body = await readBody(req, MAX_BULK_BYTES);
    let items;
    try {
      items = JSON.parse(body.toString('utf8'));
    } catch {
      throw new ApiError(400, 10026, 'could not parse request body as JSON');
    }
    if (!Array.isArray(items)) throw new ApiError(400, 10026, 'request body must be a JSON array');
    if (items.length > MAX_BULK_ITEMS) throw new ApiError(400, 10026, `at most ${MAX_BULK_ITEMS} items per bulk write`);
    // Validate everything first: a bad item fails the whole request, as the real API does.
    const writes = items.map((it) => {
      if (typeof it !== 'object' || it === null) throw new ApiError(400, 10026, 'each item must be an object');
      checkKey(it.key);
      if (typeof it.value !== 'string') throw new ApiError(400, 10026, `value of ${it.key} must be a string`);
      let value;
      if (it.base64 === true) {
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(it.value) || it.value.length % 4 !== 0) {
          throw new ApiError(400, 10026, `value of ${it.key} is not valid base64`);
        }
        value = Buffer.from(it.value, 'base64');
      } else {
        value = Buffer.from(it.value, 'utf8');
      }
      checkValue(value);
      return {
        key: it.key,
        value,
        opts: { ...checkExpiry(it.expiration, it.expiration_ttl), metadata: checkMetadata(it.metadata) },
      };
    });
    // In order, so that the last item wins when a key repeats.
    for (const w of writes) {
      await kv.put(w.key, new Uint8Array(w.value), clean(w.opts));
      stats.keys_written++;
    }
    stats.writes++;
    return sendJson(res, 200, envelope({ successful_key_count: writes.length, unsuccessful_keys: [] }));
  }

  async function bulkDelete(req, res) {
    const body = await readBody(req, MAX_BULK_BYTES);
    let keys;
    try {
      keys = JSON.parse(body.toString('utf8'));
    } catch {
      throw new ApiError(400, 10026, 'could not parse request body as JSON');
    }
    if (!Array.isArray(keys)) throw new ApiError(400, 10026, 'request body must be a JSON array of keys');
    keys.forEach(checkKey);
    for (const k of keys) await kv.delete(k);
    return sendJson(res, 200, envelope({ successful_key_count: keys.length, unsuccessful_keys: [] }));
  }

  async function putValue(req, res, url, key) {
    const ct = req.headers['content-type'] || '';
    const body = await readBody(req, MAX_VALUE_BYTES + 64 * 1024);
    let value = body;
    let metadata;
    if (/^multipart\/form-data/i.test(ct)) {
      const fields = parseMultipart(body, ct);
      if (!fields.value) throw new ApiError(400, 10026, 'multipart body without a `value` part');
      value = fields.value;
      if (fields.metadata) {
        try {
          metadata = JSON.parse(fields.metadata.toString('utf8'));
        } catch {
          throw new ApiError(400, 10026, 'metadata is not valid JSON');
        }
      }
    }
    checkValue(value);
    const opts = {
      ...checkExpiry(url.searchParams.get('expiration') ?? undefined, url.searchParams.get('expiration_ttl') ?? undefined),
      metadata: checkMetadata(metadata),
    };
    await kv.put(key, new Uint8Array(value), clean(opts));
    stats.writes++;
    stats.keys_written++;
    return sendJson(res, 200, envelope({}));
  }

  async function getValue(res, key) {
    const r = await kv.get(key, { type: 'arrayBuffer' });
    if (r === null) throw new ApiError(404, 10009, 'get: \'key not found\'');
    const buf = Buffer.from(r);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': buf.length });
    res.end(buf);
  }

  async function listKeys(res, url) {
    const prefix = url.searchParams.get('prefix') ?? undefined;
    const cursor = url.searchParams.get('cursor') || undefined;
    let limit = Number(url.searchParams.get('limit') || 1000);
    if (!Number.isInteger(limit) || limit < 10 || limit > 1000) {
      throw new ApiError(400, 10026, 'limit must be an integer between 10 and 1000');
    }
    const r = await kv.list({ prefix, cursor, limit });
    const result = r.keys.map((k) => clean({ name: k.name, expiration: k.expiration, metadata: k.metadata }));
    return sendJson(res, 200, {
      ...envelope(result),
      result_info: { count: result.length, cursor: r.list_complete ? '' : r.cursor },
    });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    stats.requests++;
    stats.last_requests.push(`${req.method} ${url.pathname}`);
    if (stats.last_requests.length > 50) stats.last_requests.shift();
    if (verbose) process.stderr.write(`fake-cf-api: ${req.method} ${url.pathname}${url.search}\n`);
    route(req, res, url).catch((e) => {
      if (res.headersSent) return res.destroy();
      if (e instanceof ApiError) {
        return sendJson(res, e.status, envelope(null, [{ code: e.code, message: e.message }]), e.headers);
      }
      process.stderr.write(`fake-cf-api: internal error: ${e && e.stack ? e.stack : e}\n`);
      sendJson(res, 500, envelope(null, [{ code: 10001, message: 'internal error' }]));
    });
  });
  server.requestTimeout = 120_000;
  server.headersTimeout = 30_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${addr.port}/client/v4`,
    port: addr.port,
    stats,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve(undefined));
      }),
  };
}

function clean(o) {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * A Miniflare instance running the Worker with a STILLS namespace.
 * @param {{ bindings?: Record<string,string>, port?: number, persist?: string, outboundService?: any, host?: string }} [o]
 */
export async function startWorker({ bindings = {}, port, persist, outboundService, host = '127.0.0.1' } = {}) {
  const { Miniflare } = await import('miniflare');
  const mf = new Miniflare({
    modules: true,
    scriptPath: WORKER_SCRIPT,
    // The Worker's own imports are ES modules too (Miniflare treats *.js as CommonJS by default).
    modulesRules: [{ type: 'ESModule', include: ['**/*.js'] }],
    compatibilityDate: COMPATIBILITY_DATE,
    kvNamespaces: ['STILLS'],
    bindings,
    host,
    ...(port !== undefined ? { port } : {}),
    ...(persist ? { kvPersist: persist } : {}),
    // Nothing the Worker fetches may leave this machine.
    outboundService: outboundService ?? (() => new Response('outbound network disabled in tests', { status: 503 })),
  });
  const url = await mf.ready;
  return { mf, url, kv: await mf.getKVNamespace('STILLS') };
}

function parseArgs(argv) {
  const o = { port: 0, workerPort: 0, account: '', namespace: '', token: '', persist: '', exitOnStdinEof: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') o.port = Number(val());
    else if (a === '--worker-port') o.workerPort = Number(val());
    else if (a === '--account') o.account = val();
    else if (a === '--namespace') o.namespace = val();
    else if (a === '--token') o.token = val();
    else if (a === '--persist') o.persist = val();
    else if (a === '--exit-on-stdin-eof') o.exitOnStdinEof = true;
    else if (a === '--verbose') o.verbose = true;
    else if (a === '--supervised-child') o.child = true;
    else if (a === '-h' || a === '--help') o.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  if (o.help || !o.account || !o.namespace || !o.token) {
    process.stderr.write(
      'usage: node test/fake-cf-api.mjs --port 0 --account ACC --namespace NS --token TOKEN\n' +
        '         [--worker-port 0] [--persist DIR] [--exit-on-stdin-eof] [--verbose]\n',
    );
    process.exit(o.help ? 0 : 2);
  }
  process.env.WRANGLER_SEND_METRICS ??= 'false';
  process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= 'false';
  if (!o.child) return supervise();
  const w = await startWorker({
    bindings: { DEV_DISABLE_ACCESS: 'true' }, // standalone mode only: there is no Access here
    port: o.workerPort,
    persist: o.persist || undefined,
  });
  const api = await startFakeCfApi({ kv: w.kv, account: o.account, namespace: o.namespace, token: o.token, port: o.port, verbose: o.verbose });
  process.stdout.write(`READY ${api.url}\nWORKER ${w.url.href}\n`);

  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(code), 5000);
    force.unref();
    await api.close().catch(() => {});
    await w.mf.dispose().catch(() => {});
    process.exit(code);
  };
  process.on('SIGINT', () => stop(0));
  process.on('SIGTERM', () => stop(0));
  process.on('SIGHUP', () => stop(0));
  // The supervisor died (even by SIGKILL, as Rust's Child::kill does): stop workerd too.
  process.on('disconnect', () => stop(0));
  if (o.exitOnStdinEof) {
    process.stdin.on('end', () => stop(0));
    process.stdin.on('error', () => stop(0));
    process.stdin.resume();
  }
}

/**
 * Miniflare runs workerd as a child process, which would outlive a SIGKILLed Node. So the
 * process a test harness starts only supervises: the real work happens in a child that holds
 * an IPC channel to it and shuts workerd down as soon as that channel closes.
 */
async function supervise() {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), ...process.argv.slice(2), '--supervised-child'], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => child.kill('SIGTERM'));
  }
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    process.stderr.write(`fake-cf-api: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });
}
