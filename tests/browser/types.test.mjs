// The JS API's TypeScript typings (www/types/*.d.ts) are generated from the JSDoc in
// www/sdweb.js by tsc, which also type-checks the module and what it imports (cache.js,
// sha256.js). This test fails when the code does not type-check or the committed typings are
// stale (and when the page or the widget misuses the typed API); regenerate with:  cd tests/browser && node types.test.mjs --write
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TYPES = path.join(ROOT, 'www/types');
const TSC = path.join(ROOT, 'tests/browser/node_modules/typescript/bin/tsc');

function generate() {
  const out = mkdtempSync(path.join(tmpdir(), 'sdweb-types-'));
  try {
    execFileSync(process.execPath, [TSC, '--allowJs', '--checkJs', '--declaration', '--emitDeclarationOnly',
      '--strict', 'false', '--target', 'es2022', '--module', 'es2022', '--moduleResolution', 'bundler',
      '--lib', 'es2022,dom', '--skipLibCheck', '--outDir', out, path.join(ROOT, 'www/sdweb.js')], { encoding: 'utf8' });
    return Object.fromEntries(readdirSync(out).sort().map((f) => [f, readFileSync(path.join(out, f), 'utf8')]));
  } catch (e) {
    throw new Error(`tsc found type errors:\n${e.stdout || e.message}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

if (process.argv.includes('--write')) {
  for (const [file, text] of Object.entries(generate())) writeFileSync(path.join(TYPES, file), text);
} else {
  test('www/sdweb.js type-checks and its committed typings are current', () => {
    const generated = generate();
    assert.deepEqual(Object.keys(generated), ['cache.d.ts', 'sdweb.d.ts', 'sha256.d.ts']);
    for (const [file, text] of Object.entries(generated)) {
      assert.equal(readFileSync(path.join(TYPES, file), 'utf8'), text, `www/types/${file} is stale: run node types.test.mjs --write in tests/browser`);
    }
  });

  // The page (app.js, app/*.js, mask-editor.js) and the widget use the API as typed. The worker
  // is left out: it needs WebGPU's DOM types, which TypeScript's lib does not have.
  test('the page and the widget type-check against the JS API', () => {
    try {
      execFileSync(process.execPath, [TSC, '--allowJs', '--checkJs', '--noEmit', '--strict', 'false',
        '--target', 'es2022', '--module', 'es2022', '--moduleResolution', 'bundler', '--lib', 'es2022,dom,dom.iterable',
        '--skipLibCheck', path.join(ROOT, 'www/app.js'), path.join(ROOT, 'www/sd-generator.js')], { encoding: 'utf8' });
    } catch (e) {
      assert.fail(`tsc found type errors:\n${e.stdout || e.message}`);
    }
  });
}
