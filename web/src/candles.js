// Candles and volume with TradingView's lightweight-charts (v5 API): the REST klines, then
// the `@kline_1m` stream updating the last bar or adding the next.
import { createChart, CandlestickSeries, HistogramSeries, ColorType } from 'lightweight-charts';

/** Bars kept in the chart; past this the oldest are dropped so a long session stays bounded. */
const MAX_BARS = 1500;
const KEEP_BARS = 1000;

export class Candles {
  constructor(container) {
    this.chart = createChart(container, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: '#11161c' },
        textColor: '#8a96a3',
        attributionLogo: true,
      },
      grid: { vertLines: { color: '#1c232b' }, horzLines: { color: '#1c232b' } },
      timeScale: { timeVisible: true, secondsVisible: false, borderColor: '#2a323c' },
      rightPriceScale: { borderColor: '#2a323c' },
    });
    this.series = this.chart.addSeries(CandlestickSeries, {
      upColor: '#26a69a',
      downColor: '#ef5350',
      borderVisible: false,
      wickUpColor: '#26a69a',
      wickDownColor: '#ef5350',
    });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceScaleId: '',
      priceFormat: { type: 'volume' },
      color: '#3b4653',
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.bars = [];
  }

  /** The price format of the market: its tick. */
  setPrecision(places, tick) {
    this.series.applyOptions({ priceFormat: { type: 'price', precision: places, minMove: tick } });
  }

  /** REST klines: `[[openTime, o, h, l, c, v, ...]]`. */
  load(rows) {
    this.bars = rows.map((k) => bar(k[0], k[1], k[2], k[3], k[4], k[5]));
    this.series.setData(this.bars.map((b) => b.candle));
    this.volume.setData(this.bars.map((b) => b.volume));
    this.chart.timeScale().scrollToRealTime();
  }

  /** A `kline` stream payload's `k`. */
  update(k) {
    const b = bar(k.t, k.o, k.h, k.l, k.c, k.v);
    const last = this.bars.at(-1);
    if (last && b.candle.time < last.candle.time) return; // older than what is drawn
    if (last && b.candle.time === last.candle.time) this.bars[this.bars.length - 1] = b;
    else this.bars.push(b);
    if (this.bars.length > MAX_BARS) {
      this.bars = this.bars.slice(-KEEP_BARS);
      this.series.setData(this.bars.map((x) => x.candle));
      this.volume.setData(this.bars.map((x) => x.volume));
      return;
    }
    this.series.update(b.candle);
    this.volume.update(b.volume);
  }

  clear() {
    this.bars = [];
    this.series.setData([]);
    this.volume.setData([]);
  }
}

function bar(t, o, h, l, c, v) {
  const time = Math.floor(Number(t) / 1000);
  const open = Number(o);
  const close = Number(c);
  return {
    candle: { time, open, high: Number(h), low: Number(l), close },
    volume: { time, value: Number(v), color: close >= open ? '#1f5f59' : '#7a3434' },
  };
}
