// The local book's sync with REST depth and the diff stream, by Binance's rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DepthBook } from '../src/book.js';

const diff = (U, u, b = [], a = []) => ({ e: 'depthUpdate', U, u, b, a });

test('buffered updates the snapshot already has are dropped, the rest applied', async () => {
  const book = new DepthBook(async () => ({ lastUpdateId: 10, bids: [['100', '1']], asks: [['101', '2']] }));
  book.apply(diff(5, 8, [['99', '9']])); // older than the snapshot
  book.apply(diff(9, 12, [['100', '3']])); // straddles it
  await book.resync();
  book.apply(diff(13, 13, [], [['101', '0'], ['102', '4']]));
  assert.deepEqual(book.top(5), { bids: [['100', '3']], asks: [['102', '4']] });
  assert.equal(book.updateId, 13);
  assert.equal(book.resyncs, 0);
});

test('a gap in the update ids takes a new snapshot', async () => {
  let snapshots = 0;
  const book = new DepthBook(async () => {
    snapshots += 1;
    return snapshots === 1
      ? { lastUpdateId: 1, bids: [['100', '1']], asks: [] }
      : { lastUpdateId: 20, bids: [['98', '5']], asks: [['103', '1']] };
  });
  await book.resync();
  book.apply(diff(2, 3, [['100', '2']]));
  book.apply(diff(5, 6, [['100', '7']])); // 4 is missing
  assert.equal(book.synced, false);
  await book.loading;
  assert.equal(snapshots, 2);
  assert.equal(book.resyncs, 1);
  assert.deepEqual(book.top(5), { bids: [['98', '5']], asks: [['103', '1']] });
  book.apply(diff(21, 21, [['99', '1']]));
  assert.deepEqual(book.top(1).bids, [['99', '1']]);
});

test('sides are sorted by price, best first, numerically', async () => {
  const book = new DepthBook(async () => ({
    lastUpdateId: 1,
    bids: [['9.5', '1'], ['10.25', '1'], ['100', '1']],
    asks: [['1000', '1'], ['200', '1'], ['200.5', '1']],
  }));
  await book.resync();
  assert.deepEqual(book.top(3).bids.map((l) => l[0]), ['100', '10.25', '9.5']);
  assert.deepEqual(book.top(3).asks.map((l) => l[0]), ['200', '200.5', '1000']);
});
