// Exact decimals for the market's filters: amounts become BigInt units at a fixed scale, so a
// price is a multiple of the tick exactly as the server decides it, never by float rounding.

const DECIMAL = /^\d+(\.\d*)?$|^\.\d+$/;

/** Decimal places of `text` after dropping trailing zeros ("0.01000000" -> 2). */
export function places(text) {
  const frac = String(text).split('.')[1] ?? '';
  return frac.replace(/0+$/, '').length;
}

/**
 * `text` as BigInt units of 10^-scale, or null when it is not a plain non-negative decimal
 * or has more significant decimals than `scale`.
 */
export function toUnits(text, scale) {
  const t = String(text).trim();
  if (!DECIMAL.test(t)) return null;
  const [int, frac = ''] = t.split('.');
  const sig = frac.replace(/0+$/, '');
  if (sig.length > scale) return null;
  return BigInt((int || '0') + sig.padEnd(scale, '0'));
}

/** Units of 10^-scale as a decimal string with exactly `shown` places (truncating). */
export function fromUnits(units, scale, shown = scale) {
  const neg = units < 0n;
  const digits = (neg ? -units : units).toString().padStart(scale + 1, '0');
  const int = digits.slice(0, digits.length - scale);
  const frac = digits.slice(digits.length - scale).padEnd(shown, '0').slice(0, shown);
  return (neg ? '-' : '') + int + (shown > 0 ? '.' + frac : '');
}

/** A decimal string cut or padded to `shown` places; the server prints exact values. */
export function fixed(text, shown) {
  const [int, frac = ''] = String(text).split('.');
  return shown > 0 ? `${int}.${frac.padEnd(shown, '0').slice(0, shown)}` : int;
}

/** "97000.01000000" -> "97000.01": what a person types. */
export function trim(text) {
  const t = String(text);
  return t.includes('.') ? t.replace(/0+$/, '').replace(/\.$/, '') : t;
}
