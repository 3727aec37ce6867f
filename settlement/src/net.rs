//! Netting of one settlement epoch: from the engine's `Trade` events, every account's net
//! change per asset (fills and fees), the fee account included; at close, the check that
//! each asset's changes sum to zero over everyone, the BTC nets to pay or collect, and the
//! fills' Merkle root.
//!
//! The balance moves are those of the engine's `Exchange::execute`: base = `qty * lot_size`,
//! quote = `price * qty * quote_per_tick_lot`. The taker receives its side's asset less
//! `taker_fee`; a `maker_fee >= 0` is taken from what the maker receives; a negative one is a
//! rebate of `-maker_fee` paid to the maker in the taker's fee asset, out of `taker_fee`.
//! The fee account gets `taker_fee - rebate` and the maker fee.
//!
//! Pure and allocation-free after warm-up: per-account state lives in dense vectors indexed
//! by account id (accounts are dense, `0..max_accounts`, so these stay far smaller than the
//! engine's own balance table), with the list of accounts touched this epoch, so close and
//! reset cost what the epoch touched, not what the exchange holds.

use std::fmt;

use fulgur_engine::{AccountId, AssetId, Event, Exchange, MarketId, Side};
use serde::{Deserialize, Serialize};

use crate::merkle::{self, MerkleBuilder};
use crate::Hash32;

/// What netting needs of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketLegs {
    pub base: AssetId,
    pub quote: AssetId,
    /// Base minor units per lot.
    pub lot_size: u64,
    /// Quote minor units per tick times lot.
    pub quote_per_tick_lot: u64,
}

impl MarketLegs {
    /// The legs of a market of `exchange`, if it exists.
    pub fn of(exchange: &Exchange, market: MarketId) -> Option<MarketLegs> {
        let spec = exchange.market_spec(market)?;
        Some(MarketLegs {
            base: spec.base,
            quote: spec.quote,
            lot_size: spec.lot_size,
            quote_per_tick_lot: exchange.quote_per_tick_lot(market)?,
        })
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochNets {
    /// Trades netted.
    pub fills: u64,
    /// Sequence numbers of the commands of the first and last trade (0 and 0 without fills).
    pub first_seq: u64,
    pub last_seq: u64,
    /// Every nonzero BTC net in minor units (sats), sorted by account, fee account excluded:
    /// positive is owed to the account, negative owed by it.
    pub btc: Vec<(AccountId, i64)>,
    /// The fee account's BTC net (its fee income, plus its own trades if it trades).
    pub fees_btc: i64,
    /// The fee account's nonzero net in every asset, sorted by asset (BTC included).
    pub fees: Vec<(AssetId, i64)>,
    /// Merkle root of the fills, in order (`merkle`).
    pub fills_root: Hash32,
}

/// Why an epoch could not be netted. The epoch's figures are then not to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// A trade in a market never given to `set_market` (the first one seen).
    UnknownMarket { seq: u64, market: MarketId },
    /// A trade whose fees break the engine's rules (fee above what its payer receives,
    /// rebate above the taker fee, or an amount past `u64`): not an engine trade.
    BadTrade { seq: u64, trade_id: u64 },
    /// Trades must come in command order; `seq` came after `last`.
    SeqBackwards { seq: u64, last: u64 },
    /// The asset's changes over every account, the fee account included, do not sum to zero.
    NotZeroSum { asset: AssetId, sum: i128 },
    /// An account's net does not fit in `i64`.
    Overflow { account: AccountId, asset: AssetId },
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NetError::UnknownMarket { seq, market } => {
                write!(f, "trade at seq {seq} in unknown market {market}")
            }
            NetError::BadTrade { seq, trade_id } => {
                write!(
                    f,
                    "trade {trade_id} at seq {seq} has impossible amounts or fees"
                )
            }
            NetError::SeqBackwards { seq, last } => {
                write!(f, "trade at seq {seq} after a trade at seq {last}")
            }
            NetError::NotZeroSum { asset, sum } => {
                write!(f, "asset {asset}: changes sum to {sum}, not zero")
            }
            NetError::Overflow { account, asset } => {
                write!(f, "account {account}, asset {asset}: net out of i64 range")
            }
        }
    }
}

