#!/usr/bin/env python3
"""Fulgur's Binance-compatible API as ccxt sees it.

    python binance_compat.py --base http://127.0.0.1:PORT --key K --secret S \
        [--key2 K2 --secret2 S2] [--extra-account KEY:SECRET ...]

ccxt is what most trading software uses to talk to Binance, so this drives the server through
ccxt's own code paths: the same requests, signatures, response parsing and error mapping a
user gets. ccxt.binance (REST) and ccxt.pro.binance (websockets) are pointed at the server
through their URL table; a request for any other address is refused before it is sent and
fails the run, so nothing ever reaches binance.com.

Every check is a named step printed as PASS or FAIL with its reason (SKIP when it needs the
second account and none was given); the exit code is 1 if any step failed. The checks expect
a quiet server: `fulgur serve` on a new data directory (demo markets, nobody else trading),
with every account funded. Extra accounts only quote while watch_order_book runs, to reach
its thousands of updates sooner (see ws_market_data).
"""

import argparse
import asyncio
import collections
import random
import socket
import sys
import time
import traceback
from urllib.parse import urlparse

import ccxt
import ccxt.pro
import requests

SYMBOL = 'BTC/USDT'

# The demo markets of a new data directory (src/demo.rs): tick, lot and minimum notional.
DEMO_MARKETS = {
    'BTC/USDT': {'price': 0.01, 'amount': 0.00001, 'cost': 5},
    'ETH/USDT': {'price': 0.01, 'amount': 0.0001, 'cost': 5},
    'USDC/USDT': {'price': 0.0001, 'amount': 1, 'cost': 1},
    'TBILL/USDC': {'price': 0.001, 'amount': 1, 'cost': 10},
}

# Balances are 8-decimal assets parsed into floats: anything closer than half a minor unit
# is equal.
EPS = 5e-9


class Fail(Exception):
    """A check that did not hold; the message is the reason printed with FAIL."""


class Skip(Exception):
    """A step that cannot run with the arguments given."""


class ForeignRequest(Exception):
    """A request for an address outside the server under test (refused, never sent)."""


def check(cond, reason):
    if not cond:
        raise Fail(reason)


def close(a, b, eps=EPS):
    return a is not None and b is not None and abs(a - b) <= eps


class Guard:
    """Refuses every URL outside the server before ccxt opens a connection for it."""

    def __init__(self, base, ws_base):
        self.allowed = (base + '/', ws_base + '/')
        self.foreign = []

    def check(self, url):
        if not url.startswith(self.allowed):
            self.foreign.append(url)
            raise ForeignRequest('refused a request outside the server: ' + url)


def exchange_config(base, ws_base, key, secret):
    api = base + '/api/v3'
    return {
        'apiKey': key,
        'secret': secret,
        # The server's rate limits are under test: ccxt's own throttle would only slow the
        # run down (it spaces weight-250 requests by seconds).
        'enableRateLimit': False,
        'timeout': 10000,
        'urls': {
            'api': {
                'public': api,
                'private': api,
                # ccxt.pro appends a stream number: ws://host/ws/0.
                'ws': {'spot': ws_base + '/ws', 'ws-api': {'spot': ws_base + '/ws-api/v3'}},
            },
        },
        'options': {
            # Spot only: the default also loads futures markets (fapi/dapi hosts).
            'fetchMarkets': {'types': ['spot']},
            # Both call sapi endpoints (currencies, margin pairs) the server does not have.
            'fetchCurrencies': False,
            'fetchMargins': False,
            'adjustForTimeDifference': False,
        },
    }


class Binance(ccxt.binance):
    def __init__(self, config, guard):
        self.guard = guard
        super().__init__(config)

    def fetch(self, url, method='GET', headers=None, body=None):
        self.guard.check(url)
        return super().fetch(url, method, headers, body)


class ProBinance(ccxt.pro.binance):
    """ccxt.pro.binance that also counts the depth updates it applies to its local book."""

    def __init__(self, config, guard):
        self.guard = guard
        self.depth_events = 0
        self.depth_levels = 0
        super().__init__(config)

    async def fetch(self, url, method='GET', headers=None, body=None):
        self.guard.check(url)
        return await super().fetch(url, method, headers, body)

    def client(self, url):
        self.guard.check(url)
        return super().client(url)

    def handle_order_book_message(self, client, message, orderbook):
        self.depth_events += 1
        self.depth_levels += len(message.get('b') or []) + len(message.get('a') or [])
        return super().handle_order_book_message(client, message, orderbook)


