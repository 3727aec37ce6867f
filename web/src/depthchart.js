// The depth chart: cumulative quantity against price, bids left of the mid in green, asks
// right in red, drawn on a canvas sized to its box and the screen's pixel ratio.

const BID = '#26a69a';
const ASK = '#ef5350';

export class DepthChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.data = null;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** `bids` and `asks` best first, as `[[price, qty]]` of decimal strings. */
  set(bids, asks, label = String) {
    this.data = { bids, asks };
    this.label = label;
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const ctx = this.ctx;
    ctx.clearRect(0, 0, w, h);
    if (!this.data) return;
    const cum = (rows) => {
      let t = 0;
      return rows.map(([p, q]) => [Number(p), (t += Number(q))]);
    };
    const bids = cum(this.data.bids);
    const asks = cum(this.data.asks);
    if (!bids.length && !asks.length) return;
    const prices = [...bids, ...asks].map((r) => r[0]);
    let lo = Math.min(...prices);
    let hi = Math.max(...prices);
    if (hi === lo) {
      lo -= 1;
      hi += 1;
    }
    const top = Math.max(bids.at(-1)?.[1] ?? 0, asks.at(-1)?.[1] ?? 0) * 1.1 || 1;
    const pad = 4 * dpr;
    const x = (p) => pad + ((p - lo) / (hi - lo)) * (w - 2 * pad);
    const y = (q) => h - pad - (q / top) * (h - 2 * pad);
    const area = (rows, color, dir) => {
      if (!rows.length) return;
      ctx.beginPath();
      ctx.moveTo(x(rows[0][0]), y(0));
      let prev = 0;
      for (const [p, q] of rows) {
        // Steps: the cumulative quantity changes at each level's price.
        ctx.lineTo(x(p), y(prev));
        ctx.lineTo(x(p), y(q));
        prev = q;
      }
      ctx.lineTo(dir < 0 ? pad : w - pad, y(prev));
      ctx.lineTo(dir < 0 ? pad : w - pad, y(0));
      ctx.closePath();
      ctx.globalAlpha = 0.25;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5 * dpr;
      ctx.stroke();
    };
    area(bids, BID, -1);
    area(asks, ASK, 1);
    ctx.fillStyle = '#8a96a3';
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = 'top';
    const edge = (rows) => (rows.length ? this.label(rows[rows.length - 1][0]) : '');
    ctx.fillText(edge(this.data.bids), pad, pad);
    const right = edge(this.data.asks);
    ctx.fillText(right, w - pad - ctx.measureText(right).width, pad);
  }
}
