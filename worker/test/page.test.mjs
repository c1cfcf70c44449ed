// Escaping in the page template, independent of the name filter in front of it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderPage, escapeHtml } from '../src/page.js';

test('escapeHtml escapes the five HTML specials', () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
});

test('names that could break out of markup or the JSON block are escaped', () => {
  const nasty = `"><script>alert(1)</script></script><!--'&`;
  const html = renderPage({
    nowMs: 1_800_000_000_000,
    nonce: 'abc',
    cameras: [{ name: nasty, captured_ms: 1_800_000_000_000, age_ms: 0, width: 1, height: 1, bytes: 1, interval_ms: 5000, stale: false }],
  });
  assert.ok(!html.includes('<script>alert(1)'), 'no raw script tag');
  assert.ok(!html.includes('</script></script>'), 'JSON block cannot be closed early');
  assert.ok(!html.includes('<!--'), 'no comment opener');
  assert.match(html, /data-name="&quot;&gt;&lt;script&gt;/);
  // The JSON block still round-trips to the original name.
  const json = /<script type="application\/json" id="init">([\s\S]*?)<\/script>/.exec(html)[1];
  assert.equal(JSON.parse(json).cameras[0].name, nasty);
  // Exactly two real <script> elements: the data block and the nonce'd code.
  assert.equal((html.match(/<script/g) || []).length, 2);
});
