//! A simple client loop against a running sutra-storage: sequential round-trip latency on
//! one connection, then pipelined throughput with many tasks sharing that connection.
//!
//! ```text
//! cargo run --release -p sutra-server &   # or ./scripts/run
//! cargo run --release -p sutra-client --example loop -- 127.0.0.1:50051 20000 64
//! ```
//!
//! Arguments: address (default 127.0.0.1:50051), request count (default 20000), pipelined
//! tasks (default 64). The proper benchmark tool with HDR histograms comes with `sutra-bench`.

#![allow(
    clippy::cast_precision_loss,
    reason = "request rates are printed, not computed with"
)]

use std::time::{Duration, Instant};

use sutra_client::sutra_protocol::{ConceptId, StoreConcept, Vector};
use sutra_client::Client;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a small vector"
    )]
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let count: usize = args.next().map_or(Ok(20_000), |value| value.parse())?;
    let tasks: usize = args.next().map_or(Ok(64), |value| value.parse())?;

    let client = Client::connect(addr.clone()).await?;
    let dimension = client.health_check().await?.vector_dimension;
    let mut store = StoreConcept::new(ConceptId::parse("loop:key")?, "x".repeat(200));
    "loop".clone_into(&mut store.concept_type);
    store.embedding = Some(Vector::new(vec![0.5; dimension as usize], dimension)?);
    client.store_concept(store).await?;

    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let sent = Instant::now();
        client.get_concept_by_id("loop:key").await?;
        latencies.push(sent.elapsed());
    }
    let sequential = started.elapsed();
    latencies.sort_unstable();
    println!(
        "sequential get (1 connection, 1 in flight): {count} requests in {:.2?}; {:.0} req/s; p50 {:.1?} p99 {:.1?} max {:.1?}",
        sequential,
        count as f64 / sequential.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );

    let per_task = count.div_ceil(tasks);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let client = client.clone();
        set.spawn(async move {
            for _ in 0..per_task {
                client.get_concept_by_id("loop:key").await?;
            }
            Ok::<_, sutra_client::ClientError>(())
        });
    }
    while let Some(result) = set.join_next().await {
        result??;
    }
    let pipelined = started.elapsed();
    let total = per_task * tasks;
    println!(
        "pipelined get (1 connection, {tasks} in flight): {total} requests in {:.2?}; {:.0} req/s",
        pipelined,
        total as f64 / pipelined.as_secs_f64(),
    );
    client.delete_concept("loop:key").await?;
    Ok(())
}
