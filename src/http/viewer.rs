//! `/`: the local viewer. A grid of every camera's latest still, its name,
//! capture time, age and state, rendered on the server (so it works without
//! JavaScript) and kept fresh by a small inline script that polls
//! `/api/status` and reloads an image only when its `seq` changed.
//!
//! Same look as the cloud viewer (worker/src/page.js). No external
//! resources; the Content-Security-Policy allows only same-origin images and
//! fetches and the nonce'd inline style and script. Every name and message
//! is escaped; the script builds nodes with `textContent` only.

use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::Value;

use super::status::{document, HEALTHY_INTERVALS};
use super::HttpState;

/// Escapes text for HTML content and double- or single-quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that cannot end a `<script>` element or open a comment in it.
fn script_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn nonce() -> String {
    let mut b = [0u8; 18];
    getrandom::getrandom(&mut b).expect("the OS has no randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn badge_text(state: &str) -> &str {
    match state {
        "backing_off" => "backing off",
        other => other,
    }
}

fn still_path(name: &str) -> String {
    // Camera names are limited to [A-Za-z0-9._-], which need no
    // percent-encoding; escape_html covers the attribute anyway.
    format!("/snapshot/{name}.jpg")
}

fn card(out: &mut String, cam: &Value) {
    let s = |k: &str| cam[k].as_str().unwrap_or("");
    let name = escape_html(s("name"));
    let state = s("state");
    let detail = cam["state_detail"].as_str();
    let seq = cam["seq"].as_u64();
    let (w, h) = (
        cam["width"].as_u64().unwrap_or(16),
        cam["height"].as_u64().unwrap_or(9),
    );
    let path = escape_html(&still_path(s("name")));
    let src = match seq {
        Some(seq) => format!(" src=\"{path}?v={seq}\""),
        None => String::new(),
    };
    let iso = cam["captured_ms"]
        .as_u64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        })
        .unwrap_or_default();
    let _ = write!(
        out,
        "<article class=\"cam{nostill}\" data-name=\"{name}\">\n\
         <a class=\"shot\" href=\"{path}\" target=\"_blank\" rel=\"noopener noreferrer\">\
         <img{src} alt=\"{name}\" width=\"{w}\" height=\"{h}\"></a>\n\
         <div class=\"meta\"><h2 class=\"name\">{name}</h2>\
         <span class=\"badge st-{state}\">{badge}</span></div>\n\
         <div class=\"why\"{why_hidden}>{why}</div>\n\
         <div class=\"times\"><time class=\"cap\" datetime=\"{iso}\">{cap}</time>\
         <span class=\"age\"></span></div>\n</article>\n",
        nostill = if seq.is_none() { " nostill" } else { "" },
        state = escape_html(state),
        badge = escape_html(badge_text(state)),
        why_hidden = if detail.is_none() { " hidden" } else { "" },
        why = escape_html(detail.unwrap_or("")),
        cap = if iso.is_empty() {
            "no still yet".to_owned()
        } else {
            escape_html(&iso.replace('T', " ").replace('Z', " UTC"))
        },
    );
}