impl std::error::Error for NetError {}

const NIL: u32 = u32::MAX;

/// A market with its assets as column indexes of the delta table.
#[derive(Clone, Copy, Debug)]
struct Legs {
    base: usize,
    quote: usize,
    lot: u64,
    per: u64,
}

/// Nets trades into per-account, per-asset changes, one epoch at a time.
#[derive(Clone, Debug)]
pub struct Netter {
    fee_account: AccountId,
    /// By market id.
    markets: Vec<Option<Legs>>,
    /// Column -> asset; BTC is column 0, the other assets in the order markets named them.
    assets: Vec<AssetId>,
    /// By account id: the account's row this epoch, or NIL.
    row_of: Vec<u32>,
    /// Row -> account: the accounts touched this epoch, in first-touch order.
    touched: Vec<AccountId>,
    /// Row-major: `deltas[row * assets.len() + column]`. i128: no sum of u64 amounts over
    /// an epoch can overflow it.
    deltas: Vec<i128>,
    merkle: MerkleBuilder,
    fills: u64,
    first_seq: u64,
    last_seq: u64,
    /// The first error of the epoch, reported at close.
    error: Option<NetError>,
}

impl Netter {
    pub fn new(btc: AssetId, fee_account: AccountId) -> Self {
        Netter {
            fee_account,
            markets: Vec::new(),
            assets: vec![btc],
            row_of: Vec::new(),
            touched: Vec::new(),
            deltas: Vec::new(),
            merkle: MerkleBuilder::new(),
            fills: 0,
            first_seq: 0,
            last_seq: 0,
            error: None,
        }
    }

    pub fn btc(&self) -> AssetId {
        self.assets[0]
    }

    pub fn fee_account(&self) -> AccountId {
        self.fee_account
    }

    /// Declares (or redeclares) a market. May come mid-epoch, as markets are added by
    /// commands in the same stream as trades.
    pub fn set_market(&mut self, market: MarketId, legs: MarketLegs) {
        let base = self.column(legs.base);
        let quote = self.column(legs.quote);
        let m = market as usize;
        if m >= self.markets.len() {
            self.markets.resize(m + 1, None);
        }
        self.markets[m] = Some(Legs {
            base,
            quote,
            lot: legs.lot_size,
            per: legs.quote_per_tick_lot,
        });
    }

    /// The asset's column, adding one (and widening every row) for a new asset.
    fn column(&mut self, asset: AssetId) -> usize {
        if let Some(c) = self.assets.iter().position(|&a| a == asset) {
            return c;
        }
        let old = self.assets.len();
        self.assets.push(asset);
        if !self.touched.is_empty() {
            // Rare (a new asset's first market, mid-epoch): re-lay the rows at the new width.
            let mut wide = vec![0i128; self.touched.len() * (old + 1)];
            for (row, chunk) in self.deltas.chunks(old).enumerate() {
                wide[row * (old + 1)..row * (old + 1) + old].copy_from_slice(chunk);
            }
            self.deltas = wide;
        }
        old
    }

