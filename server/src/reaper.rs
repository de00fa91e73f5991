//! The active TTL reaper: removes expired concepts in the background, so an expired
//! concept's memory (and its place under `MAX_CONCEPTS`) is given back even if nobody reads
//! it. Reads never return an expired concept either way.
//!
//! Every `REAPER_INTERVAL_MS` a cycle runs steps of at most `REAPER_BATCH` removals
//! ([`sutra_engine::Engine::reap_expired`]); it repeats while a step was full (a backlog)
//! and stops after a quarter of the interval, like Redis's active expire cycle with its CPU
//! budget. Each removal is an Expire log record, sharing group commits with everything else.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::ReaperConfig;
use crate::executor::Executor;

/// Runs cycles until `shutdown` is cancelled.
pub(crate) async fn run(service: Arc<Executor>, config: ReaperConfig, shutdown: CancellationToken) {
    if config.interval.is_zero() || config.batch == 0 {
        return;
    }
    let budget = config.interval / 4;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let mut removed = 0;
        loop {
            let step = service.engine().reap_expired(config.batch);
            removed += step;
            if step < config.batch || started.elapsed() >= budget {
                break;
            }
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            debug!(removed, elapsed = ?started.elapsed(), "reaper cycle");
        }
    }
}
