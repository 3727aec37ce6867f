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
use fulgur_engine::{Command, CommandKind, Event, Exchange, Sequenced};
use std::sync::OnceLock;

/// Wakes a thread that waits with `std::thread::park_timeout`. The thread is learnt when it
/// first waits (`register`), so a handle can be handed out before that thread runs. No lock:
/// `std`'s park and unpark are a futex on Linux, and a set `OnceLock` is read with a load.
/// A wake that comes before the waiter registered is lost, which only delays the waiter
/// until its park times out (at most a millisecond everywhere here).
#[derive(Clone, Debug, Default)]
pub struct Wake(Arc<OnceLock<std::thread::Thread>>);

impl Wake {
    /// Makes the calling thread the one `wake` unparks (the first caller stays it).
    fn register(&self) {
        let _ = self.0.set(std::thread::current());
    }

    fn wake(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

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
    /// True when this store never syncs (benchmarks): what is appended counts as durable.
    fn never_syncs(&self) -> bool {
        false
    }
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
            // Batches a reader may lag behind before it is cut off. Under light load batches
            // are small (a few commands), so this is counted generously; a batch's memory
            // follows what it carries.
            reader_capacity: 4_096,
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
    /// The commands as sequenced and journaled.
    pub commands: Vec<Sequenced>,
    pub origins: Vec<Origin>,
    pub entries: Vec<Entry>,
    pub events: Vec<Event>,
    /// Time this batch waited for its journal sync (0 if none ran for it).
    pub sync_ns: u64,
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
    pub fsync_histogram: Buckets,
}

/// A fixed-bucket latency histogram of atomics (Prometheus style): recorded lock-free.
#[derive(Debug)]
pub struct Buckets {
    bounds_ns: [u64; 12],
    counts: [AtomicU64; 13],
    sum_ns: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            bounds_ns: [
                50_000,
                100_000,
                250_000,
                500_000,
                1_000_000,
                2_500_000,
                5_000_000,
                10_000_000,
                25_000_000,
                50_000_000,
                100_000_000,
                1_000_000_000,
            ],
            counts: Default::default(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Buckets {
    pub fn record(&self, ns: u64) {
        let i = self
            .bounds_ns
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(self.bounds_ns.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Prometheus text of a histogram in seconds.
    pub fn prometheus(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (i, b) in self.bounds_ns.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "{name}_bucket{{le=\"{}\"}} {cumulative}\n",
                *b as f64 / 1e9
            ));
        }
        cumulative += self.counts[self.bounds_ns.len()].load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
        out.push_str(&format!(
            "{name}_sum {:.9}\n{name}_count {cumulative}\n",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        ));
        out
    }
}

/// A gateway's handle: submit commands, unpark the engine.
#[derive(Clone)]
pub struct Gateway {
    id: u16,
    queue: Arc<ArrayQueue<Request>>,
    engine: Wake,
    stats: Arc<Stats>,
}

impl Gateway {
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
                self.engine.wake();
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
    wake: Wake,
}

/// A consumer of published batches, at its own pace. Wait on it from one thread: the
/// first thread that waits is the one woken when a batch comes.
pub struct Reader {
    shared: Arc<ReaderShared>,
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
            self.shared.wake.register();
            // A batch may have come between the check above and registering.
            if let Some(b) = self.try_next()? {
                return Ok(Some(b));
            }
            // Capped: a reader moved to another thread after it first waited is woken at
            // the first thread; it then polls at this pace instead of stalling.
            std::thread::park_timeout((deadline - now).min(Duration::from_millis(1)));
        }
    }
}

