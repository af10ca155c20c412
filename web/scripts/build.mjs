// `npm run build`: regenerates the worklet bundle, typechecks everything (tsc, strict), and
// bundles the demo page into exactly two files, dist/index.html (CSS inline) and dist/app.js
// (the whole client, worklets included). The Rust server embeds both with include_bytes!, so the
// output is deterministic: no timestamps, no absolute paths, same input → same bytes. CI checks
// freshness with `npm run build && git diff --exit-code web/dist`.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WORKLET_GEN, workletModule } from './worklets.mjs';

const web = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const dist = path.join(web, 'dist');

function writeIfChanged(file, text) {
  let old = null;
  try {
    old = readFileSync(file, 'utf8');
  } catch {
    // new file
  }
  if (old !== text) writeFileSync(file, text);
  console.log(`${old === text ? 'unchanged' : 'wrote    '} ${path.relative(web, file)} (${Buffer.byteLength(text)} bytes)`);
}

// 1. The AudioWorklet processors, as a string module the client loads from a Blob URL.
writeIfChanged(WORKLET_GEN, await workletModule());

// 2. Typecheck (strict) the client and the demo, then the tests.
for (const project of ['tsconfig.json', 'tsconfig.test.json']) {
  execFileSync(process.execPath, [path.join(web, 'node_modules/typescript/bin/tsc'), '-p', path.join(web, project), '--noEmit'], {
    stdio: 'inherit',
    cwd: web,
  });
}
console.log('typecheck ok');

// 3. The page script.
const r = await build({
  entryPoints: [path.join(web, 'demo/app.ts')],
  bundle: true,
  write: false,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  minify: false,
  legalComments: 'none',
  charset: 'utf8',
  sourcemap: false,
  tsconfig: path.join(web, 'tsconfig.json'),
  logLevel: 'warning',
  absWorkingDir: web,
});
mkdirSync(dist, { recursive: true });
writeIfChanged(path.join(dist, 'app.js'), r.outputFiles[0].text);

// 4. The page: demo/index.html with demo/style.css inlined.
const html = readFileSync(path.join(web, 'demo/index.html'), 'utf8');
const css = readFileSync(path.join(web, 'demo/style.css'), 'utf8');
const link = '<link rel="stylesheet" href="style.css">';
if (!html.includes(link)) throw new Error(`demo/index.html must contain ${link}`);
writeIfChanged(path.join(dist, 'index.html'), html.replace(link, `<style>\n${css.trimEnd()}\n</style>`));
