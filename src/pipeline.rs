//! The order pipeline: gateways → bounded lock-free queues → one engine thread (sequence,
//! journal, make durable, apply) → batches of events to readers.
//!
//! No mutex on the order path. Threads meet only in `crossbeam` `ArrayQueue`s (bounded,
//! lock-free) and in `Arc`-shared event batches:
//! - A gateway's `submit` pushes into its own queue; a full queue is an immediate `Busy`,
//!   never a blocked engine.
//! - The engine thread drains the queues round-robin into a batch (at most `batch_max`),
//!   stamps each command with the next sequence number and the wall clock (the engine itself
//!   reads none), appends the batch to the journal, makes it durable per the fsync policy,
//!   applies it, and only then publishes it: a reader never sees an event whose command is
//!   not durable, so replies sent from published batches are replies after durability.
//! - Each reader has a bounded queue of batches. A reader that lets its queue fill is cut
//!   off (its `next` says so) instead of slowing the engine. Batches are recycled once every
//!   reader has dropped them, so the steady state does not allocate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::sync::{Parker, Unparker};
use fulgur_engine::{Command, CommandKind, Event, Exchange, Sequenced};

/// Who sent a command: replies are routed back by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    pub gateway: u16,
    /// Chosen by the gateway; echoed in the batch entry.
    pub request: u64,
}

#[derive(Debug)]
pub struct Request {
    pub origin: Origin,
    pub command: Command,
}

/// The gateway's queue is full: the command was not taken ("server busy").
#[derive(Debug, PartialEq, Eq)]
pub struct Busy(pub Command);

/// What the engine thread does when every queue is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on the queues: lowest latency, burns a core.
    Spin,
    /// Spin `spins` times, then park until a gateway unparks it (or `park_us` passes).
    SpinThenPark { spins: u32, park_us: u64 },
}

/// Where batches become durable before they are applied: the journal, or a stand-in.
pub trait Durable: Send + 'static {
    /// Appends a batch (not yet durable).
    fn append(&mut self, batch: &[Sequenced]) -> std::io::Result<()>;
    /// Makes everything appended so far durable if the policy says it is due at `now_ns`
    /// (always, for fsync-per-batch); returns the time the sync took, if one ran.
    fn sync_if_due(&mut self, now_ns: u64) -> std::io::Result<Option<Duration>>;
    /// Makes everything appended durable now (shutdown).
    fn sync_now(&mut self) -> std::io::Result<()>;
}

/// Writes a snapshot of the exchange after `last_seq` (periodically and at shutdown).
pub trait Snapshotter: Send + 'static {
    fn snapshot(&mut self, exchange: &Exchange, last_seq: u64) -> std::io::Result<()>;
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Gateways (each with its own queue).
    pub gateways: u16,
    /// Requests one gateway's queue holds.
    pub queue_capacity: usize,
    /// Commands one batch takes at most.
    pub batch_max: usize,
    /// Batches one reader's queue holds before the reader is cut off.
    pub reader_capacity: usize,
    /// Readers at most.
    pub max_readers: usize,
    pub wait: WaitStrategy,
    /// A snapshot every this many commands (0 = only at shutdown).
    pub snapshot_every: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            gateways: 4,
            queue_capacity: 65_536,
            batch_max: 1_024,
            // Up to 256 batches (256 x batch_max commands) of lag before a reader is cut
            // off; with the batch buffers this bounds what a slow reader can pin.
            reader_capacity: 256,
            max_readers: 64,
            // Two cores: a spinning engine thread would take one from the network threads
            // for good; spin briefly (a burst usually brings the next command within
            // microseconds), then park until a gateway unparks it.
            wait: WaitStrategy::SpinThenPark {
                spins: 2_000,
                park_us: 1_000,
            },
            snapshot_every: 1_000_000,
        }
    }
}

/// One command of a published batch.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub seq: u64,
    pub ts_ns: u64,
    pub origin: Origin,
    pub kind: CommandKind,
    /// Its events: `Batch::events[first..first + count]`.
    pub first: u32,
    pub count: u32,
}

/// Commands of one batch and their events, published after they are durable.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    pub events: Vec<Event>,
}

