//! Memory: bytes per endpoint of the balancer's own state, for 16 to 4096
//! endpoints, measured with a counting global allocator (heap bytes
//! requested and still live, without the allocator's own per-block
//! overhead; blocks are counted too so that overhead can be estimated).
//!
//! * **Picker tables**: the heap growth of `Prepare::prepare`, plus the
//!   table's inline size.
//! * **Whole balancer**: the heap growth from `Balance::new` over
//!   `InFlightDiscover` until `wait_for` sees every endpoint: the published
//!   snapshot (keys, metas, services, table), the discovery worker's own
//!   copy of the set and its key index, the per-endpoint in-flight counters,
//!   the worker task. The endpoints are `service_fn` closures holding their
//!   index; their inline size, once in the snapshot and once in the worker's
//!   set, is subtracted as the endpoint's own state. Keys are `SocketAddr`s.
//! * **Consistent-hash ring**: 160 virtual nodes per endpoint.
//!
//! Weights are 1 to 5 (the weighted schedules and the p2c alias table hold
//! their real sizes), except for consistent hashing, where every endpoint
//! has weight 1 and so exactly 160 points. Output is markdown.
//!
//! ```sh
//! cargo bench --bench memory
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use tower::discover::Change;
use tower::{service_fn, Service};
use tower_lb::endpoint::Weighted;
use tower_lb::load::{CompleteOnResponse, InFlightDiscover};
use tower_lb::pick::{
    key::hash_value, ConsistentHash, EndpointInfo, IpHash, LeastConnections, Maglev, P2c, Prepare,
    RoundRobin, WeightedRoundRobin,
};
use tower_lb::Balance;

const SIZES: [usize; 4] = [16, 256, 1024, 4096];
const VIRTUAL_NODES: u32 = 160;

// ===== counting allocator =====

/// The tests' counting allocator (`tests/support/alloc.rs`), shared.
#[path = "../tests/support/alloc.rs"]
#[allow(dead_code)]
mod alloc;

use alloc::live;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// Heap growth, in bytes and blocks, between two readings.
#[derive(Clone, Copy)]
struct Growth {
    bytes: isize,
    blocks: isize,
}

fn since(before: (isize, isize)) -> Growth {
    let (bytes, blocks) = live();
    Growth {
        bytes: bytes - before.0,
        blocks: blocks - before.1,
    }
}

// ===== the endpoint set =====

fn weight(i: usize, weighted: bool) -> u32 {
    if weighted {
        1 + (i % 5) as u32
    } else {
        1
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 80))
}

fn metas(n: usize, weighted: bool) -> Vec<EndpointInfo> {
    (0..n)
        .map(|i| EndpointInfo::new(hash_value(&addr(i)), weight(i, weighted)))
        .collect()
}

fn key(req: &u64) -> Option<u64> {
    Some(*req)
}

/// An endpoint that answers at once: a closure holding its index.
fn endpoint(
    id: usize,
) -> impl Service<u64, Response = usize, Error = Infallible, Future = impl Future + Send>
       + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |_req: u64| async move { Ok::<_, Infallible>(id) })
}

/// The inline size of one endpoint service: what the balancer's vectors
/// hold for the endpoint itself rather than for balancing it.
fn endpoint_size() -> usize {
    std::mem::size_of_val(&endpoint(0))
}

// ===== measurements =====

/// The table `picker` builds for `n` endpoints: heap bytes (temporaries
/// freed) plus its inline size.
fn table_bytes<P: Prepare>(picker: &P, n: usize, weighted: bool) -> Growth {
    let metas = metas(n, weighted);
    let before = live();
    let table = picker.prepare(&metas);
    let mut growth = since(before);
    growth.bytes += std::mem::size_of_val(&table) as isize;
    drop(table);
    growth
}

