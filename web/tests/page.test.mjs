// The trading page in Debian's Chromium, driven by Playwright, against a running
// `fulgur demo` (its market maker and taker keep every book busy). `tests/web.rs` starts
// the demo and runs this file with FULGUR_URL, CHROMIUM and SCREENSHOT set; without
// FULGUR_URL these tests are skipped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.FULGUR_URL;
const skip = BASE ? false : 'FULGUR_URL is not set (tests/web.rs sets it)';
const RESOURCE_400 = /Failed to load resource: the server responded with a status of 400/;

let browser;
let page;
let reference;
const errors = []; // console errors and uncaught exceptions of the page, in order

before(async () => {
  if (skip) return;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    // No sandbox as root in CI; no background networking (the machine's network is closed
    // and Chromium's calls home would fail).
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
  page = await context.newPage();
  // Generous: a shared CI machine may be slow; the waits end as soon as the page is there.
  page.setDefaultTimeout(60_000);
  page.setDefaultNavigationTimeout(120_000);
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
});

after(async () => {
  if (skip) return;
  if (process.env.SCREENSHOT) {
    await mkdir(path.dirname(process.env.SCREENSHOT), { recursive: true });
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }
  await browser.close();
});

/** Fills the order form and sends it; the message it shows. */
async function order({ side, type, price, quantity }) {
  await page.click(side === 'BUY' ? '#side-buy' : '#side-sell');
  await page.selectOption('#order-type', type);
  if (price !== undefined) await page.fill('#price', price);
  await page.fill('#quantity', quantity);
  const before = await page.locator('#order-message').textContent();
  await page.click('#submit-order');
  // The same text can come twice in a row; wait for the button to be free again too.
  await page.waitForFunction(
    (b) => {
      const m = document.querySelector('#order-message');
      return !document.querySelector('#submit-order').disabled && m.textContent !== '' && m.textContent !== b;
    },
    before,
  );
  return {
    kind: await page.locator('#order-message').getAttribute('data-kind'),
    text: await page.locator('#order-message').textContent(),
  };
}

/** The levels the page's book shows now, with the update id they belong to. */
function shownBook() {
  return page.evaluate(() => {
    const book = document.querySelector('#book');
    const side = (id) =>
      [...document.querySelectorAll(`#${id} .level`)]
        .filter((r) => r.dataset.price)
        .map((r) => [Number(r.children[1].textContent), Number(r.children[2].textContent)]);
    return {
      id: Number(book.dataset.updateId),
      synced: book.dataset.synced === 'true',
      bids: side('bids'),
      asks: side('asks').reverse(), // shown best-last
    };
  });
}

test('the page loads with every market and no console errors', { skip }, async () => {
  await page.goto(`${BASE}/#BTCUSDT`);
  await page.waitForSelector('#book[data-synced="true"]');
  const markets = await page.$$eval('#market option', (os) => os.map((o) => [o.value, o.textContent]));
  assert.deepEqual(
    markets.map((m) => m[0]).sort(),
    ['BTCUSDT', 'ETHUSDT', 'TBILLUSDC', 'USDCUSDT'],
  );
  // The RWA pair says which permission it needs.
  assert.match(markets.find((m) => m[0] === 'TBILLUSDC')[1], /RWA · needs TRD_GRP_000/);
  // Trades, ticker, balances and the account stream arrive.
  await page.waitForSelector('#tape .trade');
  await page.waitForFunction(() => document.querySelector('#last').textContent !== '–');
  await page.waitForSelector('#balances tr[data-asset="USDT"]');
  await page.waitForSelector('#status-user.live');
  await page.waitForSelector('#status-market.live');
  await page.waitForTimeout(1000);
  assert.deepEqual(errors, []);
});

test('the RWA market shows the permission the account holds', { skip }, async () => {
  await page.selectOption('#market', 'TBILLUSDC');
  try {
    await page.waitForSelector('#book[data-symbol="TBILLUSDC"][data-synced="true"]');
    await page.waitForSelector('#market-info .perm.ok');
    const badges = await page.locator('#market-info').textContent();
    assert.match(badges, /RWA/);
    assert.match(badges, /needs TRD_GRP_000 · granted/);
  } finally {
    // The tests after this one trade BTCUSDT.
    await page.selectOption('#market', 'BTCUSDT');
  }
  await page.waitForSelector('#book[data-symbol="BTCUSDT"][data-synced="true"]');
  assert.doesNotMatch(await page.locator('#market-info').textContent(), /needs/);
});