const CSS: &str = r#"
:root{color-scheme:dark;--bg:#111418;--card:#1b2027;--fg:#e8eaed;--dim:#9aa3ad;--bad:#ff5d4f;--ok:#4fc36b;--warn:#e0a526}
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
.shot{position:relative;display:block;background:#000;aspect-ratio:16/9}
.shot img{display:block;width:100%;height:100%;object-fit:contain}
.shot img:not([src]){display:none}
.cam.nostill .shot::after{content:"no still yet";position:absolute;inset:0;display:flex;align-items:center;justify-content:center;color:var(--dim)}
.cam.stale img{opacity:.6}
.cam.broken .shot{outline:2px dashed var(--bad);outline-offset:-6px}
.meta{display:flex;align-items:center;gap:.5rem;padding:.45rem .7rem 0}
.name{font-size:1rem;margin:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:1}
.badge{color:#fff;font-size:.75rem;font-weight:700;text-transform:uppercase;letter-spacing:.05em;padding:.1rem .45rem;border-radius:4px;background:#4a525c}
.badge.st-streaming{background:#2f7d44}
.badge.st-backing_off{background:var(--bad)}
.badge.st-unsupported{background:var(--warn);color:#111}
.why{padding:.2rem .7rem 0;color:var(--bad);font-size:.8rem;overflow-wrap:anywhere}
.why[hidden]{display:none}
.times{display:flex;justify-content:space-between;gap:.5rem;padding:.15rem .7rem .55rem;color:var(--dim);font-size:.85rem;font-variant-numeric:tabular-nums}
.cam.stale .age{color:var(--bad);font-weight:600}
#empty{color:var(--dim);padding:2rem 1rem;text-align:center}
#empty[hidden]{display:none}
@media (max-width:480px){header{padding:.6rem .75rem}main{padding:0 .4rem .75rem}#grid{gap:.5rem}}
"#;

/// Runs in the browser; builds nodes with textContent and properties only.
const SCRIPT: &str = r#"
(() => {
  'use strict';
  const POLL_MS = 3000, STALE_INTERVALS = __STALE__;
  const grid = document.getElementById('grid');
  const empty = document.getElementById('empty');
  const statusEl = document.getElementById('status');
  const init = JSON.parse(document.getElementById('init').textContent);
  let skew = init.now_ms - Date.now();
  let lastOk = Date.now();
  const cards = new Map();
  const BADGE = { backing_off: 'backing off' };

  function ageText(ms) {
    if (ms == null) return '';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return s + ' s ago';
    const m = Math.round(s / 60);
    if (m < 90) return m + ' min ago';
    const h = Math.round(m / 60);
    if (h < 36) return h + ' h ago';
    return Math.round(h / 24) + ' d ago';
  }
  function localTime(ms) {
    if (ms == null) return 'no still yet';
    return new Date(ms).toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' });
  }
  function stillPath(cam) { return '/snapshot/' + encodeURIComponent(cam.name) + '.jpg'; }
  function watchImg(card) {
    const img = card.el.querySelector('img');
    img.addEventListener('load', () => { img.dataset.loaded = '1'; card.el.classList.remove('broken'); });
    img.addEventListener('error', () => { if (img.getAttribute('src')) { img.dataset.loaded = '0'; card.el.classList.add('broken'); } });
    if (img.complete && img.naturalWidth > 0) img.dataset.loaded = '1';
    card.img = img;
  }
  // The first still goes straight in; later ones load off-screen and replace
  // the shown image once decoded, so a refresh never blanks a picture.
  function swapIn(card, src) {
    const img = card.img;
    if (!img.getAttribute('src')) { img.src = src; return; }
    const next = new Image();
    next.alt = img.alt;
    next.width = img.width; next.height = img.height;
    next.addEventListener('load', () => {
      if (card.img !== img || !img.isConnected) return;
      next.dataset.loaded = '1';
      img.replaceWith(next);
      card.img = next;
      card.el.classList.remove('broken');
      next.addEventListener('error', () => { next.dataset.loaded = '0'; card.el.classList.add('broken'); });
    }, { once: true });
    next.addEventListener('error', () => { if (card.img === img) card.el.classList.add('broken'); }, { once: true });
    next.src = src;
  }
  function adopt(el, cam) {
    const card = { el, cam, shown: cam.seq };
    card.cap = el.querySelector('.cap');
    card.age = el.querySelector('.age');
    card.badge = el.querySelector('.badge');
    card.why = el.querySelector('.why');
    watchImg(card);
    return card;
  }
  function build(cam) {
    const el = document.createElement('article');
    el.className = 'cam';
    el.dataset.name = cam.name;
    const a = document.createElement('a');
    a.className = 'shot'; a.href = stillPath(cam);
    a.target = '_blank'; a.rel = 'noopener noreferrer';
    const img = document.createElement('img');
    img.alt = cam.name;
    img.width = cam.width || 16; img.height = cam.height || 9;
    a.appendChild(img);
    const meta = document.createElement('div'); meta.className = 'meta';
    const h = document.createElement('h2'); h.className = 'name'; h.textContent = cam.name;
    const badge = document.createElement('span'); badge.className = 'badge';
    meta.append(h, badge);
    const why = document.createElement('div'); why.className = 'why'; why.hidden = true;
    const times = document.createElement('div'); times.className = 'times';
    const cap = document.createElement('time'); cap.className = 'cap';
    const age = document.createElement('span'); age.className = 'age';
    times.append(cap, age);
    el.append(a, meta, why, times);
    const card = adopt(el, cam);
    card.shown = null;
    return card;
  }
  function render(card, cam) {
    card.cam = cam;
    if (cam.seq != null && cam.seq !== card.shown) {
      card.shown = cam.seq;
      swapIn(card, stillPath(cam) + '?v=' + cam.seq); // only a new still reloads
    }
    card.el.classList.toggle('nostill', cam.seq == null);
    if (cam.width && cam.height) { card.img.width = cam.width; card.img.height = cam.height; }
    card.badge.className = 'badge st-' + cam.state;
    card.badge.textContent = BADGE[cam.state] || cam.state;
    card.why.textContent = cam.state_detail || '';
    card.why.hidden = !cam.state_detail;
    card.cap.textContent = localTime(cam.captured_ms);
    card.cap.dateTime = cam.captured_ms == null ? '' : new Date(cam.captured_ms).toISOString();
  }
  function tick() {
    const now = Date.now() + skew;
    for (const card of cards.values()) {
      const c = card.cam;
      const age = c.captured_ms == null ? null : now - c.captured_ms;
      const stale = age != null && age > STALE_INTERVALS * c.interval_ms;
      card.age.textContent = ageText(age) + (stale ? ' (stale)' : '');
      card.el.classList.toggle('stale', stale);
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
  function summary(data) {
    const up = data.cameras.filter((c) => c.state === 'streaming').length;
    return up + ' of ' + data.cameras.length + ' streaming, updated ' + new Date().toLocaleTimeString();
  }
  async function poll() {
    if (!document.hidden) {
      try {
        const ctl = new AbortController();
        const t = setTimeout(() => ctl.abort(), 10000);
        const r = await fetch('/api/status', { cache: 'no-store', credentials: 'same-origin',
          headers: { accept: 'application/json' }, signal: ctl.signal });
        clearTimeout(t);
        if (r.status === 401) throw new Error('login expired, reload the page');
        if (!r.ok) throw new Error('HTTP ' + r.status);
        const data = await r.json();
        apply(data);
        lastOk = Date.now();
        setStatus(summary(data), false);
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
  setStatus(summary(init), false);
  setInterval(tick, 1000);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  setTimeout(poll, POLL_MS);
})();
"#;

/// The page for the given status document and CSP nonce.
pub fn render(doc: &Value, nonce: &str) -> String {
    let cameras = doc["cameras"].as_array().cloned().unwrap_or_default();
    let mut cards = String::new();
    for cam in &cameras {
        card(&mut cards, cam);
    }
    let init = serde_json::json!({ "now_ms": doc["now_ms"], "cameras": cameras });
    let n = escape_html(nonce);
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>rtsnap cameras</title>\n\
         <style nonce=\"{n}\">{CSS}</style>\n</head>\n<body>\n\
         <header><h1>rtsnap cameras</h1><span id=\"status\" role=\"status\" aria-live=\"polite\"></span></header>\n\
         <main>\n<div id=\"grid\">\n{cards}</div>\n\
         <p id=\"empty\"{empty_hidden}>No cameras are configured.</p>\n</main>\n\
         <script type=\"application/json\" id=\"init\">{init}</script>\n\
         <script nonce=\"{n}\">{script}</script>\n</body>\n</html>\n",
        empty_hidden = if cameras.is_empty() { "" } else { " hidden" },
        init = script_json(&init),
        script = SCRIPT.replace("__STALE__", &HEALTHY_INTERVALS.to_string()),
    )
}

/// GET `/`.
pub async fn page(State(state): State<Arc<HttpState>>) -> Response {
    let nonce = nonce();
    let body = render(&document(&state), &nonce);
    let csp = format!(
        "default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'nonce-{nonce}'; \
         script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut r = axum::response::Html(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).expect("ASCII"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_reasons_are_escaped() {
        let doc = serde_json::json!({"now_ms": 1, "cameras": [{
            "name": "<b>x", "state": "backing_off", "state_detail": "\"</script><i>",
            "seq": null, "captured_ms": null, "interval_ms": 5000,
        }]});
        let page = render(&doc, "abc");
        assert!(!page.contains("<b>x"), "{page}");
        assert!(!page.contains("</script><i>"), "{page}");
        assert!(page.contains("&lt;b&gt;x"), "{page}");
        assert!(page.contains("<style nonce=\"abc\">"));
    }
}
