// A market's trading rules from `exchangeInfo`, and the check of an order against them
// before it is sent. What depends on prices of the exchange's own (a market order's value at
// its last trade price, the price band) only the exchange can check exactly; its answer is
// shown.
import { places, toUnits, fromUnits, trim } from './decimal.js';

/** The rules of one `exchangeInfo` symbol. */
export function marketRules(sym) {
  const f = Object.fromEntries(sym.filters.map((x) => [x.filterType, x]));
  const price = f.PRICE_FILTER;
  const lot = f.LOT_SIZE;
  const mlot = f.MARKET_LOT_SIZE ?? lot;
  const notional = f.NOTIONAL;
  // One scale fits every amount of the market: the precisions the API prints.
  const scale = Math.max(sym.baseAssetPrecision, sym.quotePrecision, 8);
  const u = (t) => toUnits(t, scale);
  const groups = (sym.permissionSets ?? [])
    .flat()
    .filter((p) => p !== 'SPOT');
  return {
    symbol: sym.symbol,
    base: sym.baseAsset,
    quote: sym.quoteAsset,
    status: sym.status,
    assetClass: sym.fulgurBaseAssetClass ?? 'CRYPTO',
    permissions: groups,
    scale,
    tick: u(price.tickSize),
    minPrice: u(price.minPrice),
    maxPrice: u(price.maxPrice),
    step: u(lot.stepSize),
    minQty: u(lot.minQty),
    maxQty: u(lot.maxQty),
    marketStep: u(mlot.stepSize),
    marketMinQty: u(mlot.minQty),
    marketMaxQty: u(mlot.maxQty),
    minNotional: notional ? u(notional.minNotional) : 0n,
    maxNotional: notional ? u(notional.maxNotional) : null,
    pricePlaces: places(price.tickSize),
    qtyPlaces: places(lot.stepSize),
    tickText: trim(price.tickSize),
    stepText: trim(lot.stepSize),
    minNotionalText: notional ? trim(notional.minNotional) : '0',
  };
}

/**
 * Checks an order of the form against the market's rules. `order` has `type` (LIMIT,
 * LIMIT_MAKER, MARKET), `price` and `quantity` as typed. Returns `{ok: true, price,
 * quantity}` with the normalized decimals to send, or `{ok: false, field, message}`.
 */
export function checkOrder(rules, order) {
  const r = rules;
  const market = order.type === 'MARKET';
  const qtyText = String(order.quantity ?? '').trim();
  if (qtyText === '') return bad('quantity', `Enter an amount of ${r.base}.`);
  const qty = toUnits(qtyText, r.scale);
  if (qty === null) {
    return bad('quantity', `The amount must be a number with at most ${r.qtyPlaces} decimals.`);
  }
  const [step, min, max] = market
    ? [r.marketStep, r.marketMinQty, r.marketMaxQty]
    : [r.step, r.minQty, r.maxQty];
  const show = (x) => trim(fromUnits(x, r.scale));
  if (qty < min) return bad('quantity', `The amount must be at least ${show(min)} ${r.base}.`);
  if (qty > max) return bad('quantity', `The amount must be at most ${show(max)} ${r.base}.`);
  if (step > 0n && qty % step !== 0n) {
    return bad('quantity', `The amount must be a multiple of ${show(step)} ${r.base}.`);
  }
  if (market) return { ok: true, quantity: show(qty) };

  const priceText = String(order.price ?? '').trim();
  if (priceText === '') return bad('price', `Enter a price in ${r.quote}.`);
  const price = toUnits(priceText, r.scale);
  if (price === null || price === 0n) {
    return bad('price', `The price must be a positive number with at most ${r.pricePlaces} decimals.`);
  }
  if (price < r.minPrice) return bad('price', `The price must be at least ${show(r.minPrice)} ${r.quote}.`);
  if (price > r.maxPrice) return bad('price', `The price must be at most ${show(r.maxPrice)} ${r.quote}.`);
  if (r.tick > 0n && price % r.tick !== 0n) {
    return bad('price', `The price must be a multiple of ${r.tickText} ${r.quote}.`);
  }
  // price × quantity is at scale 2·scale; the limits are at scale.
  const value = price * qty;
  const one = 10n ** BigInt(r.scale);
  if (value < r.minNotional * one) {
    const shown = trim(fromUnits(value / one, r.scale));
    return bad(
      'quantity',
      `The order's value (${shown} ${r.quote}) is below the market's minimum of ${r.minNotionalText} ${r.quote}.`,
    );
  }
  if (r.maxNotional !== null && value > r.maxNotional * one) {
    return bad('quantity', `The order's value is above the market's maximum of ${show(r.maxNotional)} ${r.quote}.`);
  }
  return { ok: true, price: show(price), quantity: show(qty) };
}

function bad(field, message) {
  return { ok: false, field, message };
}
