// A local order book kept from a REST snapshot and the `@depth@100ms` diff stream, by the
// rule Binance gives its clients: buffer the stream, take the snapshot, drop what the
// snapshot already has, and start over from a new snapshot at any gap in the update ids.

/** Most levels kept per side; the snapshot asks for this many. */
export const MAX_LEVELS = 1000;
/** Most diff messages held while a snapshot is on its way. */
const MAX_BUFFERED = 2000;

export class DepthBook {
  /**
   * `fetchSnapshot()` resolves to `{lastUpdateId, bids, asks}` (REST depth); `onChange()`
   * is called after every change of the book.
   */
  constructor(fetchSnapshot, onChange = () => {}) {
    this.fetchSnapshot = fetchSnapshot;
    this.onChange = onChange;
    this.bids = new Map(); // price text -> quantity text
    this.asks = new Map();
    this.updateId = 0;
    this.synced = false;
    this.buffer = [];
    this.resyncs = 0;
    this.loading = null;
    this.closed = false;
  }

  /** Starts (or restarts) the sync: buffers the stream while the snapshot loads. */
  resync() {
    if (this.loading || this.closed) return this.loading;
    this.synced = false;
    this.loading = (async () => {
      try {
        const snap = await this.fetchSnapshot();
        if (this.closed) return;
        this.bids = levels(snap.bids);
        this.asks = levels(snap.asks);
        this.updateId = snap.lastUpdateId;
        this.synced = true;
        const buffered = this.buffer;
        this.buffer = [];
        for (const m of buffered) this.apply(m);
        this.onChange();
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  /** One `depthUpdate` message (`U`, `u`, `b`, `a`). */
  apply(m) {
    if (!this.synced) {
      this.buffer.push(m);
      // A snapshot that never comes must not make the buffer grow without bound.
      if (this.buffer.length > MAX_BUFFERED) this.buffer.shift();
      return;
    }
    if (m.u <= this.updateId) return; // the snapshot has it already
    if (m.U > this.updateId + 1) {
      // A gap: some update never reached us. Start over.
      this.resyncs += 1;
      this.synced = false;
      this.buffer = [m];
      this.resync().catch(() => {});
      return;
    }
    for (const [p, q] of m.b) set(this.bids, p, q);
    for (const [p, q] of m.a) set(this.asks, p, q);
    this.updateId = m.u;
    trimSide(this.bids, true);
    trimSide(this.asks, false);
    this.onChange();
  }

  /** Best `n` levels of each side, best first: `{bids: [[p, q]], asks: [[p, q]]}`. */
  top(n) {
    return { bids: sorted(this.bids, true).slice(0, n), asks: sorted(this.asks, false).slice(0, n) };
  }

  close() {
    this.closed = true;
    this.buffer = [];
  }
}

function levels(rows) {
  const m = new Map();
  for (const [p, q] of rows) set(m, p, q);
  return m;
}

function set(side, p, q) {
  if (Number(q) === 0) side.delete(p);
  else side.set(p, q);
}

function sorted(side, desc) {
  const rows = [...side.entries()];
  rows.sort((a, b) => (desc ? Number(b[0]) - Number(a[0]) : Number(a[0]) - Number(b[0])));
  return rows;
}

/** Keeps the best MAX_LEVELS of a side: far levels are not shown and would only grow. */
function trimSide(side, desc) {
  if (side.size <= MAX_LEVELS) return;
  for (const [p] of sorted(side, desc).slice(MAX_LEVELS)) side.delete(p);
}