/// The running pipeline.
pub struct Pipeline {
    gateways: Vec<Gateway>,
    new_readers: Arc<ArrayQueue<Arc<ReaderShared>>>,
    stop: Arc<AtomicBool>,
    engine: Wake,
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

/// Batches applied by the engine thread, on their way through the journal thread.
const JOURNAL_QUEUE: usize = 64;

/// What the engine and journal threads share.
struct Handoff {
    /// Applied, not yet durable; the journal thread takes them in order.
    to_journal: ArrayQueue<Arc<Batch>>,
    /// Published batches no reader holds any more, for the engine thread to reuse.
    free: ArrayQueue<Arc<Batch>>,
    /// Highest sequence number known durable.
    durable_seq: AtomicU64,
    engine_done: AtomicBool,
    journal: Wake,
    engine: Wake,
}

impl Pipeline {
    /// Starts the engine thread (and its journal thread) on a recovered exchange.
    pub fn start(cfg: PipelineConfig, engine: EngineThread) -> Pipeline {
        let engine_wake = Wake::default();
        let stats = Arc::new(Stats::default());
        stats.last_seq.store(engine.last_seq, Ordering::Relaxed);
        let gateways: Vec<Gateway> = (0..cfg.gateways)
            .map(|id| Gateway {
                id,
                queue: Arc::new(ArrayQueue::new(cfg.queue_capacity)),
                engine: engine_wake.clone(),
                stats: stats.clone(),
            })
            .collect();
        let new_readers = Arc::new(ArrayQueue::new(cfg.max_readers));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            queues: gateways.iter().map(|g| g.queue.clone()).collect(),
            new_readers: new_readers.clone(),
            stop: stop.clone(),
            stats: stats.clone(),
            cfg: cfg.clone(),
            wake: engine_wake.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("fulgur-engine".into())
            .spawn(move || worker.run(engine))
            .expect("spawn the engine thread");
        Pipeline {
            gateways,
            new_readers,
            stop,
            engine: engine_wake,
            thread: Some(thread),
            stats,
            reader_capacity: cfg.reader_capacity,
        }
    }

    /// Number of gateways (`gateway(0..n)`).
    pub fn gateways(&self) -> u16 {
        self.gateways.len() as u16
    }

    pub fn gateway(&self, id: u16) -> Gateway {
        self.gateways[id as usize].clone()
    }

    /// A new reader; it sees batches published after the journal thread picks it up.
    /// `None` when `max_readers` are waiting to be picked up.
    pub fn subscribe(&self) -> Option<Reader> {
        let shared = Arc::new(ReaderShared {
            queue: ArrayQueue::new(self.reader_capacity),
            cut_off: AtomicBool::new(false),
            wake: Wake::default(),
        });
        self.new_readers.push(shared.clone()).ok()?;
        self.engine.wake();
        Some(Reader { shared })
    }

    /// Requests waiting in all gateway queues.
    pub fn queue_depth(&self) -> usize {
        self.gateways.iter().map(Gateway::depth).sum()
    }

