// Builds dist/ from src/index.js with esbuild (the only build dependency):
//   dist/crosswire.mjs     ES module
//   dist/crosswire.cjs     CommonJS: require() returns the class, with every export on it
//                          (so both `const C = require(..)` and `const { WebSocketConnector } = require(..)` work)
//   dist/crosswire.min.js  minified <script> build: globals `WebSocketConnector` and `crosswire`
// Prints the minified and gzipped size of the <script> build.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const common = {
  entryPoints: [join(root, 'src/index.js')],
  bundle: true,
  target: 'es2017',
  logLevel: 'warning',
  legalComments: 'none',
};

await build({ ...common, format: 'esm', outfile: join(root, 'dist/crosswire.mjs') });
await build({
  ...common,
  format: 'iife',
  globalName: 'crosswire',
  outfile: join(root, 'dist/crosswire.cjs'),
  footer: { js: 'module.exports = Object.assign(crosswire.WebSocketConnector, crosswire);' },
});
await build({
  ...common,
  format: 'iife',
  globalName: 'crosswire',
  minify: true,
  outfile: join(root, 'dist/crosswire.min.js'),
  footer: { js: 'var WebSocketConnector=crosswire.WebSocketConnector;' },
});

const min = readFileSync(join(root, 'dist/crosswire.min.js'));
console.log(`dist/crosswire.min.js: ${min.length} bytes minified, ${gzipSync(min, { level: 9 }).length} bytes gzipped`);
