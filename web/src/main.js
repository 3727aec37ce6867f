// Fulgur's trading page. Everything it shows comes through the same Binance-compatible API
// any bot uses: `exchangeInfo`, REST depth + `@depth@100ms`, `klines` + `@kline_1m`,
// `@trade`, `@ticker`, signed REST for orders and the account, and a listen key's user data
// stream. Messages only change state; one animation frame draws what changed since the
// last, so a busy book costs one render per frame however many messages arrive.
import './style.css';
import { ApiError, Rest } from './api.js';
import { DepthBook } from './book.js';
import { Candles } from './candles.js';
import { DepthChart } from './depthchart.js';
import { fixed, trim } from './decimal.js';
import { checkOrder, marketRules } from './rules.js';

const BOOK_ROWS = 10;
const TAPE_ROWS = 40;
const HISTORY_ROWS = 100;
const KEEPALIVE_MS = 30 * 60 * 1000;
const TERMINAL = new Set(['FILLED', 'CANCELED', 'EXPIRED', 'EXPIRED_IN_MATCH', 'REJECTED']);

const rest = new Rest();
const app = document.getElementById('app');
app.innerHTML = `
<header>
  <div class="brand">Fulgur</div>
  <label class="market">Market <select id="market"></select></label>
  <div id="market-info" class="badges"></div>
  <div id="ticker" class="ticker">
    <div><span class="k">Last</span> <span id="last">–</span></div>
    <div><span class="k">24h</span> <span id="change">–</span></div>
    <div><span class="k">High</span> <span id="high">–</span></div>
    <div><span class="k">Low</span> <span id="low">–</span></div>
    <div><span class="k">Volume</span> <span id="volume">–</span></div>
  </div>
  <div class="status"><span id="status-market" class="dot">market</span><span id="status-user" class="dot">account</span></div>
</header>
<main>
  <section class="panel book-panel">
    <h2>Order book</h2>
    <div class="book-head"><span>Price</span><span>Size</span><span>Total</span></div>
    <div id="book" data-update-id="0">
      <div id="asks" class="side asks"></div>
      <div id="spread" class="spread"><span id="book-last">–</span><span id="spread-value"></span></div>
      <div id="bids" class="side bids"></div>
    </div>
    <h2>Depth</h2>
    <canvas id="depth"></canvas>
  </section>
  <section class="panel chart-panel">
    <h2>Candles <span class="sub">1m</span></h2>
    <div id="candles"></div>
  </section>
  <section class="panel trade-panel">
    <form id="key-panel" hidden>
      <p>No demo key on this server. Trade with an API key of your own (kept in this tab only):</p>
      <input id="key-api" placeholder="API key" autocomplete="off">
      <input id="key-secret" placeholder="Secret key" type="password" autocomplete="off">
      <button type="submit" id="key-use">Use key</button>
    </form>
    <form id="order-form" novalidate>
      <div class="sides">
        <button type="button" id="side-buy" class="buy active">Buy</button>
        <button type="button" id="side-sell" class="sell">Sell</button>
      </div>
      <label>Type <select id="order-type">
        <option value="LIMIT">Limit</option>
        <option value="MARKET">Market</option>
        <option value="LIMIT_MAKER">Post-only</option>
      </select></label>
      <label id="price-row">Price <span class="unit" id="price-unit"></span><input id="price" inputmode="decimal" autocomplete="off"></label>
      <label>Amount <span class="unit" id="qty-unit"></span><input id="quantity" inputmode="decimal" autocomplete="off"></label>
      <div class="line"><span>Total</span><span id="order-total">–</span></div>
      <div class="line"><span>Available</span><span id="available">–</span></div>
      <button type="submit" id="submit-order" class="buy">Buy</button>
      <div id="order-message" role="status" aria-live="polite"></div>
      <div id="rules" class="rules"></div>
    </form>
    <h2>Balances</h2>
    <table class="grid"><thead><tr><th>Asset</th><th>Free</th><th>Locked</th></tr></thead><tbody id="balances"></tbody></table>
  </section>
  <section class="panel tape-panel">
    <h2>Trades</h2>
    <div class="tape-head"><span>Price</span><span>Size</span><span>Time</span></div>
    <div id="tape"></div>
  </section>
  <section class="panel orders-panel">
    <h2>Open orders <span class="sub" id="open-count"></span></h2>
    <table class="grid"><thead><tr><th>Time</th><th>Side</th><th>Type</th><th>Price</th><th>Amount</th><th>Filled</th><th></th></tr></thead><tbody id="open-orders"></tbody></table>
  </section>
  <section class="panel history-panel">
    <h2>Order history</h2>
    <table class="grid"><thead><tr><th>Time</th><th>Side</th><th>Type</th><th>Price</th><th>Amount</th><th>Filled</th><th>Avg price</th><th>Status</th></tr></thead><tbody id="order-history"></tbody></table>
  </section>
  <section class="panel fills-panel">
    <h2>Fills</h2>
    <table class="grid"><thead><tr><th>Time</th><th>Side</th><th>Price</th><th>Amount</th><th>Fee</th><th>Role</th></tr></thead><tbody id="fills"></tbody></table>
  </section>
</main>`;