/// A whole balancer over `n` endpoints, after the worker has published
/// them all, less the endpoints' own inline size (twice: the snapshot's
/// copy and the worker's).
fn balance_bytes<P>(rt: &tokio::runtime::Runtime, picker: P, n: usize, weighted: bool) -> Growth
where
    P: Prepare,
{
    rt.block_on(async move {
        // Built lazily, so that no list of endpoints is held outside the
        // balancer while it is measured.
        let changes = futures_util::stream::iter((0..n).map(move |i| {
            Ok::<_, Infallible>(Change::Insert(
                addr(i),
                Weighted::new(endpoint(i), weight(i, weighted)),
            ))
        }));
        let before = live();
        let balance = Balance::new(
            InFlightDiscover::with_completion(changes, CompleteOnResponse::default()),
            picker,
        );
        balance.wait_for(|keys| keys.len() == n).await;
        // Let the worker finish its turn (it polls the ended stream).
        tokio::task::yield_now().await;
        let mut growth = since(before);
        growth.bytes -= (2 * n * endpoint_size()) as isize;
        drop(balance);
        tokio::task::yield_now().await;
        growth
    })
}

fn per_endpoint(growth: Growth, n: usize) -> String {
    format!("{:.0}", growth.bytes as f64 / n as f64)
}

/// One markdown row: bytes per endpoint for each size.
fn row(name: &str, growths: &[Growth]) {
    let cells: Vec<String> = SIZES
        .iter()
        .zip(growths)
        .map(|(&n, &g)| per_endpoint(g, n))
        .collect();
    let last = growths.last().expect("sizes");
    println!(
        "| {name} | {} | {:.1} MiB, {} blocks |",
        cells.join(" | "),
        last.bytes as f64 / (1 << 20) as f64,
        last.blocks
    );
}

fn header(title: &str) {
    let sizes: Vec<String> = SIZES.iter().map(|n| format!("n = {n}")).collect();
    println!("\n**{title}** (bytes per endpoint)\n");
    println!("| picker | {} | total at 4096 |", sizes.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(SIZES.len()));
}

macro_rules! each_picker {
    ($measure:ident $(, $arg:expr)*) => {{
        row("round robin", &SIZES.map(|n| $measure($($arg,)* RoundRobin::new(), n, true)));
        row("weighted round robin", &SIZES.map(|n| $measure($($arg,)* WeightedRoundRobin::new(), n, true)));
        row("least connections", &SIZES.map(|n| $measure($($arg,)* LeastConnections::with_seed(1), n, true)));
        row("p2c", &SIZES.map(|n| $measure($($arg,)* P2c::with_seed(1), n, true)));
        row("ip hash", &SIZES.map(|n| $measure($($arg,)* IpHash::with_key(key), n, true)));
        row("consistent hash (160 points, weight 1)", &SIZES.map(|n| $measure($($arg,)* ConsistentHash::new(key), n, false)));
        row("maglev (65 537 slots)", &SIZES.map(|n| $measure($($arg,)* Maglev::new(key), n, true)));
    }};
}

fn table(picker: impl Prepare, n: usize, weighted: bool) -> Growth {
    table_bytes(&picker, n, weighted)
}

fn ring() {
    println!("\n**Consistent-hash ring, {VIRTUAL_NODES} virtual nodes per endpoint, weight 1**\n");
    println!("| endpoints | points | bytes | bytes per point | bytes per endpoint |");
    println!("|---:|---:|---:|---:|---:|");
    let picker = ConsistentHash::new(key).virtual_nodes(VIRTUAL_NODES);
    for n in SIZES {
        let metas = metas(n, false);
        let before = live();
        let ring = picker.prepare(&metas);
        let growth = since(before);
        let bytes = growth.bytes as usize + std::mem::size_of_val(&ring);
        println!(
            "| {n} | {} | {bytes} | {:.1} | {:.0} |",
            ring.len(),
            bytes as f64 / ring.len() as f64,
            bytes as f64 / n as f64
        );
    }
}

fn main() {
    // Criterion-style flags (`--bench`, filters) are accepted and ignored.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The first balancer pays for one-time state (thread-locals, the
    // runtime's first task, tracing's callsite registry): not per endpoint.
    for _ in 0..2 {
        balance_bytes(&rt, P2c::with_seed(1), 16, true);
    }

    println!("# Memory of the balancer's own state");
    println!(
        "\nHeap bytes requested (allocator overhead not included); endpoint service: {} bytes inline, subtracted.",
        endpoint_size()
    );
    header("Picker table (`Prepare::prepare`)");
    each_picker!(table);
    header("Whole `Balance` over `InFlightDiscover` (table + snapshot + worker set + counters)");
    each_picker!(balance_bytes, &rt);
    ring();
}
