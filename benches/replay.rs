//! `cargo bench`: the same replays as `fulgur bench`, on Liquibook's stream (throughput) and
//! open loop at 1 M and 5 M commands/s (latency).

use fulgur::{alloc, bench};

#[global_allocator]
static GLOBAL: alloc::CountingMimalloc = alloc::CountingMimalloc;

fn main() {
    // `cargo bench -- <filter>` passes arguments; a filter picks a subset by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let flow = fulgur_engine::flow::liquibook(1_000_000, 1, 1_000);
    if want("throughput") {
        println!("== throughput: liquibook 1M orders x 5 replays");
        print!("{}", bench::throughput(&flow, 5).table());
    }
    for rate in [1e6, 5e6] {
        let name = format!("latency_{}M", rate / 1e6);
        if want(&name) {
            println!(
                "== {name}: liquibook 1M orders, open loop at {} M/s",
                rate / 1e6
            );
            print!("{}", bench::latency(&flow, 1, rate).table());
        }
    }
}