class Pacer:
    """Keeps one account under the server's 100 new orders per 10 s (windows aligned to
    multiples of 10 s, as Binance's), evenly spaced: refused orders would waste the run's
    time, and bursts would fold many changes into one depth update."""

    PER_WINDOW = 98

    def __init__(self):
        self.window = None
        self.count = 0
        self.next_at = 0.0

    def delay(self):
        now = time.time()
        if now < self.next_at:
            return self.next_at - now
        window = int(now // 10)
        if window != self.window:
            self.window, self.count = window, 0
        if self.count >= self.PER_WINDOW:
            return (window + 1) * 10 - now + 0.01
        self.count += 1
        self.next_at = now + 10.0 / self.PER_WINDOW
        return 0

    async def wait(self):
        while True:
            d = self.delay()
            if not d:
                return
            await asyncio.sleep(d)

    def wait_sync(self):
        while True:
            d = self.delay()
            if not d:
                return
            time.sleep(d)


class SourceAddressAdapter(requests.adapters.HTTPAdapter):
    """Sends from a given local address, so one machine can act as a second client IP."""

    def __init__(self, source, **kwargs):
        self.source = source
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs['source_address'] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


class Report:
    def __init__(self):
        self.results = []

    def record(self, name, status, detail):
        self.results.append((name, status))
        print('%s %s: %s' % (status, name, detail), flush=True)

    def describe(self, e, exchanges):
        if isinstance(e, (Fail, ForeignRequest)):
            text = str(e)
        else:
            text = '%s: %s' % (type(e).__name__, e)
            if not isinstance(e, ccxt.BaseError):
                # Our own bug or ccxt choking on a response: where it happened helps.
                text += ' at ' + traceback.format_exc(limit=-2).strip().replace('\n', ' | ')
        # The last request and what came back is what the server's authors need (not for
        # a network error: its message names the URL, and the last request is unrelated).
        for ex in exchanges if not isinstance(e, ccxt.NetworkError) else ():
            url = getattr(ex, 'last_request_url', None)
            if url:
                text += ' [last request %s %s -> %s]' % (
                    'body=' + str(ex.last_request_body)[:200] if ex.last_request_body else '',
                    url[:300], str(ex.last_http_response)[:300])
                break
        return text[:1500]

    def run(self, name, fn, *exchanges):
        try:
            detail = fn()
            self.record(name, 'PASS', detail or 'ok')
        except Skip as e:
            self.record(name, 'SKIP', str(e))
        except Exception as e:
            self.record(name, 'FAIL', self.describe(e, exchanges))

    async def run_async(self, name, coro_fn, timeout, *exchanges):
        try:
            detail = await asyncio.wait_for(coro_fn(), timeout)
            self.record(name, 'PASS', detail or 'ok')
        except Skip as e:
            self.record(name, 'SKIP', str(e))
        except asyncio.TimeoutError:
            self.record(name, 'FAIL', 'timed out after %ss' % timeout)
        except Exception as e:
            self.record(name, 'FAIL', self.describe(e, exchanges))

    def failed(self):
        return [n for n, s in self.results if s == 'FAIL']


def balance_of(bal, code):
    entry = bal.get(code) or {}
    return {k: entry.get(k) or 0.0 for k in ('free', 'used', 'total')}


def trade_flows(trades):
    """Per asset, what a list of own trades moved into the account (fees out)."""
    flow = {}
    for t in trades:
        base, quote = t['symbol'].split('/')
        sign = 1 if t['side'] == 'buy' else -1
        flow[base] = flow.get(base, 0.0) + sign * t['amount']
        flow[quote] = flow.get(quote, 0.0) - sign * t['cost']
        fee = t.get('fee') or {}
        if fee.get('cost'):
            flow[fee['currency']] = flow.get(fee['currency'], 0.0) - fee['cost']
    return flow


class Session:
    """The steps, in order; state found by one (orders, balances) is checked by the next."""

    def __init__(self, args):
        self.args = args
        base = args.base.rstrip('/')
        parsed = urlparse(base)
        self.base = base
        self.ws_base = ('wss' if parsed.scheme == 'https' else 'ws') + '://' + parsed.netloc
        self.host = parsed.hostname
        self.guard = Guard(self.base, self.ws_base)
        self.report = Report()
        self.a = Binance(exchange_config(self.base, self.ws_base, args.key, args.secret), self.guard)
        self.b = None
        if args.key2:
            self.b = Binance(exchange_config(self.base, self.ws_base, args.key2, args.secret2),
                             self.guard)
        self.pacers = {'a': Pacer(), 'b': Pacer()}
        self.markets_ok = False
        self.ref = None
        self.state = {}

    def need_b(self):
        if self.b is None:
            raise Skip('needs the second account (--key2/--secret2)')

    def need_markets(self):
        if not self.markets_ok:
            raise Fail('load_markets failed')

    # ---- REST ------------------------------------------------------------------------

    def load_markets(self):
        markets = self.a.load_markets()
        for symbol, spec in DEMO_MARKETS.items():
            check(symbol in markets, '%s missing; markets: %s' % (symbol, sorted(markets)[:20]))
            m = markets[symbol]
            check(m['spot'] and m['active'], '%s not an active spot market: %s' % (symbol, m['info']))
            for what, got, want in (
                    ('precision.price (tick)', m['precision']['price'], spec['price']),
                    ('precision.amount (lot)', m['precision']['amount'], spec['amount']),
                    ('limits.amount.min', m['limits']['amount']['min'], spec['amount']),
                    ('limits.cost.min (min notional)', m['limits']['cost']['min'], spec['cost'])):
                check(close(got, want, 1e-12), '%s %s is %s, want %s' % (symbol, what, got, want))
            low = m['limits']['price']['min']
            check(low is not None and low > 0, '%s limits.price.min %s' % (symbol, low))
        if self.b is not None:
            self.b.load_markets()
        self.markets_ok = True
        return '%d markets; the demo markets with their tick, lot and min notional' % len(markets)

    def reference_price(self):
        # A quiet new server has no trades: the demo's fair value. Otherwise stay near the last
        # trade, inside the 5% band the engine enforces around it.
        ticker = self.a.fetch_ticker(SYMBOL)
        last = ticker.get('last')
        return float(round(last)) if last else 97000.0

    def create_order_limit(self):
        self.need_markets()
        self.ref = self.reference_price()
        self.state['bal0'] = self.a.fetch_balance()
        if self.b is not None:
            self.state['bal0_b'] = self.b.fetch_balance()
        self.state['t0'] = self.a.milliseconds() - 1000
        price = self.ref - 1000
        self.pacers['a'].wait_sync()
        o = self.a.create_order(SYMBOL, 'limit', 'buy', 0.01, price)
        check(o.get('id'), 'no order id: %s' % o)
        check(o['status'] == 'open', 'status %s, want open: %s' % (o['status'], o['info']))
        check(close(o['price'], price) and close(o['amount'], 0.01) and close(o['filled'] or 0, 0),
              'price/amount/filled %s/%s/%s' % (o['price'], o['amount'], o['filled']))
        check(o['side'] == 'buy' and o['type'] == 'limit', 'side/type %s/%s' % (o['side'], o['type']))
        self.state['bid'] = o
        return 'buy 0.01 @ %s rests: id %s, clientOrderId %s' % (price, o['id'], o['clientOrderId'])

    def fetch_balance_resting(self):
        o = self.need_state('bid')
        bal0, bal1 = balance_of(self.state['bal0'], 'USDT'), balance_of(self.a.fetch_balance(), 'USDT')
        lock = o['price'] * o['amount']
        check(close(bal1['used'] - bal0['used'], lock),
              'USDT used %s -> %s, want +%s' % (bal0['used'], bal1['used'], lock))
        check(close(bal0['free'] - bal1['free'], lock),
              'USDT free %s -> %s, want -%s' % (bal0['free'], bal1['free'], lock))
        check(close(bal1['total'], bal0['total']),
              'USDT total %s -> %s' % (bal0['total'], bal1['total']))
        return 'USDT free -%s, used +%s, total unchanged' % (lock, lock)

    def need_state(self, key):
        if key not in self.state:
            raise Fail('needs an earlier step that failed')
        return self.state[key]

    def fetch_open_orders(self):
        o = self.need_state('bid')
        opened = self.a.fetch_open_orders(SYMBOL)
        ids = [x['id'] for x in opened]
        check(o['id'] in ids, 'order %s not among open orders %s' % (o['id'], ids))
        mine = [x for x in opened if x['id'] == o['id']][0]
        check(mine['status'] == 'open' and close(mine['remaining'], 0.01),
              'open order status/remaining %s/%s' % (mine['status'], mine['remaining']))
        return '%d open order(s), ours among them' % len(opened)

    def fetch_order_book(self):
        o = self.need_state('bid')
        book = self.a.fetch_order_book(SYMBOL)
        for side, desc in (('bids', True), ('asks', False)):
            prices = [p for p, _ in book[side]]
            check(prices == sorted(prices, reverse=desc),
                  '%s not sorted best first: %s' % (side, prices[:10]))
        check(isinstance(book.get('nonce'), int), 'no lastUpdateId (nonce): %s' % book.get('nonce'))
        levels = dict((p, q) for p, q in book['bids'])
        check(o['price'] in levels and levels[o['price']] >= 0.01 - EPS,
              'no bid level %s >= 0.01 in %s' % (o['price'], book['bids'][:10]))
        return '%d bids, %d asks, lastUpdateId %s, our bid at %s' % (
            len(book['bids']), len(book['asks']), book['nonce'], o['price'])

    def create_order_market(self):
        self.need_b()
        bid = self.need_state('bid')
        # The second account sells into our bid; then we offer and it buys from us.
        self.pacers['b'].wait_sync()
        m1 = self.b.create_order(SYMBOL, 'market', 'sell', 0.004)
        check(m1['status'] == 'closed' and close(m1['filled'], 0.004),
              'market sell status/filled %s/%s: %s' % (m1['status'], m1['filled'], m1['info']))
        check(close(m1['average'], bid['price']),
              'market sell average %s, want %s' % (m1['average'], bid['price']))
        ask_price = self.ref + 1000
        self.pacers['a'].wait_sync()
        ask = self.a.create_order(SYMBOL, 'limit', 'sell', 0.003, ask_price)
        check(ask['status'] == 'open', 'ask status %s' % ask['status'])
        self.pacers['b'].wait_sync()
        m2 = self.b.create_order(SYMBOL, 'market', 'buy', 0.003)
        check(m2['status'] == 'closed' and close(m2['filled'], 0.003),
              'market buy status/filled %s/%s: %s' % (m2['status'], m2['filled'], m2['info']))
        check(close(m2['average'], ask_price),
              'market buy average %s, want %s' % (m2['average'], ask_price))
        check(close(m2['cost'], 0.003 * ask_price, 1e-6), 'market buy cost %s' % m2['cost'])
        self.state.update(ask=ask, m1=m1, m2=m2)
        return 'sell 0.004 filled @ %s, buy 0.003 filled @ %s' % (m1['average'], m2['average'])

    def fetch_order(self):
        bid = self.need_state('bid')
        o = self.a.fetch_order(bid['id'], SYMBOL)
        check(o['id'] == bid['id'] and close(o['price'], bid['price']) and close(o['amount'], 0.01),
              'order %s: id/price/amount %s/%s/%s' % (bid['id'], o['id'], o['price'], o['amount']))
        if 'm1' in self.state:
            check(o['status'] == 'open' and close(o['filled'], 0.004) and close(o['remaining'], 0.006),
                  'after a 0.004 fill: status/filled/remaining %s/%s/%s' % (
                      o['status'], o['filled'], o['remaining']))
            return 'open, filled 0.004, remaining 0.006'
        check(o['status'] == 'open', 'status %s' % o['status'])
        return 'open'

    def my_trades(self, ex, ids):
        trades = ex.fetch_my_trades(SYMBOL, self.state['t0'])
        return [t for t in trades if t['order'] in ids]

    def fetch_my_trades(self):
        self.need_b()
        bid, ask, m1, m2 = (self.need_state(k) for k in ('bid', 'ask', 'm1', 'm2'))
        mine = self.my_trades(self.a, {bid['id'], ask['id']})
        theirs = self.my_trades(self.b, {m1['id'], m2['id']})
        got = sorted((t['side'], t['amount'], t['price'], t['takerOrMaker']) for t in mine)
        want = sorted([('buy', 0.004, bid['price'], 'maker'), ('sell', 0.003, ask['price'], 'maker')])
        same = all(g[0] == w[0] and close(g[1], w[1]) and close(g[2], w[2]) and g[3] == w[3]
                   for g, w in zip(got, want))
        check(len(got) == 2 and same, 'first account trades %s, want %s' % (got, want))
        got_b = sorted((t['side'], t['amount'], t['takerOrMaker']) for t in theirs)
        check([(g[0], g[2]) for g in got_b] == [('buy', 'taker'), ('sell', 'taker')],
              'second account trades %s, want a taker buy and a taker sell' % got_b)
        for t in mine + theirs:
            check(t['id'] and t['timestamp'] and t['fee'] is not None and t['fee'].get('currency'),
                  'trade lacks id/timestamp/fee: %s' % t['info'])
        self.state.update(trades_a=mine, trades_b=theirs)
        return '2 maker trades, 2 taker trades, fees %s' % [
            (t['fee']['cost'], t['fee']['currency']) for t in mine + theirs]

    def fetch_balance_filled(self):
        self.need_b()
        trades_a, trades_b = self.need_state('trades_a'), self.need_state('trades_b')
        notes = []
        for ex, bal0, trades in ((self.a, self.state['bal0'], trades_a),
                                 (self.b, self.state['bal0_b'], trades_b)):
            bal1 = ex.fetch_balance()
            flow = trade_flows(trades)
            for code, moved in flow.items():
                before, after = balance_of(bal0, code), balance_of(bal1, code)
                check(close(after['total'] - before['total'], moved, 1e-7),
                      '%s total %s -> %s, trades and fees say %+.8f' % (
                          code, before['total'], after['total'], moved))
                check(close(after['free'] + after['used'], after['total']),
                      '%s free %s + used %s != total %s' % (
                          code, after['free'], after['used'], after['total']))
            notes.append(', '.join('%s %+.8f' % kv for kv in sorted(flow.items())))
        # What the first account still has locked: the bid's unfilled 0.006; the ask is gone.
        bid = self.state['bid']
        used = (balance_of(self.a.fetch_balance(), 'USDT')['used']
                - balance_of(self.state['bal0'], 'USDT')['used'])
        check(close(used, 0.006 * bid['price']), 'USDT used +%s, want +%s' % (used, 0.006 * bid['price']))
        return 'totals moved by exactly trades minus fees (%s); used is the unfilled rest' % (
            ' / '.join(notes))

    def fetch_trades(self):
        m1, m2 = self.need_state('m1'), self.need_state('m2')
        trades = [t for t in self.a.fetch_trades(SYMBOL) if t['timestamp'] >= self.state['t0']]
        got = [(t['side'], t['amount'], t['price']) for t in trades[-2:]]
        want = [('sell', 0.004, m1['average']), ('buy', 0.003, m2['average'])]
        check(len(got) == 2 and all(g[0] == w[0] and close(g[1], w[1]) and close(g[2], w[2])
                                    for g, w in zip(got, want)),
              'last public trades %s, want %s (taker side, amount, price)' % (got, want))
        return 'the 2 trades, oldest first, with the taker side'

    def fetch_ticker(self):
        m2, bid = self.need_state('m2'), self.need_state('bid')
        t = self.a.fetch_ticker(SYMBOL)
        check(close(t['last'], m2['average']), 'last %s, want %s' % (t['last'], m2['average']))
        check(close(t['bid'], bid['price']),
              'bid %s, want %s (our resting bid)' % (t['bid'], bid['price']))
        check((t['baseVolume'] or 0) >= 0.007 - EPS, 'baseVolume %s < 0.007' % t['baseVolume'])
        check(t['high'] >= m2['average'] - EPS and t['low'] <= bid['price'] + EPS,
              'high/low %s/%s' % (t['high'], t['low']))
        return 'last %s, bid %s, ask %s, volume %s' % (t['last'], t['bid'], t['ask'], t['baseVolume'])

    def fetch_ohlcv(self):
        m1, m2 = self.need_state('m1'), self.need_state('m2')
        candles = self.a.fetch_ohlcv(SYMBOL, '1m', self.state['t0'] - 60000)
        check(candles, 'no candles')
        for c in candles:
            check(len(c) == 6 and c[2] >= max(c[1], c[4]) - EPS and c[3] <= min(c[1], c[4]) + EPS,
                  'malformed candle %s' % c)
        check(close(candles[-1][4], m2['average']),
              'last close %s, want %s' % (candles[-1][4], m2['average']))
        high, low = max(c[2] for c in candles), min(c[3] for c in candles)
        check(high >= m2['average'] - EPS and low <= m1['average'] + EPS, 'high/low %s/%s' % (high, low))
        check(sum(c[5] for c in candles) >= 0.007 - EPS, 'volume %s' % sum(c[5] for c in candles))
        return '%d candle(s), last %s' % (len(candles), candles[-1])

    def cancel_order(self):
        bid = self.need_state('bid')
        c = self.a.cancel_order(bid['id'], SYMBOL)
        check(c['status'] == 'canceled', 'status %s, want canceled: %s' % (c['status'], c['info']))
        check(c['id'] == bid['id'], 'id %s, want %s' % (c['id'], bid['id']))
        ids = [x['id'] for x in self.a.fetch_open_orders(SYMBOL)]
        check(bid['id'] not in ids, 'still open: %s' % ids)
        status = self.a.fetch_order(bid['id'], SYMBOL)['status']
        check(status == 'canceled', 'fetch_order says %s' % status)
        used0 = balance_of(self.state['bal0'], 'USDT')['used']
        used1 = balance_of(self.a.fetch_balance(), 'USDT')['used']
        check(close(used1, used0),
              'USDT used %s after the cancel, was %s before the order' % (used1, used0))
        return 'canceled, gone from open orders, its lock released'

    def cancel_all_orders(self):
        self.need_markets()
        sym = 'ETH/USDT'
        placed = []
        for side, price in (('buy', 3300), ('buy', 3350), ('sell', 3500)):
            self.pacers['a'].wait_sync()
            placed.append(self.a.create_order(sym, 'limit', side, 0.01, price))
        check(all(o['status'] == 'open' for o in placed), 'statuses %s' % [o['status'] for o in placed])
        cancelled = self.a.cancel_all_orders(sym)
        check(sorted(o['id'] for o in cancelled) == sorted(o['id'] for o in placed),
              'cancelled %s, placed %s' % ([o['id'] for o in cancelled], [o['id'] for o in placed]))
        statuses = [o['status'] for o in cancelled]
        check(all(st == 'canceled' for st in statuses), 'statuses %s' % statuses)
        left = self.a.fetch_open_orders(sym)
        check(left == [], 'still open: %s' % [o['id'] for o in left])
        return '3 orders cancelled in one call'

    # ---- websockets ------------------------------------------------------------------

    async def ws_market_data(self, pa, pb, extra, results):
        """watch_order_book, watch_trades and watch_bids_asks on BTC/USDT while the accounts
        quote, cross and cancel; then the local book against REST depth, level by level.

        Each order changes the book at most twice (placed, then cancelled or filled), and the
        server allows an account 100 new orders per 10 s (Binance's limit), so thousands of
        updates take one account over 100 s: the extra accounts share the work."""
        rng = random.Random(20240611)
        tick = DEMO_MARKETS[SYMBOL]['price']
        mid = self.ref or 97000.0
        seen_trades = {}
        last_bidask = {}
        errors = {}

        async def watch(name, fn):
            try:
                while True:
                    await fn()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                errors[name] = e

        async def on_book():
            await pa.watch_order_book(SYMBOL)

        async def on_trades():
            for t in await pa.watch_trades(SYMBOL):
                seen_trades[t['id']] = t

        async def on_bidask():
            last_bidask.update(await pa.watch_bids_asks([SYMBOL]))

        tasks = [asyncio.ensure_future(watch('watch_order_book', on_book)),
                 asyncio.ensure_future(watch('watch_trades', on_trades)),
                 asyncio.ensure_future(watch('watch_bids_asks', on_bidask))]
        try:
            # The book is ready once the snapshot is in; the other subscriptions go out at the
            # same time on the same connection.
            await asyncio.wait_for(pa.watch_order_book(SYMBOL), 10)
            await asyncio.sleep(0.5)

            stats = {'orders': 0, 'taken': 0.0, 'limited': 0}
            other_errors = []
            deadline = time.monotonic() + self.args.book_seconds

            def done():
                return (time.monotonic() > deadline or pa.depth_levels >= self.args.book_updates
                        or len(other_errors) > 5)

            async def quiet(coro, tolerate=()):
                try:
                    return await coro
                except (ccxt.RateLimitExceeded, ccxt.DDoSProtection):  # 429, -1003, -1015: back off
                    stats['limited'] += 1
                    await asyncio.sleep(1)
                except tolerate:
                    pass
                except Exception as e:
                    other_errors.append(e)

            async def quoter(ex, pacer, side, lo, hi):
                """One account's flow: one side, orders spread over the ticks lo..hi from
                mid; the two ranges overlap, so some orders cross the other account's and
                trade. The oldest orders are cancelled to keep about 30 open."""
                live = collections.deque()
                while not done():
                    await pacer.wait()
                    price = mid + rng.randint(lo, hi) * tick
                    amount = rng.randint(1, 30) * 0.0001
                    o = await quiet(ex.create_order(SYMBOL, 'limit', side, amount, price))
                    if o:
                        stats['orders'] += 1
                        # A trade's taker is the order just placed: its fills at placement add
                        # up, over all orders, to every trade.
                        stats['taken'] += o['filled'] or 0.0
                        if o['status'] == 'open':
                            live.append(o['id'])
                    if len(live) > 30:
                        # It may have traded away since: an unknown order is fine here.
                        await quiet(ex.cancel_order(live.popleft(), SYMBOL), ccxt.OrderNotFound)

            # Buyers and sellers alternate, so an account never crosses its own orders (the
            # server's default self-trade prevention would expire them instead of trading).
            accounts = [(pa, self.pacers['a']), (pb, self.pacers['b'])] + [(ex, Pacer()) for ex in extra]
            await asyncio.gather(*(quoter(ex, pacer, 'buy', -40, 15) if i % 2 == 0 else
                                   quoter(ex, pacer, 'sell', -15, 40)
                                   for i, (ex, pacer) in enumerate(accounts)))
            taken, limited = stats['taken'], stats['limited']
            gen = '%d orders, %.4f BTC traded, %d depth events with %d level updates' % (
                stats['orders'], taken, pa.depth_events, pa.depth_levels)
            if limited:
                gen += ', %d requests rate-limited' % limited
            if other_errors:
                gen += ', errors: %s' % '; '.join('%s: %s' % (type(e).__name__, str(e)[:200])
                                                  for e in other_errors[:3])

            # Settle: the stream must reach the update id of a fresh REST snapshot, and then
            # hold exactly its levels.
            book_ok, book_detail = False, 'the stream never reached the REST lastUpdateId'
            settle = time.monotonic() + 10
            while time.monotonic() < settle and 'watch_order_book' not in errors:
                rest = await pa.fetch_order_book(SYMBOL, 1000)
                local = pa.orderbooks.get(SYMBOL)
                if local is None:
                    book_detail = 'ccxt dropped the local book'
                    break
                if local['nonce'] is not None and local['nonce'] > rest['nonce']:
                    continue  # an update came after the snapshot was taken: take another
                if local['nonce'] != rest['nonce']:
                    book_detail = 'local update id %s behind REST lastUpdateId %s' % (
                        local['nonce'], rest['nonce'])
                    await asyncio.sleep(0.2)
                    continue
                diff = None
                for side in ('bids', 'asks'):
                    mine, theirs = [list(x) for x in local[side]], [list(x) for x in rest[side]]
                    for i in range(max(len(mine), len(theirs))):
                        lm = mine[i] if i < len(mine) else None
                        lt = theirs[i] if i < len(theirs) else None
                        if lm != lt:
                            diff = '%s level %d: local %s, REST %s' % (side, i, lm, lt)
                            break
                    if diff:
                        break
                book_ok = diff is None
                book_detail = ('%d bids and %d asks equal to REST depth at update id %s' % (
                    len(rest['bids']), len(rest['asks']), rest['nonce'])) if book_ok else diff
                break

            if 'watch_order_book' in errors:
                results['watch_order_book'] = (
                    False, self.report.describe(errors['watch_order_book'], [pa]))
            elif pa.depth_levels < self.args.book_updates:
                results['watch_order_book'] = (False, 'only %d level updates (want %d) in %ss: %s' % (
                    pa.depth_levels, self.args.book_updates, self.args.book_seconds, gen))
            elif other_errors:
                results['watch_order_book'] = (False, gen)
            else:
                results['watch_order_book'] = (book_ok, '%s; %s' % (gen, book_detail))

            # Every fill is a trade on the stream: the amounts add up to what was taken.
            t_end = time.monotonic() + 3
            while time.monotonic() < t_end:
                streamed = sum(t['amount'] for t in seen_trades.values())
                if close(streamed, taken, 1e-8):
                    break
                await asyncio.sleep(0.1)
            streamed = sum(t['amount'] for t in seen_trades.values())
            if 'watch_trades' in errors:
                results['watch_trades'] = (False, self.report.describe(errors['watch_trades'], [pa]))
            else:
                bad = [t['info'] for t in seen_trades.values()
                       if t['symbol'] != SYMBOL or t['side'] not in ('buy', 'sell') or not t['price']]
                results['watch_trades'] = (
                    not bad and taken > 0 and close(streamed, taken, 1e-8),
                    '%d trades streamed, %.8f BTC; market orders filled %.8f BTC%s' % (
                        len(seen_trades), streamed, taken, '; malformed: %s' % bad[:2] if bad else ''))

            # The last best bid/ask streamed is the top of the REST book.
            if 'watch_bids_asks' in errors:
                results['watch_bids_asks'] = (
                    False, self.report.describe(errors['watch_bids_asks'], [pa]))
            else:
                rest = await pa.fetch_order_book(SYMBOL, 5)
                top = ((rest['bids'][0] if rest['bids'] else [None, None])
                       + (rest['asks'][0] if rest['asks'] else [None, None]))
                got = None
                b_end = time.monotonic() + 3
                while time.monotonic() < b_end:
                    t = last_bidask.get(SYMBOL) or {}
                    got = [t.get('bid'), t.get('bidVolume'), t.get('ask'), t.get('askVolume')]
                    if got == top:
                        break
                    await asyncio.sleep(0.1)
                results['watch_bids_asks'] = (
                    got == top, 'last streamed bid/size/ask/size %s, REST top %s' % (got, top))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The quotes stayed for the comparison; the next steps need an empty book.
            for ex in [pa, pb] + extra:
                try:
                    await ex.cancel_all_orders(SYMBOL)
                except ccxt.OrderNotFound:
                    pass  # -2011: nothing was open
                except Exception as e:
                    print('note: cleanup cancel_all_orders failed: %s' % e, flush=True)

    async def ws_account(self, pa, pb, results):
        """create_order_ws and cancel_order_ws on the WebSocket API, seen by watch_orders and
        watch_balance on the user data stream (subscribed over the same connection)."""
        orders = []
        balances = []
        errors = {}

        async def watch(name, fn):
            try:
                while True:
                    await fn()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                errors[name] = e

        async def on_orders():
            orders.extend(dict(o) for o in await pa.watch_orders(SYMBOL))

        async def on_balance():
            b = await pa.watch_balance()
            # Without a snapshot ccxt holds only the assets streamed so far.
            balances.append({c: balance_of(b, c) for c in ('BTC', 'USDT') if c in b})

        async def order_seen(oid, status, filled=None):
            end = time.monotonic() + 5
            while time.monotonic() < end and 'watch_orders' not in errors:
                for o in orders:
                    if (o['id'] == oid and o['status'] == status
                            and (filled is None or close(o['filled'], filled))):
                        return True
                await asyncio.sleep(0.05)
            return False

        async def balance_seen(want):
            """The streamed balance reaches `want` ({code: {free, used}}), REST's figures,
            for the assets streamed so far (USDT at least)."""
            end = time.monotonic() + 5
            while time.monotonic() < end and 'watch_balance' not in errors:
                last = balances[-1] if balances else {}
                if 'USDT' in last and all(close(last[c][k], want[c][k], 1e-7)
                                          for c in last for k in ('free', 'used')):
                    return True
                await asyncio.sleep(0.05)
            return False

        def rest_balance():
            bal = self.a.fetch_balance()
            return {c: balance_of(bal, c) for c in ('BTC', 'USDT')}

        tasks = []
        try:
            # Subscribe the user data stream first (userDataStream.subscribe.signature), so
            # the events of the orders below cannot be missed.
            await pa.ensure_user_data_stream_ws_subscribe_signature('spot')
            tasks = [asyncio.ensure_future(watch('watch_orders', on_orders)),
                     asyncio.ensure_future(watch('watch_balance', on_balance))]
            await asyncio.sleep(0.3)
            ref = self.ref or 97000.0

            await self.pacers['a'].wait()
            o = await pa.create_order_ws(SYMBOL, 'limit', 'buy', 0.01, ref - 2000)
            ok = (o.get('id') and o['status'] == 'open' and close(o['price'], ref - 2000)
                  and close(o['amount'], 0.01))
            results['create_order_ws'] = (
                ok, 'buy 0.01 @ %s: id %s status %s' % (ref - 2000, o.get('id'), o['status']))
            seen_new = await order_seen(o['id'], 'open')
            bal_new = await balance_seen(await asyncio.to_thread(rest_balance))

            c = await pa.cancel_order_ws(o['id'], SYMBOL)
            results['cancel_order_ws'] = (c['status'] == 'canceled' and c['id'] == o['id'],
                                          'id %s status %s' % (c['id'], c['status']))
            seen_cancel = await order_seen(o['id'], 'canceled')
            bal_cancel = await balance_seen(await asyncio.to_thread(rest_balance))

            # A fill: our ask, taken by the second account.
            filled = None
            bal_fill = None
            if pb is not None:
                await self.pacers['a'].wait()
                ask = await pa.create_order_ws(SYMBOL, 'limit', 'sell', 0.002, ref + 500)
                await self.pacers['b'].wait()
                await pb.create_order(SYMBOL, 'market', 'buy', 0.002)
                filled = await order_seen(ask['id'], 'closed', 0.002)
                bal_fill = await balance_seen(await asyncio.to_thread(rest_balance))

            def verdict(name, checks):
                if name in errors:
                    return (False, self.report.describe(errors[name], [pa]))
                missing = [what for what, ok in checks if ok is False]
                return (not missing, 'missing: %s' % ', '.join(missing) if missing else
                        'saw ' + ', '.join(what for what, ok in checks if ok))

            results['watch_orders'] = verdict('watch_orders', [
                ('new order open', seen_new), ('cancel', seen_cancel), ('fill closed 0.002', filled)])
            results['watch_balance'] = verdict('watch_balance', [
                ('lock on the new order', bal_new), ('release on cancel', bal_cancel),
                ('fill', bal_fill)])
            if balances:
                results['watch_balance'] = (results['watch_balance'][0], results['watch_balance'][1] +
                                            '; %d updates, last %s' % (len(balances), balances[-1]))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def scenario(self, names, fn, timeout, exchanges):
        """Runs a websocket scenario that fills `results` with (ok, detail) per step name;
        a step it did not reach fails with the reason the scenario stopped."""
        results = {}
        reason = 'not reached'
        try:
            await asyncio.wait_for(fn(results), timeout)
        except asyncio.TimeoutError:
            reason = 'timed out after %ss' % timeout
        except Exception as e:
            reason = self.report.describe(e, exchanges)
        for name in names:
            ok, detail = results.get(name, (False, reason))
            self.report.record(name, 'PASS' if ok else 'FAIL', detail)

    async def websockets(self):
        market_data = ('watch_order_book', 'watch_trades', 'watch_bids_asks')
        account = ('create_order_ws', 'cancel_order_ws', 'watch_orders', 'watch_balance')
        if not self.markets_ok:
            for n in market_data + account:
                self.report.record(n, 'FAIL', 'load_markets failed')
            return
        def pro(key, secret):
            return ProBinance(exchange_config(self.base, self.ws_base, key, secret), self.guard)

        pa = pro(self.args.key, self.args.secret)
        pb = pro(self.args.key2, self.args.secret2) if self.b is not None else None
        extra = [pro(key, secret) for key, secret in self.args.extra_account]
        try:
            # Markets from the REST instance: no extra request, same data.
            for ex in [pa, pb] + extra:
                if ex is not None:
                    ex.set_markets_from_exchange(self.a)
            if pb is not None:
                await self.scenario(market_data, lambda r: self.ws_market_data(pa, pb, extra, r),
                                    self.args.book_seconds + 30, [pa, pb])
            else:
                for n in market_data:
                    self.report.record(n, 'SKIP', 'needs the second account (--key2/--secret2)')
            await self.scenario(account, lambda r: self.ws_account(pa, pb, r), 30, [pa, pb])
        finally:
            for ex in [pa, pb] + extra:
                if ex is not None:
                    await ex.close()

    # ---- errors ----------------------------------------------------------------------

    def expect_error(self, want, fn, *exchanges):
        try:
            r = fn()
        except want as e:
            return '%s: %s' % (type(e).__name__, str(e)[:200])
        except ForeignRequest:
            raise
        except Exception as e:
            raise Fail('want %s, got %s' % (want.__name__, self.report.describe(e, exchanges)))
        raise Fail('want %s, the call succeeded: %s' % (want.__name__, str(r)[:300]))

    def error_insufficient_funds(self):
        self.need_markets()
        # 100 BTC at the reference price is ~10M USDT: more than the account holds.
        self.pacers['a'].wait_sync()
        return self.expect_error(ccxt.InsufficientFunds, lambda: self.a.create_order(
            SYMBOL, 'limit', 'buy', 100, self.ref or 97000.0), self.a)

    def error_order_not_found(self):
        self.need_markets()
        return self.expect_error(ccxt.OrderNotFound,
                                 lambda: self.a.cancel_order('987654321', SYMBOL), self.a)

    def error_price_off_tick(self):
        self.need_markets()
        # ccxt rounds prices to the tick itself; a price param overrides the rounded one so
        # the server's own filter is what answers.
        price = '%.3f' % ((self.ref or 97000.0) - 1000 + 0.005)
        self.pacers['a'].wait_sync()
        return self.expect_error(ccxt.InvalidOrder, lambda: self.a.create_order(
            SYMBOL, 'limit', 'buy', 0.001, float(price), {'price': price}), self.a)

    def error_wrong_secret(self):
        wrong = 'not-the-secret-' + 'x' * 48
        ex = Binance(exchange_config(self.base, self.ws_base, self.args.key, wrong), self.guard)
        # Markets from the first account: the signed fetch_balance is the only request.
        ex.set_markets_from_exchange(self.a)
        return self.expect_error(ccxt.AuthenticationError, lambda: ex.fetch_balance(), ex)

    def error_rate_limit(self):
        """Hammers the heaviest request (depth with limit=5000, weight 250 on Binance: 25 of
        them exceed 6000 a minute) from a fresh client: no key, and on a loopback server a
        different source IP, so the rest of the run keeps its own allowance."""
        ex = Binance(exchange_config(self.base, self.ws_base, None, None), self.guard)
        source = 'the same IP'
        if self.host and self.host.startswith('127.'):
            try:
                s = socket.socket()
                s.bind(('127.0.0.2', 0))
                s.close()
                ex.session.mount(self.base.split(':')[0] + '://', SourceAddressAdapter('127.0.0.2'))
                source = '127.0.0.2'
            except OSError:
                pass
        ex.set_markets_from_exchange(self.a)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.args.rate_limit_seconds:
            n += 1
            try:
                ex.fetch_order_book(SYMBOL, 5000)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as e:
                headers = ex.last_response_headers or {}
                return 'request %d from %s in %.1fs: %s: %s (Retry-After %s, used weight %s)' % (
                    n, source, time.monotonic() - start, type(e).__name__, str(e)[:160],
                    headers.get('Retry-After'), headers.get('X-MBX-USED-WEIGHT-1M'))
            except ForeignRequest:
                raise
            except Exception as e:
                raise Fail('request %d: %s' % (n, self.report.describe(e, [ex])))
        headers = ex.last_response_headers or {}
        raise Fail('no rate limit after %d depth(limit=5000) requests in %ss from %s '
                   '(X-MBX-USED-WEIGHT-1M %s)' % (
            n, self.args.rate_limit_seconds, source, headers.get('X-MBX-USED-WEIGHT-1M')))

    def no_foreign_requests(self):
        check(not self.guard.foreign, 'ccxt asked for %s' % sorted(set(self.guard.foreign)))
        return 'every request went to %s' % self.base

    # ---- the run ---------------------------------------------------------------------

    def main(self):
        started = time.monotonic()
        r, a, b = self.report, self.a, self.b
        ab = (a, b) if b is not None else (a,)
        r.run('load_markets', self.load_markets, *ab)
        r.run('create_order limit', self.create_order_limit, a)
        r.run('fetch_balance (order resting)', self.fetch_balance_resting, a)
        r.run('fetch_open_orders', self.fetch_open_orders, a)
        r.run('fetch_order_book', self.fetch_order_book, a)
        r.run('create_order market', self.create_order_market, *ab)
        r.run('fetch_order', self.fetch_order, a)
        r.run('fetch_my_trades', self.fetch_my_trades, *ab)
        r.run('fetch_balance (orders filled)', self.fetch_balance_filled, *ab)
        r.run('fetch_trades', self.fetch_trades, a)
        r.run('fetch_ticker', self.fetch_ticker, a)
        r.run('fetch_ohlcv', self.fetch_ohlcv, a)
        r.run('cancel_order', self.cancel_order, a)
        r.run('cancel_all_orders', self.cancel_all_orders, a)
        asyncio.run(self.websockets())
        r.run('error: insufficient balance -> InsufficientFunds', self.error_insufficient_funds, a)
        r.run('error: unknown order -> OrderNotFound', self.error_order_not_found, a)
        r.run('error: price off the tick -> InvalidOrder', self.error_price_off_tick, a)
        r.run('error: wrong secret -> AuthenticationError', self.error_wrong_secret)
        if self.args.rate_limit_seconds > 0:
            r.run('error: rate limit -> RateLimitExceeded/DDoSProtection', self.error_rate_limit)
        r.run('no request outside the server', self.no_foreign_requests)
        failed = r.failed()
        print('%d steps, %d failed%s, %.1fs (ccxt %s)' % (
            len(r.results), len(failed), ': ' + ', '.join(failed) if failed else '',
            time.monotonic() - started, ccxt.__version__), flush=True)
        return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--base', required=True, help='http://127.0.0.1:PORT')
    p.add_argument('--key', required=True)
    p.add_argument('--secret', required=True)
    p.add_argument('--key2')
    p.add_argument('--secret2')
    p.add_argument('--extra-account', metavar='KEY:SECRET', action='append', default=[],
                   type=lambda v: tuple(v.split(':', 1)),
                   help='another funded account (repeatable) that quotes for watch_order_book; '
                        'each adds ~10 orders/s under the 100 per 10 s an account may place')
    p.add_argument('--book-updates', type=int, default=2000,
                   help='price level updates watch_order_book must apply (default 2000)')
    p.add_argument('--book-seconds', type=float, default=60,
                   help='time allowed to generate them (default 60)')
    p.add_argument('--rate-limit-seconds', type=float, default=20,
                   help='how long to hammer for a rate limit; 0 skips the step (default 20)')
    args = p.parse_args()
    if bool(args.key2) != bool(args.secret2):
        p.error('--key2 and --secret2 go together')
    return Session(args).main()


if __name__ == '__main__':
    sys.exit(main())
