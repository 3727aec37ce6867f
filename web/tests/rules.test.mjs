// The order checks the page makes before sending, against the demo's BTCUSDT rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOrder, marketRules } from '../src/rules.js';
import { fixed, fromUnits, toUnits, trim } from '../src/decimal.js';

const BTCUSDT = marketRules({
  symbol: 'BTCUSDT',
  status: 'TRADING',
  baseAsset: 'BTC',
  quoteAsset: 'USDT',
  baseAssetPrecision: 8,
  quotePrecision: 8,
  permissionSets: [['SPOT']],
  filters: [
    { filterType: 'PRICE_FILTER', minPrice: '0.01000000', maxPrice: '10995116277.76000000', tickSize: '0.01000000' },
    { filterType: 'LOT_SIZE', minQty: '0.00001000', maxQty: '10995116.27776000', stepSize: '0.00001000' },
    { filterType: 'MARKET_LOT_SIZE', minQty: '0.00001000', maxQty: '10995116.27776000', stepSize: '0.00001000' },
    { filterType: 'NOTIONAL', minNotional: '5.00000000', maxNotional: '184467440737.09551615' },
  ],
});

test('decimals are exact', () => {
  assert.equal(toUnits('0.1', 8), 10000000n);
  assert.equal(toUnits('97000.01000000', 8), 9700001000000n);
  assert.equal(toUnits('1.123456789', 8), null);
  assert.equal(toUnits('1.1234567890', 8), null);
  assert.equal(toUnits('1.12345678000', 8), 112345678n);
  assert.equal(toUnits('-1', 8), null);
  assert.equal(toUnits('1e3', 8), null);
  assert.equal(toUnits('', 8), null);
  assert.equal(fromUnits(123n, 8), '0.00000123');
  assert.equal(fromUnits(9700001000000n, 8, 2), '97000.01');
  assert.equal(fixed('97000.01000000', 2), '97000.01');
  assert.equal(fixed('3', 2), '3.00');
  assert.equal(trim('5.00000000'), '5');
  assert.equal(trim('0.00001000'), '0.00001');
});

test('a limit order inside the rules is sent as typed, normalized', () => {
  assert.deepEqual(checkOrder(BTCUSDT, { type: 'LIMIT', price: '96000.10', quantity: '0.0010' }), {
    ok: true,
    price: '96000.1',
    quantity: '0.001',
  });
  assert.deepEqual(checkOrder(BTCUSDT, { type: 'MARKET', quantity: '0.5' }), { ok: true, quantity: '0.5' });
});

test('each rule has its message', () => {
  const no = (order, field, words) => {
    const r = checkOrder(BTCUSDT, order);
    assert.equal(r.ok, false, JSON.stringify(order));
    assert.equal(r.field, field);
    assert.match(r.message, words);
  };
  no({ type: 'LIMIT', price: '96000.001', quantity: '0.001' }, 'price', /multiple of 0.01 USDT/);
  no({ type: 'LIMIT', price: '', quantity: '0.001' }, 'price', /Enter a price/);
  no({ type: 'LIMIT', price: '0', quantity: '0.001' }, 'price', /positive/);
  no({ type: 'LIMIT', price: 'abc', quantity: '0.001' }, 'price', /positive number/);
  no({ type: 'LIMIT', price: '96000', quantity: '0.000015' }, 'quantity', /at most 5 decimals|multiple of 0.00001 BTC/);
  no({ type: 'LIMIT', price: '96000', quantity: '0.000001' }, 'quantity', /at least 0.00001 BTC/);
  no({ type: 'LIMIT', price: '96000', quantity: '' }, 'quantity', /Enter an amount/);
  no({ type: 'LIMIT', price: '96000', quantity: '0.00001' }, 'quantity', /value \(0.96 USDT\) is below the market's minimum of 5 USDT/);
  no({ type: 'LIMIT_MAKER', price: '1', quantity: '1' }, 'quantity', /below the market's minimum of 5 USDT/);
  no({ type: 'MARKET', quantity: '20000000' }, 'quantity', /at most 10995116.27776 BTC/);
});

test("a market order's value is the exchange's to check", () => {
  // The exchange values it at its own last trade price.
  assert.equal(checkOrder(BTCUSDT, { type: 'MARKET', quantity: '0.00001' }).ok, true);
});