const $ = (id) => document.getElementById(id);

// ---- state ---------------------------------------------------------------------------

const state = {
  markets: new Map(), // symbol -> rules
  rules: null,
  symbol: null,
  book: null,
  tape: [], // newest first, at most TAPE_ROWS
  ticker: null,
  side: 'BUY',
  balances: new Map(), // asset -> {free, locked}
  open: new Map(), // orderId -> order (current symbol)
  history: [], // closed orders, newest first
  fills: [], // newest first
  seenFills: new Set(),
  closedIds: new Set(),
  tapeRebuild: true, // the tape's rows no longer follow `tape`: draw them all again
  permissions: null, // the account's, once loaded
  marketLive: false,
  userLive: false,
  keyed: false,
};

// ---- one render per frame ------------------------------------------------------------

const dirty = new Set();
let frameAsked = false;
function mark(...parts) {
  for (const p of parts) dirty.add(p);
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(render);
  }
}

function render() {
  frameAsked = false;
  const parts = [...dirty];
  dirty.clear();
  for (const p of parts) RENDER[p]();
}

const RENDER = {
  book: renderBook,
  tape: renderTape,
  ticker: renderTicker,
  orders: renderOrders,
  history: renderHistory,
  fills: renderFills,
  balances: renderBalances,
  status: renderStatus,
  form: renderForm,
};

// The book's rows are made once and only their text changes.
function makeRows(container) {
  const rows = [];
  for (let i = 0; i < BOOK_ROWS; i++) {
    const row = document.createElement('div');
    row.className = 'level';
    row.innerHTML = '<span class="bar"></span><span class="p"></span><span class="q"></span><span class="t"></span>';
    row.addEventListener('click', () => {
      if (row.dataset.price) {
        $('price').value = row.dataset.price;
        mark('form');
      }
    });
    container.appendChild(row);
    rows.push(row);
  }
  return rows;
}
const askRows = makeRows($('asks'));
const bidRows = makeRows($('bids'));
const depth = new DepthChart($('depth'));
const candles = new Candles($('candles'));

