// The exchange's Binance-compatible REST API, as any bot calls it: public endpoints, and
// signed ones (HMAC-SHA256 of the query string with the API secret, `X-MBX-APIKEY`).
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';

export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg);
    this.status = status;
    this.code = code;
  }

  /** The error in words, then the server's own message and code. */
  describe() {
    const words = WORDS[this.code] ?? (this.status === 0 ? 'The exchange could not be reached.' : null);
    const server = `${this.message} (code ${this.code})`;
    return words ? `${words} The exchange said: ${server}` : `The exchange refused: ${server}`;
  }
}

/** Binance's error codes a trader meets, in words. */
const WORDS = {
  '-1003': 'Too many requests: the page is over its request limit; wait a minute.',
  '-1013': "The order breaks one of the market's rules.",
  '-1021': "The request's time is off from the exchange's clock.",
  '-1022': 'The signature was refused: check the API secret.',
  '-2010': 'The exchange rejected the order.',
  '-2011': 'The order could not be cancelled: it is no longer open.',
  '-2013': 'No such order.',
  '-2014': 'The API key is malformed.',
  '-2015': 'The API key was refused.',
  '-1125': 'The user data stream expired.',
};

export class Rest {
  constructor(base = '') {
    this.base = base;
    this.key = null;
    this.secret = null;
    this.offsetMs = 0;
  }

  setKey(apiKey, secretKey) {
    this.key = apiKey;
    this.secret = secretKey ? utf8ToBytes(secretKey) : null;
  }

  /** Measures the offset of the exchange's clock, so signed timestamps are in its window. */
  async syncTime() {
    const t0 = Date.now();
    const { serverTime } = await this.get('/api/v3/time');
    const t1 = Date.now();
    this.offsetMs = serverTime - Math.round((t0 + t1) / 2);
  }

  get(path, params = {}) {
    return this.request('GET', path, params, false);
  }

  signed(method, path, params = {}) {
    return this.request(method, path, params, true);
  }

  /** `POST|PUT|DELETE /api/v3/userDataStream`: the API key, no signature. */
  userStream(method, listenKey) {
    return this.request(method, '/api/v3/userDataStream', listenKey ? { listenKey } : {}, false, true);
  }

  async request(method, path, params, signed, keyed = signed) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.append(k, String(v));
    const headers = {};
    if (keyed) {
      if (!this.key) throw new ApiError(401, -2015, 'No API key.');
      headers['X-MBX-APIKEY'] = this.key;
    }
    if (signed) {
      q.append('timestamp', String(Date.now() + this.offsetMs));
      q.append('recvWindow', '10000');
      q.append('signature', bytesToHex(hmac(sha256, this.secret, utf8ToBytes(q.toString()))));
    }
    const qs = q.toString();
    let res;
    try {
      res = await fetch(this.base + path + (qs ? `?${qs}` : ''), { method, headers });
    } catch (e) {
      throw new ApiError(0, 0, String(e.message ?? e));
    }
    const text = await res.text();
    let body;
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      throw new ApiError(res.status, 0, text.slice(0, 200));
    }
    if (!res.ok) throw new ApiError(res.status, body.code ?? 0, body.msg ?? res.statusText);
    return body;
  }
}
