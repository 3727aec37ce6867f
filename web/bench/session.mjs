// A long session of the trading page against a running `fulgur demo`, measured: what the
// streams deliver, what the page renders, the main thread's long tasks, and the page's
// memory (JS heap after a forced GC, DOM nodes) at the start and at the end, so growth
// over a session shows. Prints one JSON object.
//
//   node bench/session.mjs --url http://127.0.0.1:8080 --seconds 300 [--chromium /usr/bin/chromium]
import { chromium } from 'playwright-core';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const url = arg('url', 'http://127.0.0.1:8080');
const seconds = Number(arg('seconds', '300'));
const warmupMs = 10_000;

const browser = await chromium.launch({
  executablePath: arg('chromium', '/usr/bin/chromium'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
// Counted from the first script on: animation frames the page asked for and got, and
// main-thread tasks over 50 ms.
await page.addInitScript(() => {
  window.__frames = 0;
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (cb) => raf((t) => { window.__frames += 1; cb(t); });
  window.__long = [];
  new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__long.push(e.duration))).observe({ type: 'longtask', buffered: true });
});
const cdp = await page.context().newCDPSession(page);
await cdp.send('Network.enable');
await cdp.send('Performance.enable');
let frames = 0;
cdp.on('Network.webSocketFrameReceived', () => { frames += 1; });
const errors = [];
page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

async function sample() {
  await cdp.send('HeapProfiler.collectGarbage');
  const heap = await cdp.send('Runtime.getHeapUsage');
  const { metrics } = await cdp.send('Performance.getMetrics');
  const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
  const page_ = await page.evaluate(() => ({ renders: window.__frames, long: window.__long.slice() }));
  return {
    t: Date.now(),
    heapUsedBytes: heap.usedSize,
    domNodes: m.Nodes,
    listeners: m.JSEventListeners,
    // Seconds of the page's main thread: all tasks, and script, layout and style within.
    task: m.TaskDuration,
    script: m.ScriptDuration,
    layout: m.LayoutDuration,
    style: m.RecalcStyleDuration,
    messages: frames,
    ...page_,
  };
}

await page.goto(`${url}/#BTCUSDT`);
await page.waitForSelector('#book[data-synced="true"]');
await page.waitForTimeout(warmupMs);
const start = await sample();
const heapSeries = [];
const end_ = Date.now() + seconds * 1000;
while (Date.now() < end_) {
  await page.waitForTimeout(Math.min(30_000, end_ - Date.now()));
  const s = await sample();
  heapSeries.push(Math.round(s.heapUsedBytes / 1024));
}
const end = await sample();
const secs = (end.t - start.t) / 1000;
const long = end.long.slice(start.long.length);
console.log(JSON.stringify({
  seconds: Math.round(secs),
  ws_messages_per_s: Math.round((end.messages - start.messages) / secs),
  renders_per_s: Math.round((end.renders - start.renders) / secs),
  // Milliseconds of main-thread work per second of session (1000 = one core busy).
  main_thread_ms_per_s: Math.round(((end.task - start.task) * 1000) / secs),
  script_ms_per_s: Math.round(((end.script - start.script) * 1000) / secs),
  layout_ms_per_s: Math.round(((end.layout - start.layout) * 1000) / secs),
  style_ms_per_s: Math.round(((end.style - start.style) * 1000) / secs),
  long_tasks: long.length,
  long_task_ms_max: Math.round(Math.max(0, ...long)),
  heap_kib_start: Math.round(start.heapUsedBytes / 1024),
  heap_kib_end: Math.round(end.heapUsedBytes / 1024),
  heap_kib_every_30s: heapSeries,
  dom_nodes_start: start.domNodes,
  dom_nodes_end: end.domNodes,
  listeners_start: start.listeners,
  listeners_end: end.listeners,
  console_errors: errors.length,
}, null, 1));
await browser.close();