function renderBook() {
  const r = state.rules;
  const book = state.book;
  const el = $('book');
  if (!r || !book || !book.synced) {
    el.dataset.synced = 'false';
    return;
  }
  // One sort a frame: the depth chart's 50 levels, of which the table shows the first.
  const wide = book.top(50);
  const bids = wide.bids.slice(0, BOOK_ROWS);
  const asks = wide.asks.slice(0, BOOK_ROWS);
  const cum = (rows) => {
    let t = 0;
    return rows.map(([p, q]) => [p, q, (t += Number(q))]);
  };
  const b = cum(bids);
  const a = cum(asks);
  const max = Math.max(b.at(-1)?.[2] ?? 0, a.at(-1)?.[2] ?? 0) || 1;
  const fill = (rows, data, reversed) => {
    for (let i = 0; i < rows.length; i++) {
      // Asks are drawn best-last (nearest the spread).
      const d = data[reversed ? rows.length - 1 - i : i];
      const row = rows[i];
      const price = d ? fixed(d[0], r.pricePlaces) : '';
      if (row.dataset.price !== price) row.dataset.price = price;
      setText(row.children[1], price);
      setText(row.children[2], d ? fixed(d[1], r.qtyPlaces) : '');
      setText(row.children[3], d ? d[2].toFixed(r.qtyPlaces) : '');
      row.children[0].style.width = d ? `${((d[2] / max) * 100).toFixed(1)}%` : '0';
    }
  };
  fill(askRows, a, true);
  fill(bidRows, b, false);
  el.dataset.updateId = String(book.updateId);
  el.dataset.symbol = r.symbol;
  el.dataset.synced = 'true';
  const bestBid = bids[0]?.[0];
  const bestAsk = asks[0]?.[0];
  const spread = bestBid && bestAsk ? Number(bestAsk) - Number(bestBid) : null;
  setText(
    $('spread-value'),
    spread === null ? '' : `spread ${spread.toFixed(r.pricePlaces)} (${((spread / Number(bestAsk)) * 10000).toFixed(1)} bps)`,
  );
  depth.set(wide.bids, wide.asks, (p) => fixed(p, r.pricePlaces));
}

// New trades are added on top and the oldest dropped: a busy tape costs a few row
// insertions a frame, not a rebuild of the list.
function renderTape() {
  const r = state.rules;
  const tape = $('tape');
  if (!r) return;
  const shown = tape.firstElementChild?.dataset.tradeId;
  const fresh = [];
  for (const t of state.tape) {
    if (String(t.t) === shown) break;
    fresh.push(t);
  }
  if (state.tapeRebuild || fresh.length === state.tape.length) {
    // A new market, older trades from REST behind the streamed ones, or nothing in common.
    state.tapeRebuild = false;
    tape.textContent = '';
    fresh.length = 0;
    fresh.push(...state.tape);
  }
  const rows = document.createDocumentFragment();
  for (const t of fresh) {
    const row = document.createElement('div');
    row.className = `trade ${t.m ? 'down' : 'up'}`;
    row.dataset.tradeId = String(t.t);
    row.innerHTML = `<span>${esc(fixed(t.p, r.pricePlaces))}</span><span>${esc(fixed(t.q, r.qtyPlaces))}</span><span>${clock(t.T)}</span>`;
    rows.appendChild(row);
  }
  tape.prepend(rows);
  while (tape.childElementCount > TAPE_ROWS) tape.lastElementChild.remove();
}

function renderTicker() {
  const r = state.rules;
  const t = state.ticker;
  if (!r || !t) return;
  // A market that has not traded has no last price (the API says 0).
  const traded = Number(t.n ?? 1) > 0;
  const price = (x) => (traded ? fixed(x, r.pricePlaces) : '–');
  const last = price(t.c);
  setText($('last'), last);
  setText($('book-last'), last);
  const pct = Number(t.P);
  const change = $('change');
  setText(change, `${pct >= 0 ? '+' : ''}${pct.toFixed(2)}%`);
  change.className = pct >= 0 ? 'up' : 'down';
  setText($('high'), price(t.h));
  setText($('low'), price(t.l));
  setText($('volume'), `${trim(t.v)} ${r.base}`);
}