test('the book shows the levels of REST depth', { skip }, async () => {
  // The book changes every few milliseconds, so a REST answer and the page are only
  // comparable at the same update id. A second page keeps a book the plain way (REST
  // depth, then the same diff stream the page uses) and remembers it at every update id;
  // the page's book must equal it at whatever id the page shows.
  reference = await page.context().newPage();
  await reference.goto(`${BASE}/api/v3/ping`);
  await reference.evaluate(
    (n) =>
      new Promise((ready) => {
        const states = (window.states = new Map());
        const buffer = [];
        let book = null;
        const take = () => {
          const side = (m, desc) =>
            [...m.entries()]
              .map(([p, q]) => [Number(p), Number(q)])
              .sort((a, b) => (desc ? b[0] - a[0] : a[0] - b[0]))
              .slice(0, n);
          states.set(book.id, { bids: side(book.bids, true), asks: side(book.asks, false) });
        };
        const apply = (m) => {
          if (m.u <= book.id) return;
          // The first applied message may straddle the snapshot's id; none may skip one.
          if (m.U > book.id + 1) throw new Error(`gap: ${book.id} then ${m.U}`);
          for (const [p, q] of m.b) Number(q) ? book.bids.set(p, q) : book.bids.delete(p);
          for (const [p, q] of m.a) Number(q) ? book.asks.set(p, q) : book.asks.delete(p);
          book.id = m.u;
          take();
        };
        const ws = new WebSocket(`ws://${location.host}/ws/btcusdt@depth@100ms`);
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          if (book) apply(m);
          else buffer.push(m);
        };
        ws.onopen = async () => {
          const snap = await (await fetch('/api/v3/depth?symbol=BTCUSDT&limit=1000')).json();
          book = { id: snap.lastUpdateId, bids: new Map(snap.bids), asks: new Map(snap.asks) };
          take();
          buffer.forEach(apply);
          ready();
        };
      }),
    10,
  );
  // A page behind another gets no animation frames: the page under test goes in front.
  await page.bringToFront();
  // The page's book is sampled as it is shown, and each sample compared once the
  // reference has read that far (the reference, in the background, may lag the page).
  let compared = 0;
  const pending = [];
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && compared < 5) {
    const shown = await shownBook();
    if (shown.synced) pending.push(shown);
    const { upTo, states } = await reference.evaluate(
      (ids) => ({
        upTo: Math.max(...window.states.keys()),
        states: ids.map((id) => window.states.get(id) ?? null),
      }),
      pending.map((p) => p.id),
    );
    for (let i = pending.length - 1; i >= 0; i--) {
      const sample = pending[i];
      if (sample.id > upTo) continue; // the reference has not read that far yet
      pending.splice(i, 1);
      const want = states[i];
      // A book shown straight from its REST snapshot may sit between two messages' ids.
      if (!want) continue;
      assert.deepEqual({ bids: sample.bids, asks: sample.asks }, want, `at update id ${sample.id}`);
      assert.ok(sample.bids.length > 0 && sample.asks.length > 0);
      compared += 1;
    }
    await page.waitForTimeout(150);
  }
  await reference.close();
  assert.ok(compared >= 5, `the page's update ids never met the reference's (${compared} compared)`);
});

let restingId;
let restingPrice;

test('a limit order placed through the form shows in open orders and in the book', { skip }, async () => {
  // 1% under the best bid: inside the price band, below the demo maker's five levels.
  const best = (await shownBook()).bids[0][0];
  restingPrice = (Math.floor(best * 0.99 * 100) / 100).toFixed(2);
  const m = await order({ side: 'BUY', type: 'LIMIT', price: restingPrice, quantity: '0.00123' });
  assert.equal(m.kind, 'ok', m.text);
  const row = page.locator('#open-orders tr[data-order-id]', { hasText: restingPrice });
  await row.waitFor();
  restingId = await row.getAttribute('data-order-id');
  assert.match(await row.textContent(), /BUY.*Limit.*0\.00123/);
  // The book has the level, with at least our size (someone else may rest there too).
  await page.waitForFunction(
    (p) => [...document.querySelectorAll('#bids .level')].some((r) => r.dataset.price === p && Number(r.children[2].textContent) >= 0.00123),
    restingPrice,
  );
  // The balance shows the hold: 0.00123 × price USDT locked.
  await page.waitForFunction(() => Number(document.querySelector('#balances tr[data-asset="USDT"] td:nth-child(3)').textContent) > 0);
});

test('cancelling removes it from open orders and from the book', { skip }, async () => {
  await page.click(`#open-orders button.cancel[data-order-id="${restingId}"]`);
  await page.locator(`#open-orders tr[data-order-id="${restingId}"]`).waitFor({ state: 'detached' });
  await page.locator(`#order-history tr[data-order-id="${restingId}"][data-status="CANCELED"]`).waitFor();
  await page.waitForFunction(
    (p) => ![...document.querySelectorAll('#bids .level')].some((r) => r.dataset.price === p),
    restingPrice,
  );
});