    /// Nets one event; anything but a `Trade` is ignored. `seq` is the sequence number of the
    /// command whose events hold it (several trades may share one).
    pub fn on_trade(&mut self, seq: u64, trade: &Event) {
        let Event::Trade {
            trade_id,
            market,
            price,
            qty,
            maker_account,
            taker_account,
            taker_side,
            maker_fee,
            taker_fee,
            ..
        } = *trade
        else {
            return;
        };
        if self.fills > 0 && seq < self.last_seq {
            self.fail(NetError::SeqBackwards {
                seq,
                last: self.last_seq,
            });
        }
        if self.fills == 0 {
            self.first_seq = seq;
        }
        self.fills += 1;
        self.last_seq = seq;
        if let Some(l) = merkle::leaf_bytes(seq, trade) {
            self.merkle.push_leaf(merkle::leaf_of_bytes(&l));
        }
        let Some(Some(legs)) = self.markets.get(market as usize).copied() else {
            self.fail(NetError::UnknownMarket { seq, market });
            return;
        };
        let base = qty as u128 * legs.lot as u128;
        // Three u64 factors can pass u128; past u64 is refused below either way.
        let quote = (price as u128 * qty as u128).saturating_mul(legs.per as u128);
        // The taker receives one leg and pays the other; the maker the reverse.
        let (t_recv_col, t_recv, t_pay_col, t_pay) = match taker_side {
            Side::Buy => (legs.base, base, legs.quote, quote),
            Side::Sell => (legs.quote, quote, legs.base, base),
        };
        let taker_fee = taker_fee as u128;
        let (maker_fee, rebate) = if maker_fee >= 0 {
            (maker_fee as u128, 0)
        } else {
            (0, maker_fee.unsigned_abs() as u128)
        };
        if t_recv > u64::MAX as u128
            || t_pay > u64::MAX as u128
            || taker_fee > t_recv
            || rebate > taker_fee
            || maker_fee > t_pay
        {
            self.fail(NetError::BadTrade { seq, trade_id });
            return;
        }
        // Each party's legs on their own, from its point of view; the zero-sum check at
        // close then has something to catch.
        let (t_recv, t_pay, taker_fee, maker_fee, rebate) = (
            t_recv as i128,
            t_pay as i128,
            taker_fee as i128,
            maker_fee as i128,
            rebate as i128,
        );
        let taker = self.row(taker_account);
        self.add(taker, t_recv_col, t_recv - taker_fee);
        self.add(taker, t_pay_col, -t_pay);
        let maker = self.row(maker_account);
        self.add(maker, t_recv_col, rebate - t_recv);
        self.add(maker, t_pay_col, t_pay - maker_fee);
        let fee = self.row(self.fee_account);
        self.add(fee, t_recv_col, taker_fee - rebate);
        self.add(fee, t_pay_col, maker_fee);
    }

    fn fail(&mut self, e: NetError) {
        self.error.get_or_insert(e);
    }

    /// The account's row, giving it one on its first touch this epoch.
    #[inline]
    fn row(&mut self, account: AccountId) -> usize {
        let a = account as usize;
        if a >= self.row_of.len() {
            self.row_of.resize(a + 1, NIL);
        }
        let r = self.row_of[a];
        if r != NIL {
            return r as usize;
        }
        let r = self.touched.len();
        self.touched.push(account);
        self.row_of[a] = r as u32;
        self.deltas.resize(self.deltas.len() + self.assets.len(), 0);
        r
    }

    #[inline]
    fn add(&mut self, row: usize, column: usize, amount: i128) {
        self.deltas[row * self.assets.len() + column] += amount;
    }

    /// Closes the epoch: its figures, then a clean start for the next epoch (also after an
    /// error; an error means the epoch's trades could not be netted).
    pub fn close(&mut self) -> Result<EpochNets, NetError> {
        let mut out = EpochNets::default();
        self.close_into(&mut out)?;
        Ok(out)
    }

    /// `close`, writing into `out` so that its vectors' capacity is reused: no allocation
    /// after warm-up.
    pub fn close_into(&mut self, out: &mut EpochNets) -> Result<(), NetError> {
        let result = self.figures(out);
        self.reset();
        result
    }