function orderRow(o, withCancel) {
  const r = state.rules;
  const price = o.type === 'MARKET' ? 'market' : fixed(o.price, r.pricePlaces);
  const cells = [
    clock(o.time),
    `<span class="${o.side === 'BUY' ? 'up' : 'down'}">${o.side}</span>`,
    typeName(o.type),
    esc(price),
    esc(fixed(o.origQty, r.qtyPlaces)),
    esc(fixed(o.executedQty, r.qtyPlaces)),
  ];
  if (withCancel) {
    cells.push(`<button type="button" class="cancel" data-order-id="${o.orderId}">Cancel</button>`);
  } else {
    const filled = Number(o.executedQty);
    cells.push(filled > 0 ? (Number(o.cummulativeQuoteQty) / filled).toFixed(r.pricePlaces) : '–', esc(o.status));
  }
  return `<tr data-order-id="${o.orderId}" data-status="${esc(o.status)}">${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
}

function renderOrders() {
  if (!state.rules) return;
  const open = [...state.open.values()].sort((a, b) => b.time - a.time);
  $('open-orders').innerHTML = open.map((o) => orderRow(o, true)).join('') || empty(7, 'No open orders');
  setText($('open-count'), open.length ? `(${open.length})` : '');
}

function renderHistory() {
  if (!state.rules) return;
  $('order-history').innerHTML = state.history.map((o) => orderRow(o, false)).join('') || empty(8, 'No orders yet');
}

function renderFills() {
  const r = state.rules;
  if (!r) return;
  $('fills').innerHTML =
    state.fills
      .map(
        (f) =>
          `<tr data-trade-id="${f.id}" data-order-id="${f.orderId}"><td>${clock(f.time)}</td><td><span class="${f.isBuyer ? 'up' : 'down'}">${f.isBuyer ? 'BUY' : 'SELL'}</span></td><td>${esc(fixed(f.price, r.pricePlaces))}</td><td>${esc(fixed(f.qty, r.qtyPlaces))}</td><td>${esc(trim(f.commission))} ${esc(f.commissionAsset)}</td><td>${f.isMaker ? 'maker' : 'taker'}</td></tr>`,
      )
      .join('') || empty(6, 'No fills yet');
}

function renderBalances() {
  const rows = [...state.balances.entries()].filter(([, b]) => Number(b.free) !== 0 || Number(b.locked) !== 0);
  $('balances').innerHTML =
    rows
      .map(([a, b]) => `<tr data-asset="${esc(a)}"><td>${esc(a)}</td><td>${esc(trim(b.free))}</td><td>${esc(trim(b.locked))}</td></tr>`)
      .join('') || empty(3, state.keyed ? 'Nothing yet' : 'No API key');
  renderForm();
}

function renderStatus() {
  const m = $('status-market');
  m.className = `dot ${state.marketLive ? 'live' : 'down'}`;
  m.title = state.marketLive ? 'market data live' : 'market data reconnecting';
  const u = $('status-user');
  u.className = `dot ${state.userLive ? 'live' : 'down'}`;
  u.title = state.userLive ? 'account updates live' : 'account updates off';
}

function renderForm() {
  const r = state.rules;
  if (!r) return;
  const type = $('order-type').value;
  const buy = state.side === 'BUY';
  $('price-row').hidden = type === 'MARKET';
  setText($('price-unit'), r.quote);
  setText($('qty-unit'), r.base);
  const submit = $('submit-order');
  setText(submit, `${buy ? 'Buy' : 'Sell'} ${r.base}`);
  submit.className = buy ? 'buy' : 'sell';
  $('side-buy').classList.toggle('active', buy);
  $('side-sell').classList.toggle('active', !buy);
  const asset = buy ? r.quote : r.base;
  const bal = state.balances.get(asset);
  setText($('available'), bal ? `${trim(bal.free)} ${asset}` : '–');
  const p = Number($('price').value);
  const q = Number($('quantity').value);
  setText($('order-total'), type !== 'MARKET' && p > 0 && q > 0 ? `${(p * q).toFixed(r.pricePlaces)} ${r.quote}` : '–');
  setText(
    $('rules'),
    `Tick ${r.tickText} ${r.quote} · step ${r.stepText} ${r.base} · minimum value ${r.minNotionalText} ${r.quote}`,
  );
}

// ---- market data ---------------------------------------------------------------------

let marketSocket = null;
let marketRetryMs = 500;

function openMarket(symbol) {
  if (marketSocket) {
    marketSocket.onclose = null;
    marketSocket.close();
  }
  state.book?.close();
  const s = symbol.toLowerCase();
  const book = new DepthBook(
    () => rest.get('/api/v3/depth', { symbol, limit: 1000 }),
    () => mark('book'),
  );
  state.book = book;
  const streams = [`${s}@depth@100ms`, `${s}@trade`, `${s}@kline_1m`, `${s}@ticker`].join('/');
  const ws = new WebSocket(`${wsBase()}/stream?streams=${streams}`);
  marketSocket = ws;
  ws.onopen = () => {
    marketRetryMs = 500;
    state.marketLive = true;
    mark('status');
    // The stream is already buffering: now the snapshot.
    book.resync().catch((e) => showError(e));
    loadCandles(symbol);
  };
  ws.onmessage = (ev) => {
    if (state.symbol !== symbol) return;
    const { stream, data } = JSON.parse(ev.data);
    const kind = stream.slice(stream.indexOf('@') + 1);
    if (kind === 'depth@100ms') book.apply(data);
    else if (kind === 'trade') {
      state.tape.unshift(data);
      if (state.tape.length > TAPE_ROWS) state.tape.length = TAPE_ROWS;
      mark('tape');
    } else if (kind === 'kline_1m') candles.update(data.k);
    else if (kind === 'ticker') {
      state.ticker = data;
      mark('ticker');
    }
  };
  ws.onclose = () => {
    if (marketSocket !== ws) return;
    state.marketLive = false;
    mark('status');
    setTimeout(() => state.symbol === symbol && openMarket(symbol), marketRetryMs);
    marketRetryMs = Math.min(marketRetryMs * 2, 10000);
  };
}

async function loadCandles(symbol) {
  try {
    const rows = await rest.get('/api/v3/klines', { symbol, interval: '1m', limit: 500 });
    if (state.symbol === symbol) candles.load(rows);
  } catch (e) {
    showError(e);
  }
}

async function loadTape(symbol) {
  const trades = await rest.get('/api/v3/trades', { symbol, limit: TAPE_ROWS });
  if (state.symbol !== symbol) return;
  // REST trades are oldest first and spell the fields out; the tape keeps stream payloads.
  const known = new Set(state.tape.map((t) => t.t));
  const older = trades
    .filter((t) => !known.has(t.id))
    .reverse()
    .map((t) => ({ t: t.id, p: t.price, q: t.qty, T: t.time, m: t.isBuyerMaker }));
  state.tape = [...state.tape, ...older].slice(0, TAPE_ROWS);
  state.tapeRebuild = true;
  mark('tape');
}

async function loadTicker(symbol) {
  const t = await rest.get('/api/v3/ticker/24hr', { symbol });
  if (state.symbol !== symbol || state.ticker) return;
  state.ticker = { c: t.lastPrice, P: t.priceChangePercent, h: t.highPrice, l: t.lowPrice, v: t.volume, n: t.count };
  mark('ticker');
}

// ---- the account ---------------------------------------------------------------------

let userSocket = null;
let listenKey = null;
let userRetryMs = 1000;

async function startUser() {
  try {
    ({ listenKey } = await rest.userStream('POST'));
  } catch (e) {
    showError(e);
    setTimeout(startUser, (userRetryMs = Math.min(userRetryMs * 2, 30000)));
    return;
  }
  const ws = new WebSocket(`${wsBase()}/ws/${listenKey}`);
  userSocket = ws;
  ws.onopen = () => {
    userRetryMs = 1000;
    state.userLive = true;
    mark('status');
    // Whatever happened before the stream was open comes from REST.
    loadAccount();
    if (state.symbol) loadOrders(state.symbol);
  };
  ws.onmessage = (ev) => userEvent(JSON.parse(ev.data));
  ws.onclose = () => {
    if (userSocket !== ws) return;
    state.userLive = false;
    mark('status');
    setTimeout(startUser, userRetryMs);
    userRetryMs = Math.min(userRetryMs * 2, 30000);
  };
}

setInterval(() => {
  if (listenKey) rest.userStream('PUT', listenKey).catch(() => {});
}, KEEPALIVE_MS);

function userEvent(e) {
  if (e.e === 'outboundAccountPosition') {
    for (const b of e.B) state.balances.set(b.a, { free: b.f, locked: b.l });
    mark('balances');
  } else if (e.e === 'executionReport') {
    if (e.s !== state.symbol) return;
    upsertOrder({
      orderId: e.i,
      clientOrderId: e.c,
      side: e.S,
      type: e.o,
      price: e.p,
      origQty: e.q,
      executedQty: e.z,
      cummulativeQuoteQty: e.Z,
      status: e.X,
      time: e.O,
    });
    if (e.x === 'TRADE') {
      addFill({
        id: e.t,
        orderId: e.i,
        price: e.L,
        qty: e.l,
        commission: e.n ?? '0',
        commissionAsset: e.N ?? '',
        time: e.T,
        isBuyer: e.S === 'BUY',
        isMaker: e.m,
      });
    }
  } else if (e.e === 'listenKeyExpired') {
    userSocket?.close();
  }
}

function upsertOrder(o) {
  if (state.closedIds.has(o.orderId)) return; // a late answer about an order already closed
  if (TERMINAL.has(o.status)) {
    state.open.delete(o.orderId);
    state.closedIds.add(o.orderId);
    if (state.closedIds.size > 10 * HISTORY_ROWS) {
      state.closedIds.delete(state.closedIds.values().next().value);
    }
    state.history.unshift(o);
    if (state.history.length > HISTORY_ROWS) state.history.length = HISTORY_ROWS;
    mark('history');
  } else {
    state.open.set(o.orderId, o);
  }
  mark('orders');
}

function addFill(f) {
  if (state.seenFills.has(f.id)) return;
  state.seenFills.add(f.id);
  state.fills.unshift(f);
  state.fills.sort((a, b) => b.time - a.time || b.id - a.id);
  if (state.fills.length > HISTORY_ROWS) {
    for (const old of state.fills.splice(HISTORY_ROWS)) state.seenFills.delete(old.id);
  }
  mark('fills');
}

async function loadAccount() {
  if (!state.keyed) return;
  try {
    const a = await rest.signed('GET', '/api/v3/account', { omitZeroBalances: true });
    state.balances = new Map(a.balances.map((b) => [b.asset, { free: b.free, locked: b.locked }]));
    state.permissions = a.permissions ?? [];
    mark('balances');
    renderMarketInfo();
  } catch (e) {
    showError(e);
    if (e instanceof ApiError && [-2014, -2015, -1022].includes(e.code) && sessionStorage.getItem('fulgur-key')) {
      // A typed key the exchange refuses: forget it and ask again.
      sessionStorage.removeItem('fulgur-key');
      state.keyed = false;
      $('key-panel').hidden = false;
    }
  }
}

async function loadOrders(symbol) {
  if (!state.keyed) return;
  try {
    const [open, all, trades] = await Promise.all([
      rest.signed('GET', '/api/v3/openOrders', { symbol }),
      rest.signed('GET', '/api/v3/allOrders', { symbol, limit: HISTORY_ROWS }),
      rest.signed('GET', '/api/v3/myTrades', { symbol, limit: HISTORY_ROWS }),
    ]);
    if (state.symbol !== symbol) return;
    state.open = new Map(open.map((o) => [o.orderId, o]));
    state.history = all
      .filter((o) => TERMINAL.has(o.status))
      .sort((a, b) => b.updateTime - a.updateTime)
      .slice(0, HISTORY_ROWS);
    state.closedIds = new Set(state.history.map((o) => o.orderId));
    state.fills = [];
    state.seenFills = new Set();
    for (const t of trades) addFill({ ...t, commission: t.commission, commissionAsset: t.commissionAsset });
    mark('orders', 'history', 'fills');
  } catch (e) {
    showError(e);
  }
}

// ---- order entry ---------------------------------------------------------------------

function message(kind, text) {
  const m = $('order-message');
  m.dataset.kind = kind;
  m.textContent = text;
}

function showError(e) {
  message('error', e instanceof ApiError ? e.describe() : String(e?.message ?? e));
}

$('side-buy').addEventListener('click', () => {
  state.side = 'BUY';
  mark('form');
});
$('side-sell').addEventListener('click', () => {
  state.side = 'SELL';
  mark('form');
});
for (const id of ['order-type', 'price', 'quantity']) $(id).addEventListener('input', () => mark('form'));

$('order-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const r = state.rules;
  if (!r) return;
  if (!state.keyed) {
    message('error', 'No API key: this page can only watch the market.');
    return;
  }
  const type = $('order-type').value;
  const checked = checkOrder(r, { type, price: $('price').value, quantity: $('quantity').value });
  if (!checked.ok) {
    message('error', checked.message);
    $(checked.field).focus();
    return;
  }
  const params = {
    symbol: r.symbol,
    side: state.side,
    type,
    quantity: checked.quantity,
    newOrderRespType: 'RESULT',
    newClientOrderId: `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
  };
  if (type !== 'MARKET') params.price = checked.price;
  if (type === 'LIMIT') params.timeInForce = 'GTC';
  const submit = $('submit-order');
  submit.disabled = true;
  try {
    const o = await rest.signed('POST', '/api/v3/order', params);
    upsertOrder({ ...o, time: o.transactTime });
    const at = type === 'MARKET' ? 'at market' : `at ${trim(o.price)} ${r.quote}`;
    message('ok', `${o.side} ${trim(o.origQty)} ${r.base} ${at}: ${o.status.toLowerCase().replace(/_/g, ' ')} (order ${o.orderId}).`);
  } catch (e) {
    showError(e);
  } finally {
    submit.disabled = false;
  }
});

