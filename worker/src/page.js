// The viewer page: server-rendered grid (works without JS) that a small inline script keeps
// fresh. No external resources; CSP allows only same-origin images/fetches and the nonce'd
// inline <style>/<script>.

/** @param {string} s */
export function escapeHtml(s) {
  return String(s)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** JSON that is safe inside <script type="application/json">. */
function scriptJson(v) {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** @param {number | null} ms */
function ageText(ms) {
  if (ms === null) return 'no capture time';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 36) return `${h} h ago`;
  return `${Math.round(h / 24)} d ago`;
}

/** @param {import('./cameras.js').CameraInfo} cam */
function imgSrc(cam) {
  const base = `/img/${encodeURIComponent(cam.name)}`;
  return cam.captured_ms === null ? base : `${base}?v=${cam.captured_ms}`;
}

/** @param {import('./cameras.js').CameraInfo} cam */
function renderCard(cam) {
  const name = escapeHtml(cam.name);
  const w = cam.width || 16;
  const h = cam.height || 9;
  const iso = cam.captured_ms === null ? '' : new Date(cam.captured_ms).toISOString();
  return `<article class="cam${cam.stale ? ' stale' : ''}" data-name="${name}">
<a class="shot" href="/img/${escapeHtml(encodeURIComponent(cam.name))}" target="_blank" rel="noopener noreferrer"><img src="${escapeHtml(imgSrc(cam))}" alt="${name}" width="${w}" height="${h}" decoding="async"></a>
<div class="meta"><h2 class="name">${name}</h2><span class="badge"${cam.stale ? '' : ' hidden'}>stale</span></div>
<div class="times"><time class="cap" datetime="${iso}">${iso ? escapeHtml(iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')) : 'unknown'}</time><span class="age">${ageText(cam.age_ms)}</span></div>
</article>`;
}

const CSS = `
:root{color-scheme:dark;--bg:#111418;--card:#1b2027;--fg:#e8eaed;--dim:#9aa3ad;--bad:#ff5d4f;--ok:#4fc36b}
*{box-sizing:border-box}
html,body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:baseline;justify-content:space-between;padding:.75rem 1rem}
h1{font-size:1.15rem;margin:0}
#status{color:var(--dim);font-size:.85rem}
#status.err{color:var(--bad)}
main{padding:0 .75rem 1rem}
#grid{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fill,minmax(min(100%,300px),1fr))}
.cam{background:var(--card);border-radius:10px;overflow:hidden;border:2px solid transparent}
.cam.stale{border-color:var(--bad)}
.shot{display:block;background:#000;aspect-ratio:16/9}
.shot img{display:block;width:100%;height:100%;object-fit:contain}
.cam.stale img{opacity:.6}
.cam.broken .shot{outline:2px dashed var(--bad);outline-offset:-6px}
.meta{display:flex;align-items:center;gap:.5rem;padding:.45rem .7rem 0}
.name{font-size:1rem;margin:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:1}
.badge{background:var(--bad);color:#fff;font-size:.75rem;font-weight:700;text-transform:uppercase;letter-spacing:.05em;padding:.1rem .45rem;border-radius:4px}
.badge[hidden]{display:none}
.times{display:flex;justify-content:space-between;gap:.5rem;padding:.15rem .7rem .55rem;color:var(--dim);font-size:.85rem;font-variant-numeric:tabular-nums}
.cam.stale .age{color:var(--bad);font-weight:600}
#empty{color:var(--dim);padding:2rem 1rem;text-align:center}
#empty[hidden]{display:none}
@media (max-width:480px){header{padding:.6rem .75rem}main{padding:0 .4rem .75rem}#grid{gap:.5rem}}
`;

// Runs in the browser. Builds nodes with textContent / properties only (no innerHTML).
const SCRIPT = `
(() => {
  'use strict';
  const POLL_MS = 5000, STALE_INTERVALS = 3;
  const grid = document.getElementById('grid');
  const empty = document.getElementById('empty');
  const statusEl = document.getElementById('status');
  const init = JSON.parse(document.getElementById('init').textContent);
  let skew = init.now_ms - Date.now();
  let lastOk = Date.now();
  const cards = new Map();

  function ageText(ms) {
    if (ms == null) return 'no capture time';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return s + ' s ago';
    const m = Math.round(s / 60);
    if (m < 90) return m + ' min ago';
    const h = Math.round(m / 60);
    if (h < 36) return h + ' h ago';
    return Math.round(h / 24) + ' d ago';
  }
  function localTime(ms) {
    if (ms == null) return 'unknown';
    return new Date(ms).toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' });
  }
  function imgSrc(cam) {
    const base = '/img/' + encodeURIComponent(cam.name);
    return cam.captured_ms == null ? base : base + '?v=' + cam.captured_ms;
  }
  function watchImg(card) {
    const img = card.el.querySelector('img');
    img.addEventListener('load', () => { img.dataset.loaded = '1'; card.el.classList.remove('broken'); });
    img.addEventListener('error', () => { img.dataset.loaded = '0'; card.el.classList.add('broken'); });
    if (img.complete && img.naturalWidth > 0) img.dataset.loaded = '1';
    card.img = img;
  }
  function adopt(el, cam) {
    const card = { el, cam, name: cam.name };
    card.cap = el.querySelector('.cap');
    card.age = el.querySelector('.age');
    card.badge = el.querySelector('.badge');
    watchImg(card);
    return card;
  }
  function build(cam) {
    const el = document.createElement('article');
    el.className = 'cam';
    el.dataset.name = cam.name;
    const a = document.createElement('a');
    a.className = 'shot'; a.href = '/img/' + encodeURIComponent(cam.name);
    a.target = '_blank'; a.rel = 'noopener noreferrer';
    const img = document.createElement('img');
    img.alt = cam.name; img.decoding = 'async';
    img.width = cam.width || 16; img.height = cam.height || 9;
    a.appendChild(img);
    const meta = document.createElement('div'); meta.className = 'meta';
    const h = document.createElement('h2'); h.className = 'name'; h.textContent = cam.name;
    const badge = document.createElement('span'); badge.className = 'badge'; badge.textContent = 'stale'; badge.hidden = true;
    meta.append(h, badge);
    const times = document.createElement('div'); times.className = 'times';
    const cap = document.createElement('time'); cap.className = 'cap';
    const age = document.createElement('span'); age.className = 'age';
    times.append(cap, age);
    el.append(a, meta, times);
    const card = adopt(el, cam);
    img.src = imgSrc(cam);
    return card;
  }
  function render(card, cam) {
    const prev = card.cam;
    card.cam = cam;
    if (prev.captured_ms !== cam.captured_ms || !card.img.getAttribute('src')) {
      card.img.src = imgSrc(cam); // only a new capture reloads the image
    }
    if (cam.width && cam.height) { card.img.width = cam.width; card.img.height = cam.height; }
    card.cap.textContent = localTime(cam.captured_ms);
    card.cap.dateTime = cam.captured_ms == null ? '' : new Date(cam.captured_ms).toISOString();
  }
  function tick() {
    const now = Date.now() + skew;
    for (const card of cards.values()) {
      const c = card.cam;
      const age = c.captured_ms == null ? null : now - c.captured_ms;
      const stale = age == null || age > STALE_INTERVALS * c.interval_ms;
      card.age.textContent = ageText(age);
      card.el.classList.toggle('stale', stale);
      card.badge.hidden = !stale;
    }
    empty.hidden = cards.size > 0;
  }
  function apply(data) {
    skew = data.now_ms - Date.now();
    const seen = new Set();
    let prevEl = null;
    for (const cam of data.cameras) {
      seen.add(cam.name);
      let card = cards.get(cam.name);
      if (!card) { card = build(cam); cards.set(cam.name, card); }
      render(card, cam);
      const want = prevEl ? prevEl.nextSibling : grid.firstChild;
      if (want !== card.el) grid.insertBefore(card.el, want);
      prevEl = card.el;
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) { card.el.remove(); cards.delete(name); }
    }
    tick();
  }
  function setStatus(msg, err) {
    statusEl.textContent = msg;
    statusEl.classList.toggle('err', !!err);
  }
  async function poll() {
    if (!document.hidden) {
      try {
        const ctl = new AbortController();
        const t = setTimeout(() => ctl.abort(), 10000);
        const r = await fetch('/api/cameras', { cache: 'no-store', credentials: 'same-origin',
          headers: { accept: 'application/json' }, signal: ctl.signal });
        clearTimeout(t);
        if (r.status === 401 || r.status === 403) throw new Error('access expired, reload the page');
        if (!r.ok) throw new Error('HTTP ' + r.status);
        apply(await r.json());
        lastOk = Date.now();
        setStatus('updated ' + new Date().toLocaleTimeString(), false);
      } catch (e) {
        setStatus('update failed (' + (e && e.message ? e.message : e) + '), last ok ' +
          ageText(Date.now() - lastOk), true);
      }
    }
    setTimeout(poll, POLL_MS);
  }

  for (const el of grid.querySelectorAll('.cam')) {
    const cam = init.cameras.find((c) => c.name === el.dataset.name);
    if (cam) cards.set(cam.name, adopt(el, cam)); else el.remove();
  }
  for (const card of cards.values()) render(card, card.cam);
  tick();
  setStatus('updated ' + new Date().toLocaleTimeString(), false);
  setInterval(tick, 1000);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  setTimeout(poll, POLL_MS);
})();
`;

/**
 * @param {{ cameras: import('./cameras.js').CameraInfo[], nowMs: number, nonce: string }} p
 */
export function renderPage({ cameras, nowMs, nonce }) {
  const n = escapeHtml(nonce);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>rtsnap cameras</title>
<style nonce="${n}">${CSS}</style>
</head>
<body>
<header><h1>rtsnap cameras</h1><span id="status" role="status" aria-live="polite"></span></header>
<main>
<div id="grid">
${cameras.map(renderCard).join('\n')}
</div>
<p id="empty"${cameras.length ? ' hidden' : ''}>No cameras yet. The rtsnap daemon writes <code>latest/&lt;camera&gt;</code> keys into the STILLS namespace.</p>
</main>
<script type="application/json" id="init">${scriptJson({ cameras, now_ms: nowMs })}</script>
<script nonce="${n}">${SCRIPT}</script>
</body>
</html>
`;
}
