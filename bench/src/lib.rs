//! sutra-bench: a load generator for sutra-storage's binary protocol, in the manner of
//! `redis-benchmark` (same flags where they overlap, same CSV columns), plus an open-loop
//! mode that measures latency from each request's intended send time.

pub mod args;
pub mod report;
pub mod run;
pub mod workload;