$('open-orders').addEventListener('click', async (ev) => {
  const button = ev.target.closest('button.cancel');
  if (!button) return;
  button.disabled = true;
  const orderId = Number(button.dataset.orderId);
  try {
    const o = await rest.signed('DELETE', '/api/v3/order', { symbol: state.symbol, orderId });
    upsertOrder({ ...o, time: state.open.get(orderId)?.time ?? o.transactTime });
    message('ok', `Order ${orderId} cancelled.`);
  } catch (e) {
    button.disabled = false;
    showError(e);
  }
});

// ---- markets -------------------------------------------------------------------------

function renderMarketInfo() {
  const r = state.rules;
  if (!r) return;
  const badges = [`<span class="badge">${esc(r.assetClass === 'RWA' ? 'RWA' : r.assetClass.toLowerCase())}</span>`];
  for (const p of r.permissions) {
    // Whether the account holds it is known once the account has loaded.
    const known = state.keyed && Array.isArray(state.permissions);
    const granted = known && state.permissions.includes(p);
    const held = known ? (granted ? ' · granted' : ' · not granted') : '';
    badges.push(
      `<span class="badge perm ${known ? (granted ? 'ok' : 'no') : ''}" title="Trading this market needs the account permission ${esc(p)}">needs ${esc(p)}${held}</span>`,
    );
  }
  if (r.status !== 'TRADING') badges.push(`<span class="badge no">${esc(r.status)}</span>`);
  $('market-info').innerHTML = badges.join('');
}

