//! Fill a `MemoryStore` to capacity and report its resident memory.
//!
//! ```text
//! cargo run --release -p hookgate-tower --example memory_store_footprint [-- CAPACITY]
//! ```
//!
//! Inserts twice the capacity (each key claimed, then completed, like the
//! layer does) so eviction runs, with keys shaped like the layer's
//! (`hookgate:standard:msg_<27 chars>`, 49 bytes), and prints the process's
//! resident set size (from `/proc/self/statm`, Linux only) before and after.
//! A measurement, not a test: it asserts only that the bound holds.

use hookgate_tower::store::{Claim, DedupStore, DoneRecord, MemoryStore};
use std::time::{Duration, Instant};

/// Resident set size in bytes, from `/proc/self/statm` (pages × 4 KiB).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn mib(bytes: u64) -> f64 {
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / (1024.0 * 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let capacity: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => MemoryStore::DEFAULT_CAPACITY,
    };
    let before = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    let store = MemoryStore::with_capacity(capacity);
    let lease = Duration::from_secs(30);
    let retention = Duration::from_secs(72 * 3600);
    let started = Instant::now();
    let mut peak = before;
    for i in 0..capacity * 2 {
        let key = format!("hookgate:standard:msg_{i:027}");
        let digest = [u8::try_from(i % 251).unwrap_or(0); 32];
        let Claim::Acquired(token) = store.claim(&key, &digest, lease).await? else {
            return Err(format!("key {key} was not free").into());
        };
        let record = DoneRecord::new(200, digest);
        if !store.complete(&key, &token, record, retention).await? {
            return Err(format!("complete failed for {key}").into());
        }
        if i + 1 == capacity {
            println!(
                "rss at capacity     {:.1} MiB",
                mib(rss_bytes().unwrap_or(0))
            );
            println!("{store:?}");
        }
        if i % 10_000 == 0 {
            peak = peak.max(rss_bytes().unwrap_or(0));
        }
    }
    let elapsed = started.elapsed();
    println!("{store:?}");
    let after = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    peak = peak.max(after);
    assert_eq!(
        store.len(),
        capacity,
        "the store holds exactly its capacity"
    );
    println!(
        "capacity            {capacity} keys (49-byte keys, {} inserted)",
        capacity * 2
    );
    println!("rss before          {:.1} MiB", mib(before));
    println!("rss after           {:.1} MiB", mib(after));
    println!("rss peak (sampled)  {:.1} MiB", mib(peak));
    println!(
        "store (after-before) {:.1} MiB, {} bytes/key",
        mib(after.saturating_sub(before)),
        after.saturating_sub(before) / capacity as u64
    );
    println!(
        "claim+complete      {:.0} ns/event",
        elapsed.as_nanos() as f64 / (capacity * 2) as f64
    );
    Ok(())
}