test('a crossing order trades: the trade is in the tape and the fill in history', { skip }, async () => {
  // Every trade id the tape ever shows (it scrolls fast with the demo flow running).
  await page.evaluate(() => {
    window.tapeIds = new Set();
    const tape = document.querySelector('#tape');
    const seen = () => tape.querySelectorAll('.trade').forEach((r) => window.tapeIds.add(r.dataset.tradeId));
    seen();
    new MutationObserver(seen).observe(tape, { childList: true });
  });
  const fillsBefore = await page.$$eval('#fills tr[data-trade-id]', (rs) => rs.map((r) => r.dataset.tradeId));
  // A buy 0.2% over the best ask takes what is there. (A market order could meet the
  // instant between the demo maker's cancel and its new quotes and expire unfilled; this
  // one would then rest and fill against the next quotes.)
  const ask = (await shownBook()).asks[0][0];
  const price = (Math.ceil(ask * 1.002 * 100) / 100).toFixed(2);
  const m = await order({ side: 'BUY', type: 'LIMIT', price, quantity: '0.00050' });
  assert.equal(m.kind, 'ok', m.text);
  const fill = page.locator('#fills tr[data-trade-id]').first();
  await page.waitForFunction(
    (b) => [...document.querySelectorAll('#fills tr[data-trade-id]')].some((r) => !b.includes(r.dataset.tradeId)),
    fillsBefore,
  );
  const tradeId = await fill.getAttribute('data-trade-id');
  assert.match(await fill.textContent(), /BUY/);
  await page.waitForFunction((id) => window.tapeIds.has(id), tradeId);
  // The filled order is in the order history.
  const orderId = await fill.getAttribute('data-order-id');
  await page.locator(`#order-history tr[data-order-id="${orderId}"][data-status="FILLED"]`).waitFor();
});

test("the page checks the market's rules before sending", { skip }, async () => {
  const m = await order({ side: 'BUY', type: 'LIMIT', price: '90000.001', quantity: '0.001' });
  assert.equal(m.kind, 'error');
  assert.match(m.text, /price must be a multiple of 0.01 USDT/);
  const n = await order({ side: 'BUY', type: 'LIMIT', price: '90000', quantity: '0.00001' });
  assert.equal(n.kind, 'error');
  assert.match(n.text, /below the market's minimum of 5 USDT/);
  assert.deepEqual(errors, [], 'nothing was sent, so nothing failed');
});

test("an order the exchange rejects (below min notional) shows the exchange's message", { skip }, async () => {
  // The exchange values a market order at its last trade price: its check, not the page's.
  const m = await order({ side: 'BUY', type: 'MARKET', quantity: '0.00001' });
  assert.equal(m.kind, 'error');
  assert.match(m.text, /breaks one of the market's rules/);
  assert.match(m.text, /Filter failure: NOTIONAL \(code -1013\)/);
  // The only console error is the browser's note of that HTTP 400.
  assert.ok(errors.length > 0 && errors.every((e) => RESOURCE_400.test(e)), errors.join('\n'));
  errors.length = 0;
});

test('the depth chart and the candles are drawn', { skip }, async () => {
  // A canvas counts as drawn when some of its pixels are neither transparent nor the
  // panel's background.
  const drawn = (selector) =>
    page.$$eval(selector, (canvases) =>
      canvases.map((c) => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
          const bg = d[i] === 0x11 && d[i + 1] === 0x16 && d[i + 2] === 0x1c;
          if (d[i + 3] !== 0 && !bg) n += 1;
        }
        return n;
      }),
    );
  const depth = await drawn('#depth');
  assert.ok(depth[0] > 500, `depth chart pixels: ${depth}`);
  // lightweight-charts draws on several canvases; the candles' pane must show bars in the
  // up or down colour.
  await page.waitForFunction(() => {
    for (const c of document.querySelectorAll('#candles canvas')) {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        const up = d[i] === 0x26 && d[i + 1] === 0xa6 && d[i + 2] === 0x9a;
        const down = d[i] === 0xef && d[i + 1] === 0x53 && d[i + 2] === 0x50;
        if (up || down) return true;
      }
    }
    return false;
  });
  const candles = await drawn('#candles canvas');
  assert.ok(Math.max(...candles) > 500, `candle canvas pixels: ${candles}`);
  assert.deepEqual(errors, []);
});

test('the lists stay bounded while the flow runs', { skip }, async () => {
  // The demo's taker trades several times a second: the tape fills up and stays at 40.
  await page.waitForFunction(() => document.querySelectorAll('#tape .trade').length === 40);
  await page.waitForTimeout(1000);
  assert.equal(await page.locator('#tape .trade').count(), 40);
  assert.ok((await page.locator('#bids .level').count()) <= 10);
  assert.ok((await page.locator('#fills tr').count()) <= 100);
});