function selectMarket(symbol) {
  const r = state.markets.get(symbol);
  if (!r) return;
  state.symbol = symbol;
  state.rules = r;
  state.tape = [];
  state.tapeRebuild = true;
  state.ticker = null;
  state.open = new Map();
  state.history = [];
  state.fills = [];
  state.seenFills = new Set();
  state.closedIds = new Set();
  $('price').value = '';
  $('quantity').value = '';
  $('order-message').textContent = '';
  $('book').dataset.updateId = '0';
  document.title = `${symbol} · Fulgur`;
  if (location.hash !== `#${symbol}`) history.replaceState(null, '', `#${symbol}`);
  candles.clear();
  candles.setPrecision(r.pricePlaces, Number(r.tickText));
  renderMarketInfo();
  openMarket(symbol);
  loadTape(symbol).catch(showError);
  loadTicker(symbol).catch(showError);
  loadOrders(symbol);
  mark('book', 'tape', 'ticker', 'orders', 'history', 'fills', 'form');
}

async function start() {
  await rest.syncTime().catch(() => {});
  const info = await rest.get('/api/v3/exchangeInfo');
  const select = $('market');
  const groups = new Map();
  for (const sym of info.symbols) {
    const r = marketRules(sym);
    state.markets.set(r.symbol, r);
    const label = { CRYPTO: 'Crypto', STABLECOIN: 'Stablecoins', RWA: 'Real-world assets' }[r.assetClass] ?? r.assetClass;
    if (!groups.has(label)) groups.set(label, []);
    groups.get(label).push(r);
  }
  for (const [label, list] of groups) {
    const g = document.createElement('optgroup');
    g.label = label;
    for (const r of list) {
      const o = document.createElement('option');
      o.value = r.symbol;
      const notes = [r.assetClass === 'RWA' ? 'RWA' : null, ...r.permissions.map((p) => `needs ${p}`)].filter(Boolean);
      o.textContent = `${r.base}/${r.quote}${notes.length ? ` (${notes.join(' · ')})` : ''}`;
      g.appendChild(o);
    }
    select.appendChild(g);
  }
  select.addEventListener('change', () => selectMarket(select.value));
  const wanted = location.hash.slice(1);
  const first = state.markets.has(wanted) ? wanted : info.symbols[0]?.symbol;
  select.value = first;

  await useKey();
  selectMarket(first);
  mark('status', 'balances');
}

