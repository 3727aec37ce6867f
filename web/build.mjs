// Builds the page into the directory named on the command line (default `dist`):
// `index.html` and `assets/` with content-hashed names, so the server can let browsers
// keep the assets forever and only re-check `index.html`.
import * as esbuild from 'esbuild';
import { readFile, rm, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

const out = path.resolve(process.argv[2] ?? 'dist');
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome111', 'firefox115', 'safari16'],
  outdir: path.join(out, 'assets'),
  entryNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'eof',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((f) => path.basename(f));
const js = outputs.find((f) => f.endsWith('.js'));
const css = outputs.find((f) => f.endsWith('.css'));
if (!js || !css) throw new Error(`build made no script or no stylesheet: ${outputs}`);
const html = (await readFile('index.html', 'utf8'))
  .replace('%APP_JS%', `assets/${js}`)
  .replace('%APP_CSS%', `assets/${css}`);
await writeFile(path.join(out, 'index.html'), html);
console.log(`web: built ${out} (${outputs.join(', ')})`);
