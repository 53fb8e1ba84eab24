// Shared setup for the browser tests: Debian's Chromium, headless, WebGPU through SwiftShader
// (f32 only, slow: tests use the tiny fixture models at 32-64 px).

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.SDWEB_CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
  '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-unsafe-swiftshader',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];

export function launch(extraArgs = []) {
  return chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...extraArgs] });
}

// Browser console lines show up in the test output, which is where a wasm panic would be.
export function logConsole(page, tag = 'page') {
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[${tag} ${m.type()}] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${tag} pageerror] ${e.message}`));
}
