"""ccxt's deposit and withdrawal calls against Fulgur's /sapi/v1/capital endpoints.

One phase per run (the Rust test pays, mines and batches between them); each prints one
JSON line of what it saw and exits non-zero on the first thing that is not as Binance does.

  address   fetch_deposit_address('BTC')
  credited  fetch_deposits, fetch_balance, withdraw (and its refusals), fetch_withdrawals
  done      fetch_withdrawals: the withdrawal completed, with its txid
"""

import argparse
import json
import sys

import ccxt


def fail(msg):
    print(json.dumps({'error': msg}))
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('phase')
    p.add_argument('--base', required=True)
    p.add_argument('--key', required=True)
    p.add_argument('--secret', required=True)
    p.add_argument('--to', default='')
    a = p.parse_args()
    ex = ccxt.binance({
        'apiKey': a.key,
        'secret': a.secret,
        'enableRateLimit': False,
        'timeout': 10000,
        'urls': {'api': {
            'public': a.base + '/api/v3',
            'private': a.base + '/api/v3',
            'sapi': a.base + '/sapi/v1',
        }},
        'options': {
            'fetchMarkets': {'types': ['spot']},
            'fetchCurrencies': False,
            'fetchMargins': False,
            'adjustForTimeDifference': False,
        },
    })
    ex.load_markets()
    out = {}
    if a.phase == 'address':
        d = ex.fetch_deposit_address('BTC')
        check(d['currency'] == 'BTC', f'currency: {d}')
        check(d['address'].startswith('bcrt1p'), f'a taproot address: {d}')
        check(ex.fetch_deposit_address('BTC')['address'] == d['address'], 'one address per account')
        out['address'] = d['address']
    elif a.phase == 'credited':
        deps = ex.fetch_deposits('BTC')
        check(len(deps) == 1, f'one deposit: {deps}')
        check(deps[0]['status'] == 'ok' and deps[0]['amount'] == 0.5, f'credited: {deps[0]}')
        check(deps[0]['type'] == 'deposit' and deps[0]['txid'], f'deposit fields: {deps[0]}')
        bal = ex.fetch_balance()
        check(bal['BTC']['free'] == 0.5, f'balance: {bal["BTC"]}')
        # Binance's codes, as ccxt raises them (it maps -4026 on sapi to BadRequest, as it
        # would for Binance itself).
        for amount, address, code in [
            (10, a.to, '-4026'),
            (0.1, 'bcrt1qnotanaddress', '-4033'),
            (0.000001, a.to, '-4022'),
        ]:
            try:
                ex.withdraw('BTC', amount, address, params={'network': 'BTC'})
                fail(f'withdraw {amount} to {address} was accepted')
            except ccxt.ExchangeError as e:
                check(f'"code":{code}' in str(e), f'withdraw {amount} to {address}: {e}')
        check(ex.fetch_withdrawals('BTC') == [], 'refusals leave no withdrawal behind')
        w = ex.withdraw('BTC', 0.1, a.to, params={'network': 'BTC'})
        check(w['id'], f'withdraw id: {w}')
        ws = ex.fetch_withdrawals('BTC')
        check(len(ws) == 1 and ws[0]['id'] == w['id'], f'the withdrawal: {ws}')
        check(ws[0]['status'] == 'pending' and ws[0]['amount'] == 0.1, f'pending: {ws[0]}')
        check(ws[0]['address'] == a.to, f'address: {ws[0]}')
        out['id'] = w['id']
    elif a.phase == 'done':
        ws = ex.fetch_withdrawals('BTC')
        check(len(ws) == 1 and ws[0]['status'] == 'ok', f'completed: {ws}')
        check(ws[0]['txid'], f'txid: {ws[0]}')
        check(ws[0]['fee']['cost'] == 0.00001, f'fee: {ws[0]["fee"]}')
        out['txid'] = ws[0]['txid']
    else:
        fail('unknown phase ' + a.phase)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