impl Batch {
    pub fn events_of(&self, e: &Entry) -> &[Event] {
        &self.events[e.first as usize..(e.first + e.count) as usize]
    }
}

/// Counters the engine thread keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub readers_cut_off: AtomicU64,
    pub last_seq: AtomicU64,
    /// Sum and count of durable-sync times, ns (histograms live with the metrics endpoint).
    pub sync_ns_total: AtomicU64,
    pub syncs: AtomicU64,
    pub apply_ns_total: AtomicU64,
}

/// A gateway's handle: submit commands, unpark the engine.
#[derive(Clone)]
pub struct Gateway {
    id: u16,
    queue: Arc<ArrayQueue<Request>>,
    engine: Unparker,
    stats: Arc<Stats>,
}

impl Gateway {
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Queues a command; `Busy` at once if the queue is full.
    pub fn submit(&self, request: u64, command: Command) -> Result<(), Busy> {
        let r = Request {
            origin: Origin {
                gateway: self.id,
                request,
            },
            command,
        };
        match self.queue.push(r) {
            Ok(()) => {
                self.engine.unpark();
                Ok(())
            }
            Err(r) => {
                self.stats.busy_rejections.fetch_add(1, Ordering::Relaxed);
                Err(Busy(r.command))
            }
        }
    }

    /// Requests waiting in this gateway's queue.
    pub fn depth(&self) -> usize {
        self.queue.len()
    }
}

/// The reader's queue filled up: it was cut off and must resubscribe (and resync state).
#[derive(Debug, PartialEq, Eq)]
pub struct CutOff;

struct ReaderShared {
    queue: ArrayQueue<Arc<Batch>>,
    cut_off: AtomicBool,
    wake: Unparker,
}

/// A consumer of published batches, at its own pace.
pub struct Reader {
    shared: Arc<ReaderShared>,
    parker: Parker,
}