/** The demo's key when the server hands one out; else one the user types. */
async function useKey() {
  const typed = sessionStorage.getItem('fulgur-key');
  let key = typed ? JSON.parse(typed) : null;
  if (!key) {
    // 200 with the key under `fulgur demo`, 204 elsewhere.
    const res = await fetch('/fulgur/v1/demo/key').catch(() => null);
    if (res?.status === 200) key = await res.json();
  }
  if (key) {
    rest.setKey(key.apiKey, key.secretKey);
    state.keyed = true;
    $('key-panel').hidden = true;
    loadAccount();
    startUser();
  } else {
    $('key-panel').hidden = false;
  }
}

$('key-panel').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const apiKey = $('key-api').value.trim();
  const secretKey = $('key-secret').value.trim();
  if (!apiKey || !secretKey) return;
  sessionStorage.setItem('fulgur-key', JSON.stringify({ apiKey, secretKey }));
  location.reload();
});

// ---- helpers -------------------------------------------------------------------------

function wsBase() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function clock(ms) {
  const d = new Date(Number(ms));
  return d.toTimeString().slice(0, 8);
}

function empty(cols, text) {
  return `<tr class="empty"><td colspan="${cols}">${esc(text)}</td></tr>`;
}

function typeName(t) {
  return { LIMIT: 'Limit', MARKET: 'Market', LIMIT_MAKER: 'Post-only' }[t] ?? t;
}

start().catch((e) => {
  showError(e);
  console.warn('fulgur: start failed', e);
});