    fn figures(&self, out: &mut EpochNets) -> Result<(), NetError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let width = self.assets.len();
        for (c, &asset) in self.assets.iter().enumerate() {
            let sum: i128 = self.deltas.chunks_exact(width).map(|row| row[c]).sum();
            if sum != 0 {
                return Err(NetError::NotZeroSum { asset, sum });
            }
        }
        let net = |account: AccountId, asset: AssetId, d: i128| {
            i64::try_from(d).map_err(|_| NetError::Overflow { account, asset })
        };
        out.fills = self.fills;
        out.first_seq = self.first_seq;
        out.last_seq = self.last_seq;
        out.fills_root = self.merkle.root();
        out.btc.clear();
        out.fees.clear();
        out.fees_btc = 0;
        let btc = self.assets[0];
        for (row, &account) in self.touched.iter().enumerate() {
            let deltas = &self.deltas[row * width..(row + 1) * width];
            if account == self.fee_account {
                for (&asset, &d) in self.assets.iter().zip(deltas) {
                    if d != 0 {
                        out.fees.push((asset, net(account, asset, d)?));
                    }
                }
                out.fees_btc = net(account, btc, deltas[0])?;
            } else if deltas[0] != 0 {
                out.btc.push((account, net(account, btc, deltas[0])?));
            }
        }
        out.btc.sort_unstable_by_key(|&(a, _)| a);
        out.fees.sort_unstable_by_key(|&(a, _)| a);
        Ok(())
    }

    fn reset(&mut self) {
        for &a in &self.touched {
            self.row_of[a as usize] = NIL;
        }
        self.touched.clear();
        self.deltas.clear();
        self.merkle.reset();
        self.fills = 0;
        self.first_seq = 0;
        self.last_seq = 0;
        self.error = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BTC: AssetId = 0;
    const USD: AssetId = 1;
    const ETH: AssetId = 2;
    const FEE: AccountId = 0;

    #[allow(clippy::too_many_arguments)]
    fn trade(
        id: u64,
        market: MarketId,
        price: u64,
        qty: u64,
        maker: AccountId,
        taker: AccountId,
        side: Side,
        maker_fee: i64,
        taker_fee: u64,
    ) -> Event {
        Event::Trade {
            trade_id: id,
            market,
            price,
            qty,
            maker_order: 1,
            maker_account: maker,
            taker_order: 2,
            taker_account: taker,
            taker_side: side,
            maker_fee,
            taker_fee,
            maker_remaining: 0,
        }
    }

    fn netter() -> Netter {
        let mut n = Netter::new(BTC, FEE);
        // BTC/USD: 1 lot = 100 sats, 1 tick x 1 lot = 10 USD minor units.
        n.set_market(
            0,
            MarketLegs {
                base: BTC,
                quote: USD,
                lot_size: 100,
                quote_per_tick_lot: 10,
            },
        );
        n
    }

    #[test]
    fn a_buy_and_a_sell_by_hand() {
        let mut n = netter();
        // Taker 2 buys 3 lots (300 sats) at 7 ticks (210 USD) from maker 1; taker fee 3 sats,
        // maker rebate 1 sat.
        n.on_trade(5, &trade(1, 0, 7, 3, 1, 2, Side::Buy, -1, 3));
        // Taker 1 sells 2 lots (200 sats) at 7 (140 USD) to maker 3; taker fee 4 USD, maker
        // fee 2 sats.
        n.on_trade(6, &trade(2, 0, 7, 2, 3, 1, Side::Sell, 2, 4));
        n.on_trade(6, &Event::AssetAdded { asset: 9 });
        let e = n.close().unwrap();
        assert_eq!((e.fills, e.first_seq, e.last_seq), (2, 5, 6));
        assert_eq!(e.btc, vec![(1, -300 + 1 - 200), (2, 300 - 3), (3, 200 - 2)]);
        assert_eq!(e.fees_btc, 3 - 1 + 2);
        assert_eq!(e.fees, vec![(BTC, 4), (USD, 4)]);
        let leaves = [
            merkle::leaf(5, &trade(1, 0, 7, 3, 1, 2, Side::Buy, -1, 3)).unwrap(),
            merkle::leaf(6, &trade(2, 0, 7, 2, 3, 1, Side::Sell, 2, 4)).unwrap(),
        ];
        assert_eq!(e.fills_root, merkle::root(&leaves));
        // Reset: the next epoch starts from nothing.
        assert_eq!(n.close().unwrap(), EpochNets::default());
    }

    #[test]
    fn a_market_added_mid_epoch_widens_the_rows() {
        let mut n = netter();
        n.on_trade(1, &trade(1, 0, 7, 3, 1, 2, Side::Buy, 0, 0));
        n.set_market(
            1,
            MarketLegs {
                base: ETH,
                quote: BTC,
                lot_size: 1,
                quote_per_tick_lot: 1,
            },
        );
        // Taker 1 buys 5 ETH at 2 sats each from maker 2, fees 1 ETH and 3 sats.
        n.on_trade(2, &trade(2, 1, 2, 5, 2, 1, Side::Buy, 3, 1));
        let e = n.close().unwrap();
        // 300 sats from 1 to 2 in the first trade, 10 back in the second.
        assert_eq!(e.btc, vec![(1, -310), (2, 310 - 3)]);
        assert_eq!(e.fees, vec![(BTC, 3), (ETH, 1)]);
    }

    #[test]
    fn errors_are_reported_at_close_and_cleared() {
        let mut n = netter();
        n.on_trade(1, &trade(1, 4, 7, 3, 1, 2, Side::Buy, 0, 0));
        assert_eq!(
            n.close(),
            Err(NetError::UnknownMarket { seq: 1, market: 4 })
        );
        n.on_trade(3, &trade(1, 0, 7, 3, 1, 2, Side::Buy, 0, 0));
        n.on_trade(2, &trade(2, 0, 7, 3, 1, 2, Side::Buy, 0, 0));
        assert_eq!(n.close(), Err(NetError::SeqBackwards { seq: 2, last: 3 }));
        // A taker fee above the 300 sats received, then a rebate above the taker fee.
        n.on_trade(1, &trade(7, 0, 7, 3, 1, 2, Side::Buy, 0, 301));
        assert_eq!(
            n.close(),
            Err(NetError::BadTrade {
                seq: 1,
                trade_id: 7
            })
        );
        n.on_trade(1, &trade(8, 0, 7, 3, 1, 2, Side::Buy, -4, 3));
        assert_eq!(
            n.close(),
            Err(NetError::BadTrade {
                seq: 1,
                trade_id: 8
            })
        );
        // A notional past u64, and past u128 before the check.
        n.set_market(
            1,
            MarketLegs {
                base: BTC,
                quote: USD,
                lot_size: 1,
                quote_per_tick_lot: u64::MAX,
            },
        );
        n.on_trade(1, &trade(9, 1, u64::MAX, u64::MAX, 1, 2, Side::Buy, 0, 0));
        assert_eq!(
            n.close(),
            Err(NetError::BadTrade {
                seq: 1,
                trade_id: 9
            })
        );
        assert!(n.close().is_ok());
    }

    #[test]
    fn a_leg_that_does_not_balance_is_caught() {
        let mut n = netter();
        n.on_trade(1, &trade(1, 0, 7, 3, 1, 2, Side::Buy, 1, 2));
        // Corrupt one account's USD change, as a wrong leg formula would.
        let row = n.row_of[2] as usize;
        n.add(row, 1, 1);
        assert_eq!(n.close(), Err(NetError::NotZeroSum { asset: USD, sum: 1 }));
    }

    #[test]
    fn nets_beyond_i64_overflow() {
        let mut n = Netter::new(BTC, FEE);
        n.set_market(
            0,
            MarketLegs {
                base: BTC,
                quote: USD,
                lot_size: u64::MAX,
                quote_per_tick_lot: 1,
            },
        );
        n.on_trade(1, &trade(1, 0, 1, 1, 1, 2, Side::Buy, 0, 0));
        assert_eq!(
            n.close(),
            Err(NetError::Overflow {
                account: 2,
                asset: BTC
            })
        );
    }

    #[test]
    fn capacity_is_kept_across_epochs() {
        let mut n = netter();
        let mut out = EpochNets::default();
        let mut first = None;
        for _ in 0..3 {
            for i in 0..100u32 {
                n.on_trade(
                    i as u64,
                    &trade(i as u64, 0, 7, 1, 1 + i % 10, 11 + i % 7, Side::Buy, 0, 0),
                );
            }
            n.close_into(&mut out).unwrap();
            assert_eq!(out.btc.len(), 17);
            let caps = (
                n.touched.capacity(),
                n.deltas.capacity(),
                n.row_of.len(),
                out.btc.capacity(),
            );
            assert_eq!(*first.get_or_insert(caps), caps);
        }
    }
}