impl Reader {
    /// The next batch if one is ready; `Err(CutOff)` once the reader was cut off and its
    /// queue is drained.
    pub fn try_next(&self) -> Result<Option<Arc<Batch>>, CutOff> {
        match self.shared.queue.pop() {
            Some(b) => Ok(Some(b)),
            None if self.shared.cut_off.load(Ordering::Acquire) => {
                // A batch may have landed between the pop and the flag.
                self.shared.queue.pop().map(Some).ok_or(CutOff)
            }
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the next batch.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<Arc<Batch>>, CutOff> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = self.try_next()? {
                return Ok(Some(b));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.parker.park_timeout(deadline - now);
        }
    }
}

/// The running pipeline.
pub struct Pipeline {
    gateways: Vec<Gateway>,
    new_readers: Arc<ArrayQueue<Arc<ReaderShared>>>,
    stop: Arc<AtomicBool>,
    engine: Unparker,
    thread: Option<JoinHandle<EngineThread>>,
    pub stats: Arc<Stats>,
    reader_capacity: usize,
}

/// What the engine thread owns; returned when it stops.
pub struct EngineThread {
    pub exchange: Exchange,
    pub last_seq: u64,
    durable: Box<dyn Durable>,
    snapshotter: Box<dyn Snapshotter>,
}

impl EngineThread {
    pub fn new(
        exchange: Exchange,
        last_seq: u64,
        durable: Box<dyn Durable>,
        snapshotter: Box<dyn Snapshotter>,
    ) -> Self {
        EngineThread {
            exchange,
            last_seq,
            durable,
            snapshotter,
        }
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Pipeline {
    /// Starts the engine thread on a recovered exchange.
    pub fn start(cfg: PipelineConfig, engine: EngineThread) -> Pipeline {
        let parker = Parker::new();
        let unparker = parker.unparker().clone();
        let stats = Arc::new(Stats::default());
        stats.last_seq.store(engine.last_seq, Ordering::Relaxed);
        let gateways: Vec<Gateway> = (0..cfg.gateways)
            .map(|id| Gateway {
                id,
                queue: Arc::new(ArrayQueue::new(cfg.queue_capacity)),
                engine: unparker.clone(),
                stats: stats.clone(),
            })
            .collect();
        let new_readers = Arc::new(ArrayQueue::new(cfg.max_readers));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            queues: gateways.iter().map(|g| g.queue.clone()).collect(),
            new_readers: new_readers.clone(),
            readers: Vec::with_capacity(cfg.max_readers),
            pool: Vec::new(),
            stop: stop.clone(),
            stats: stats.clone(),
            cfg: cfg.clone(),
            parker,
        };
        let thread = std::thread::Builder::new()
            .name("fulgur-engine".into())
            .spawn(move || worker.run(engine))
            .expect("spawn the engine thread");
        Pipeline {
            gateways,
            new_readers,
            stop,
            engine: unparker,
            thread: Some(thread),
            stats,
            reader_capacity: cfg.reader_capacity,
        }
    }

    pub fn gateway(&self, id: u16) -> Gateway {
        self.gateways[id as usize].clone()
    }

    /// A new reader; it sees batches published after the engine thread picks it up.
    /// `None` when `max_readers` are waiting to be picked up.
    pub fn subscribe(&self) -> Option<Reader> {
        let parker = Parker::new();
        let shared = Arc::new(ReaderShared {
            queue: ArrayQueue::new(self.reader_capacity),
            cut_off: AtomicBool::new(false),
            wake: parker.unparker().clone(),
        });
        self.new_readers.push(shared.clone()).ok()?;
        self.engine.unpark();
        Some(Reader { shared, parker })
    }

    /// Requests waiting in all gateway queues.
    pub fn queue_depth(&self) -> usize {
        self.gateways.iter().map(Gateway::depth).sum()
    }

    /// Stops taking new work, drains every queue, makes it durable, snapshots, and returns
    /// the engine's state.
    pub fn shutdown(mut self) -> EngineThread {
        self.stop.store(true, Ordering::Release);
        self.engine.unpark();
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("engine thread panicked")
    }
}

struct Worker {
    queues: Vec<Arc<ArrayQueue<Request>>>,
    new_readers: Arc<ArrayQueue<Arc<ReaderShared>>>,
    readers: Vec<Arc<ReaderShared>>,
    /// Batches to reuse once no reader holds them.
    pool: Vec<Arc<Batch>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    cfg: PipelineConfig,
    parker: Parker,
}

impl Worker {
    fn run(mut self, mut e: EngineThread) -> EngineThread {
        let mut cmds: Vec<Sequenced> = Vec::with_capacity(self.cfg.batch_max);
        let mut origins: Vec<Origin> = Vec::with_capacity(self.cfg.batch_max);
        let mut next_queue = 0usize;
        let mut idle_spins = 0u32;
        let mut since_snapshot = 0u64;
        loop {
            while let Some(r) = self.new_readers.pop() {
                self.readers.push(r);
            }
            // Drain round-robin so one busy gateway cannot starve the others.
            cmds.clear();
            origins.clear();
            let mut empty_rounds = 0;
            while cmds.len() < self.cfg.batch_max && empty_rounds < self.queues.len() {
                let q = &self.queues[next_queue];
                next_queue = (next_queue + 1) % self.queues.len();
                match q.pop() {
                    Some(r) => {
                        empty_rounds = 0;
                        e.last_seq += 1;
                        cmds.push(Sequenced {
                            seq: e.last_seq,
                            ts_ns: 0,
                            command: r.command,
                        });
                        origins.push(r.origin);
                    }
                    None => empty_rounds += 1,
                }
            }
            if cmds.is_empty() {
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
                idle_spins += 1;
                match self.cfg.wait {
                    WaitStrategy::Spin => std::hint::spin_loop(),
                    WaitStrategy::SpinThenPark { spins, park_us } => {
                        if idle_spins < spins {
                            std::hint::spin_loop();
                        } else {
                            self.parker.park_timeout(Duration::from_micros(park_us));
                        }
                    }
                }
                continue;
            }
            idle_spins = 0;
            let now = wall_ns();
            for c in &mut cmds {
                c.ts_ns = now;
            }
            // Durable before applied: a crash after this point replays the batch.
            e.durable
                .append(&cmds)
                .and_then(|_| e.durable.sync_if_due(now))
                .map(|took| {
                    if let Some(d) = took {
                        self.stats
                            .sync_ns_total
                            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
                        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .expect("the journal failed: stopping rather than acknowledging undurable orders");
            let t0 = Instant::now();
            let mut batch = self.take_batch();
            {
                let b = Arc::get_mut(&mut batch).expect("a recycled batch is unshared");
                for (c, origin) in cmds.iter().zip(&origins) {
                    let first = b.events.len() as u32;
                    e.exchange.apply(c, &mut b.events);
                    b.entries.push(Entry {
                        seq: c.seq,
                        ts_ns: c.ts_ns,
                        origin: *origin,
                        kind: c.command.kind(),
                        first,
                        count: b.events.len() as u32 - first,
                    });
                }
            }
            self.stats
                .apply_ns_total
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.stats
                .commands
                .fetch_add(cmds.len() as u64, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.last_seq.store(e.last_seq, Ordering::Release);
            self.publish(batch);
            since_snapshot += cmds.len() as u64;
            if self.cfg.snapshot_every > 0 && since_snapshot >= self.cfg.snapshot_every {
                since_snapshot = 0;
                if let Err(err) = e.snapshotter.snapshot(&e.exchange, e.last_seq) {
                    // The journal still holds everything: a failed snapshot only makes the
                    // next recovery longer.
                    eprintln!("snapshot after seq {} failed: {err}", e.last_seq);
                }
            }
        }
        e.durable
            .sync_now()
            .expect("the journal failed at shutdown");
        if let Err(err) = e.snapshotter.snapshot(&e.exchange, e.last_seq) {
            eprintln!("snapshot at shutdown failed: {err}");
        }
        for r in &self.readers {
            r.cut_off.store(true, Ordering::Release);
            r.wake.unpark();
        }
        e
    }

    /// A cleared batch: a recycled one that no reader holds any more, or a new one.
    fn take_batch(&mut self) -> Arc<Batch> {
        if let Some(i) = self.pool.iter().position(|b| Arc::strong_count(b) == 1) {
            let mut b = self.pool.swap_remove(i);
            let inner = Arc::get_mut(&mut b).expect("unshared");
            inner.entries.clear();
            inner.events.clear();
            return b;
        }
        Arc::new(Batch {
            entries: Vec::with_capacity(self.cfg.batch_max),
            // Grows to the largest batch seen, then is reused.
            events: Vec::with_capacity(self.cfg.batch_max * 2),
        })
    }

    fn publish(&mut self, batch: Arc<Batch>) {
        let stats = &self.stats;
        self.readers.retain(|r| {
            if r.queue.push(batch.clone()).is_ok() {
                r.wake.unpark();
                true
            } else {
                // Too slow: cut off, never waited for.
                r.cut_off.store(true, Ordering::Release);
                r.wake.unpark();
                stats.readers_cut_off.fetch_add(1, Ordering::Relaxed);
                false
            }
        });
        // Keep the batch for reuse; the pool is bounded by what readers can hold.
        let cap = (self.cfg.reader_capacity + 2) * self.readers.len().max(1);
        if self.pool.len() < cap {
            self.pool.push(batch);
        }
    }
}

/// Durability for tests and benchmarks without a disk: nothing is kept.
pub struct NoJournal;

impl Durable for NoJournal {
    fn append(&mut self, _batch: &[Sequenced]) -> std::io::Result<()> {
        Ok(())
    }
    fn sync_if_due(&mut self, _now_ns: u64) -> std::io::Result<Option<Duration>> {
        Ok(None)
    }
    fn sync_now(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// No snapshots.
pub struct NoSnapshots;

impl Snapshotter for NoSnapshots {
    fn snapshot(&mut self, _exchange: &Exchange, _last_seq: u64) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulgur_engine::EngineConfig;

    fn start(cfg: PipelineConfig) -> Pipeline {
        let ex = Exchange::new(EngineConfig {
            max_accounts: 64,
            max_orders: 1 << 16,
            ..EngineConfig::default()
        });
        Pipeline::start(
            cfg,
            EngineThread::new(ex, 0, Box::new(NoJournal), Box::new(NoSnapshots)),
        )
    }

    fn drain(r: &Reader, want: usize) -> Vec<(Entry, Vec<Event>)> {
        let mut got = Vec::new();
        while got.len() < want {
            let b = r
                .next_timeout(Duration::from_secs(10))
                .expect("not cut off")
                .expect("a batch within 10 s");
            for e in &b.entries {
                got.push((*e, b.events_of(e).to_vec()));
            }
        }
        got
    }

    #[test]
    fn commands_are_sequenced_applied_and_published_to_every_reader() {
        let p = start(PipelineConfig::default());
        let r1 = p.subscribe().unwrap();
        let r2 = p.subscribe().unwrap();
        // Make sure both readers are registered before the first command.
        p.gateway(0).submit(0, Command::Tick).unwrap();
        drain(&r1, 1);
        drain(&r2, 1);
        for i in 1..=100u64 {
            let g = p.gateway((i % 4) as u16);
            g.submit(
                i,
                Command::Deposit {
                    account: 1,
                    asset: 0,
                    amount: 1,
                },
            )
            .unwrap();
        }
        let a = drain(&r1, 100);
        let b = drain(&r2, 100);
        assert_eq!(a.len(), 100);
        for (i, (e, events)) in a.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 2, "contiguous sequence numbers");
            assert_eq!(e.kind, CommandKind::Deposit);
            // No asset exists: every deposit is refused, and says so.
            assert!(matches!(events[..], [Event::CommandRejected { .. }]));
            assert_eq!(b[i].0.seq, e.seq);
        }
        let mut requests: Vec<u64> = a.iter().map(|(e, _)| e.origin.request).collect();
        requests.sort_unstable();
        assert_eq!(requests, (1..=100).collect::<Vec<_>>());
        let e = p.shutdown();
        assert_eq!(e.last_seq, 101);
    }

    #[test]
    fn a_full_queue_is_busy_at_once_and_nothing_taken_is_lost() {
        let cfg = PipelineConfig {
            gateways: 2,
            queue_capacity: 8,
            wait: WaitStrategy::SpinThenPark {
                spins: 1,
                park_us: 100_000,
            },
            ..PipelineConfig::default()
        };
        let p = start(cfg);
        let r = p.subscribe().unwrap();
        let g0 = p.gateway(0);
        let (mut taken, mut busy) = (0u64, 0u64);
        for i in 0..100_000u64 {
            match g0.submit(i, Command::Tick) {
                Ok(()) => taken += 1,
                Err(Busy(Command::Tick)) => busy += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(busy > 0, "a flood beyond capacity must see busy");
        // The other gateway is still served.
        p.gateway(1).submit(u64::MAX, Command::Tick).unwrap();
        let got = drain(&r, taken as usize + 1);
        assert_eq!(got.len() as u64, taken + 1);
        assert!(got.iter().any(|(e, _)| e.origin
            == Origin {
                gateway: 1,
                request: u64::MAX
            }));
        assert_eq!(p.stats.busy_rejections.load(Ordering::Relaxed), busy);
        p.shutdown();
    }

    #[test]
    fn a_slow_reader_is_cut_off_and_the_engine_goes_on() {
        let cfg = PipelineConfig {
            reader_capacity: 4,
            batch_max: 1,
            ..PipelineConfig::default()
        };
        let p = start(cfg);
        let slow = p.subscribe().unwrap();
        let fast = p.subscribe().unwrap();
        let g = p.gateway(0);
        let mut sent = 0;
        for i in 0..200u64 {
            while g.submit(i, Command::Tick).is_err() {}
            sent += 1;
            // The fast reader keeps up.
            drain(&fast, 1);
        }
        assert_eq!(sent, 200);
        let mut seen = 0;
        loop {
            match slow.try_next() {
                Ok(Some(_)) => seen += 1,
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(CutOff) => break,
            }
        }
        assert!(seen <= 5, "the slow reader kept at most its queue");
        assert_eq!(p.stats.readers_cut_off.load(Ordering::Relaxed), 1);
        assert_eq!(p.shutdown().last_seq, 200);
    }
}