    /// Stops taking new work, drains every queue, makes it durable, publishes it,
    /// snapshots, and returns the engine's state.
    pub fn shutdown(mut self) -> EngineThread {
        self.stop.store(true, Ordering::Release);
        self.engine.wake();
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
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    cfg: PipelineConfig,
    /// Registered by the engine thread: gateways wake it.
    wake: Wake,
}

impl Worker {
    /// The engine thread: sequence, apply, hand to the journal thread. The journal thread
    /// makes batches durable (one fsync for all the batches waiting: group commit) and only
    /// then publishes them, so the engine never waits for the disk and no reader sees an
    /// event of a command that is not durable.
    fn run(self, mut e: EngineThread) -> EngineThread {
        self.wake.register();
        let handoff = Arc::new(Handoff {
            to_journal: ArrayQueue::new(JOURNAL_QUEUE),
            free: ArrayQueue::new(JOURNAL_QUEUE + self.cfg.reader_capacity),
            durable_seq: AtomicU64::new(e.last_seq),
            engine_done: AtomicBool::new(false),
            journal: Wake::default(),
            engine: self.wake.clone(),
        });
        let durable = std::mem::replace(&mut e.durable, Box::new(NoJournal));
        let journal = JournalThread {
            durable,
            handoff: handoff.clone(),
            new_readers: self.new_readers.clone(),
            readers: Vec::with_capacity(self.cfg.max_readers),
            held: Vec::new(),
            appended: e.last_seq,
            stats: self.stats.clone(),
        };
        let journal_thread = std::thread::Builder::new()
            .name("fulgur-journal".into())
            .spawn(move || journal.run())
            .expect("spawn the journal thread");

        let mut next_queue = 0usize;
        let mut idle_spins = 0u32;
        let mut since_snapshot = 0u64;
        let mut batch: Option<Arc<Batch>> = None;
        loop {
            let b = batch.get_or_insert_with(|| take_batch(&handoff, self.cfg.batch_max));
            let inner = Arc::get_mut(b).expect("a batch being filled is unshared");
            // Drain round-robin so one busy gateway cannot starve the others.
            let mut empty_rounds = 0;
            while inner.commands.len() < self.cfg.batch_max && empty_rounds < self.queues.len() {
                let q = &self.queues[next_queue];
                next_queue = (next_queue + 1) % self.queues.len();
                match q.pop() {
                    Some(r) => {
                        empty_rounds = 0;
                        e.last_seq += 1;
                        inner.commands.push(Sequenced {
                            seq: e.last_seq,
                            ts_ns: 0,
                            command: r.command,
                        });
                        inner.origins.push(r.origin);
                    }
                    None => empty_rounds += 1,
                }
            }
            if inner.commands.is_empty() {
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
                            std::thread::park_timeout(Duration::from_micros(park_us));
                        }
                    }
                }
                continue;
            }
            idle_spins = 0;
            let now = wall_ns();
            let t0 = Instant::now();
            let Batch {
                commands,
                origins,
                entries,
                events,
                ..
            } = inner;
            for (c, origin) in commands.iter_mut().zip(origins.iter()) {
                c.ts_ns = now;
                let first = events.len() as u32;
                e.exchange.apply(c, events);
                entries.push(Entry {
                    seq: c.seq,
                    ts_ns: c.ts_ns,
                    origin: *origin,
                    kind: c.command.kind(),
                    first,
                    count: events.len() as u32 - first,
                });
            }
            let n = commands.len() as u64;
            self.stats
                .apply_ns_total
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.stats.commands.fetch_add(n, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.last_seq.store(e.last_seq, Ordering::Release);
            let mut full = batch.take().expect("filled above");
            // The journal queue is full only when the disk is behind: wait for it (the
            // gateways' own queues fill meanwhile and answer "busy").
            loop {
                match handoff.to_journal.push(full) {
                    Ok(()) => break,
                    Err(back) => {
                        full = back;
                        handoff.journal.wake();
                        std::thread::park_timeout(Duration::from_micros(100));
                    }
                }
            }
            handoff.journal.wake();
            since_snapshot += n;
            if self.cfg.snapshot_every > 0 && since_snapshot >= self.cfg.snapshot_every {
                since_snapshot = 0;
                wait_durable(&handoff, e.last_seq);
                if let Err(err) = e.snapshotter.snapshot(&e.exchange, e.last_seq) {
                    // The journal still holds everything: a failed snapshot only makes the
                    // next recovery longer.
                    eprintln!("snapshot after seq {} failed: {err}", e.last_seq);
                }
            }
        }
        handoff.engine_done.store(true, Ordering::Release);
        handoff.journal.wake();
        e.durable = journal_thread.join().expect("journal thread panicked");
        if let Err(err) = e.snapshotter.snapshot(&e.exchange, e.last_seq) {
            eprintln!("snapshot at shutdown failed: {err}");
        }
        e
    }
}

/// A cleared batch: one the journal thread recycled, or a new one.
fn take_batch(handoff: &Handoff, batch_max: usize) -> Arc<Batch> {
    match handoff.free.pop() {
        Some(mut b) => {
            let inner = Arc::get_mut(&mut b).expect("recycled batches are unshared");
            inner.commands.clear();
            inner.origins.clear();
            inner.entries.clear();
            inner.events.clear();
            inner.sync_ns = 0;
            b
        }
        // Starts small and grows with what it carries; recycled, it keeps its size, so the
        // pool settles at what the load needs and the steady state does not allocate.
        None => Arc::new(Batch {
            commands: Vec::with_capacity(batch_max.min(64)),
            origins: Vec::with_capacity(batch_max.min(64)),
            entries: Vec::with_capacity(batch_max.min(64)),
            events: Vec::with_capacity(batch_max.min(64) * 4),
            sync_ns: 0,
        }),
    }
}

/// Waits until everything up to `seq` is durable (before a snapshot: a snapshot must never
/// hold a command the journal could lose).
fn wait_durable(handoff: &Handoff, seq: u64) {
    while handoff.durable_seq.load(Ordering::Acquire) < seq {
        handoff.journal.wake();
        std::thread::park_timeout(Duration::from_micros(200));
    }
}

struct JournalThread {
    durable: Box<dyn Durable>,
    handoff: Arc<Handoff>,
    new_readers: Arc<ArrayQueue<Arc<ReaderShared>>>,
    readers: Vec<Arc<ReaderShared>>,
    /// Published batches, until no reader holds them.
    held: Vec<Arc<Batch>>,
    /// Last sequence number appended to the journal.
    appended: u64,
    stats: Arc<Stats>,
}

impl JournalThread {
    fn run(mut self) -> Box<dyn Durable> {
        self.handoff.journal.register();
        let mut group: Vec<Arc<Batch>> = Vec::with_capacity(JOURNAL_QUEUE);
        loop {
            while let Some(r) = self.new_readers.pop() {
                self.readers.push(r);
            }
            // Read the flag before draining: a batch pushed before the engine set it is
            // then certainly seen by this drain.
            let engine_done = self.handoff.engine_done.load(Ordering::Acquire);
            while let Some(b) = self.handoff.to_journal.pop() {
                group.push(b);
            }
            if group.is_empty() {
                // Idle: an interval policy may owe a sync.
                self.sync(wall_ns());
                if engine_done {
                    break;
                }
                std::thread::park_timeout(Duration::from_millis(1));
                continue;
            }
            for b in &group {
                self.durable.append(&b.commands).expect(
                    "the journal failed: stopping rather than acknowledging undurable orders",
                );
                if let Some(c) = b.commands.last() {
                    self.appended = c.seq;
                }
            }
            if self.durable.never_syncs() {
                self.handoff
                    .durable_seq
                    .store(self.appended, Ordering::Release);
            }
            let sync_ns = self.sync(wall_ns());
            for mut b in group.drain(..) {
                if let Some(ns) = sync_ns {
                    Arc::get_mut(&mut b)
                        .expect("only this thread holds it")
                        .sync_ns = ns;
                }
                publish(&mut self.readers, &self.stats, &b);
                self.held.push(b);
            }
            self.recycle();
        }
        if let Err(e) = self.durable.sync_now() {
            panic!("the journal failed at shutdown: {e}");
        }
        for r in &self.readers {
            r.cut_off.store(true, Ordering::Release);
            r.wake.wake();
        }
        self.durable
    }

    /// Syncs if the policy says so; the time it took, if it ran.
    fn sync(&mut self, now_ns: u64) -> Option<u64> {
        let took = self
            .durable
            .sync_if_due(now_ns)
            .expect("the journal failed: stopping rather than acknowledging undurable orders");
        took.map(|d| {
            // Everything appended so far is durable now.
            self.handoff
                .durable_seq
                .store(self.appended, Ordering::Release);
            self.handoff.engine.wake();
            let ns = (d.as_nanos() as u64).max(1);
            self.stats.fsync_histogram.record(ns);
            self.stats.sync_ns_total.fetch_add(ns, Ordering::Relaxed);
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            ns
        })
    }

    /// Hands batches no reader holds back to the engine thread.
    fn recycle(&mut self) {
        let handoff = &self.handoff;
        self.held.retain(|b| {
            if Arc::strong_count(b) == 1 {
                // A full free list just lets this one go.
                let _ = handoff.free.push(b.clone());
                false
            } else {
                true
            }
        });
    }
}

fn publish(readers: &mut Vec<Arc<ReaderShared>>, stats: &Stats, batch: &Arc<Batch>) {
    readers.retain(|r| {
        if r.queue.push(batch.clone()).is_ok() {
            r.wake.wake();
            true
        } else {
            // Too slow: cut off, never waited for.
            r.cut_off.store(true, Ordering::Release);
            r.wake.wake();
            stats.readers_cut_off.fetch_add(1, Ordering::Relaxed);
            false
        }
    });
}

impl Durable for fulgur_engine::journal::JournalWriter {
    fn append(&mut self, batch: &[Sequenced]) -> std::io::Result<()> {
        fulgur_engine::journal::JournalWriter::append(self, batch)
    }
    fn sync_if_due(&mut self, now_ns: u64) -> std::io::Result<Option<Duration>> {
        fulgur_engine::journal::JournalWriter::sync_if_due(self, now_ns)
    }
    fn sync_now(&mut self) -> std::io::Result<()> {
        self.sync().map(|_| ())
    }
    fn never_syncs(&self) -> bool {
        self.config().fsync == fulgur_engine::journal::FsyncPolicy::Never
    }
}

/// Durability for tests and benchmarks without a disk: nothing is kept.
pub struct NoJournal;

impl Durable for NoJournal {
    fn append(&mut self, _batch: &[Sequenced]) -> std::io::Result<()> {
        Ok(())
    }
    fn never_syncs(&self) -> bool {
        true
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
