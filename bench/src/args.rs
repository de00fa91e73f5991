//! Command-line arguments, modelled on `redis-benchmark`'s (`-h` is the host, so help is
//! `--help` only).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Most connections one run opens.
pub const MAX_CLIENTS: u32 = 10_000;
/// Deepest pipeline per connection.
pub const MAX_PIPELINE: u32 = 1_024;
/// Longest `--duration` per test, so a run always ends.
pub const MAX_DURATION_SECS: f64 = 3_600.0;
/// Most requests per test.
pub const MAX_REQUESTS: u64 = 1_000_000_000;

/// One benchmark test: which request the load loop sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Test {
    /// StoreConcept of a random id in the keyspace, with content and vector.
    Store,
    /// GetConceptById of a random id in the keyspace.
    Get,
    /// QueryByType of the bench type, one page after a random id.
    Query,
    /// Delete of a random id in the keyspace.
    Delete,
    /// Gets and stores of random ids, `--get-percent` of them gets.
    Mixed,
    /// GetMany of `--batch` random ids (one request per batch).
    GetMany,
    /// StoreMany of `--batch` concepts with random ids (one request per batch).
    StoreMany,
    /// Search for the `--search-k` concepts nearest to the bench vector or to each of
    /// `--queries` in turn (ids and scores; the index's answer, or `--exact`); prefill the
    /// store first (`--prefill` or a store test).
    Search,
}

impl Test {
    /// Every test; a default run takes the first five in this order (writes before the reads
    /// that need them, deletes last).
    pub const ALL: [Test; 8] = [
        Test::Store,
        Test::Get,
        Test::Mixed,
        Test::Query,
        Test::Delete,
        Test::GetMany,
        Test::StoreMany,
        Test::Search,
    ];

    /// The lowercase name used in `-t` and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Test::Store => "store",
            Test::Get => "get",
            Test::Query => "query",
            Test::Delete => "delete",
            Test::Mixed => "mixed",
            Test::GetMany => "getmany",
            Test::StoreMany => "storemany",
            Test::Search => "search",
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Test {
    type Err = String;

    fn from_str(value: &str) -> Result<Test, String> {
        Test::ALL
            .into_iter()
            .find(|test| test.name().eq_ignore_ascii_case(value.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Test::ALL.iter().map(|test| test.name()).collect();
                let learn = if value.trim().eq_ignore_ascii_case("learn") {
                    "; learning runs the server's model: bench/learn_load.py measures it"
                } else {
                    ""
                };
                format!(
                    "unknown test `{value}` (expected one of {}){learn}",
                    names.join(", ")
                )
            })
    }
}

/// sutra-bench: load generator for sutra-storage's binary protocol, in the manner of
/// redis-benchmark. Each test runs `-n` requests (or `--duration` seconds) from `-c`
/// connections with `-P` requests in flight per connection and reports requests/s and the
/// latency distribution from an HDR histogram.
///
/// Closed loop (default): each connection sends a batch of `-P` requests, waits for all the
/// answers, repeats; latency runs from the batch's send to each answer. Open loop
/// (`--rate N`): requests are scheduled at N per second overall, at most `-P` unanswered per
/// connection; a request that must wait for an earlier answer is timed from its scheduled
/// send time, so a stalled server shows in the tail instead of slowing the load (no
/// coordinated omission).
///
/// Ids are `key:` + 12 digits, random over `--keyspace`, as redis-benchmark's
/// `key:__rand_int__` with `-r`.
#[derive(Debug, Clone, Parser)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one bool per on/off flag, as clap wants"
)]
#[command(
    name = "sutra-bench",
    version,
    disable_help_flag = true,
    max_term_width = 100
)]
pub struct Args {
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,

    /// Server port.
    #[arg(short = 'p', long, default_value_t = 50051)]
    pub port: u16,

    /// The server's shared secret (its SUTRA_AUTH_TOKEN): every connection authenticates
    /// before the test, like redis-benchmark's -a.
    #[arg(short = 'a', long, env = "SUTRA_AUTH_TOKEN", hide_env_values = true)]
    pub auth: Option<String>,

    /// Parallel connections.
    #[arg(short = 'c', long = "clients", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CLIENTS)))]
    pub clients: u32,

    /// Requests per test (ignored with --duration).
    #[arg(short = 'n', long = "requests", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_REQUESTS))]
    pub requests: u64,

    /// Requests in flight per connection (pipeline depth).
    #[arg(short = 'P', long = "pipeline", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PIPELINE)))]
    pub pipeline: u32,

    /// Content bytes per stored concept (the vector comes on top: --dimension floats).
    #[arg(short = 'd', long = "data-size", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=16 * 1024 * 1024))]
    pub data_size: u32,

    /// Vector dimension of stored concepts; 0 stores no vector. Default: the server's
    /// VECTOR_DIMENSION, read from Health.
    #[arg(long)]
    pub dimension: Option<u32>,

    /// Tests to run, comma-separated: store, get, query, delete, mixed, getmany, storemany,
    /// search.
    #[arg(
        short = 't',
        long = "tests",
        value_delimiter = ',',
        default_value = "store,get,mixed,query,delete"
    )]
    pub tests: Vec<Test>,

    /// Ids are random over this many keys (`key:000000000000` ..), like redis-benchmark -r.
    #[arg(short = 'r', long, default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    pub keyspace: u64,

    /// Store every id of the keyspace once before the tests (untimed), so gets hit.
    #[arg(long)]
    pub prefill: bool,

    /// Run each test for this many seconds instead of -n requests (at most 3600).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Open loop: send this many requests per second overall, measuring latency from each
    /// request's intended send time.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate: Option<u64>,

    /// Percentage of gets in the mixed test (the rest are stores).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub get_percent: u8,

    /// Ids per request in the getmany and storemany tests (the embedding service's L2
    /// lookup of a 64-text batch is one GetMany of 64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,

    /// Page size of the query test.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub query_limit: u32,

    /// Results per search (`-t search`), at most the server's MAX_SEARCH_K
    #[arg(long, default_value_t = 10)]
    pub search_k: u32,

    /// Searches compare every stored vector (the request's `exact`) instead of asking the
    /// server's index.
    #[arg(long)]
    pub exact: bool,

    /// Search breadth of index searches (the request's `ef`); 0: the server's HNSW_EF_SEARCH.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub ef: u32,

    /// Stored vectors come from this file: little-endian f32 values, the dimension's number a
    /// vector, back to back (as bench/ann_bench.py writes them); key i gets vector i modulo
    /// their number, so `--prefill -r <vectors>` stores each once. Default: one fixed vector.
    #[arg(long)]
    pub vectors: Option<std::path::PathBuf>,

    /// Search queries (`-t search`) come from this file, same format, in turn across all
    /// connections. Default: the fixed vector.
    #[arg(long)]
    pub queries: Option<std::path::PathBuf>,

    /// Concept type of stored concepts and of the query test.
    #[arg(long, default_value = "bench")]
    pub concept_type: String,

    /// Runtime worker threads of the load generator (redis-benchmark uses one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Seed of the id generator (runs with one seed send the same ids).
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,

    /// Longest wait for one answer before the run fails.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print one JSON document with every test's results.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print CSV in redis-benchmark's columns.
    #[arg(long)]
    pub csv: bool,

    /// Quiet: one line per test (requests/s and p50).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl Args {
    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Seconds as a decimal (`1.5`) or with a unit (`500ms`, `2s`, `1m`), at most an hour.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, scale) = if let Some(number) = value.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = value.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = value.strip_suffix('m') {
        (number, 60.0)
    } else {
        (value, 1.0)
    };
    let seconds = number
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("`{value}` is not a duration (e.g. 10, 1.5s, 500ms, 2m)"))?
        * scale;
    if !(seconds > 0.0 && seconds <= MAX_DURATION_SECS) {
        return Err(format!(
            "`{value}` is out of range (more than 0, at most {MAX_DURATION_SECS} s)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("sutra-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_redis_benchmark_where_they_overlap() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.address(), "127.0.0.1:50051");
        assert_eq!(
            (args.clients, args.requests, args.pipeline, args.data_size),
            (50, 100_000, 1, 3)
        );
        assert_eq!(
            args.tests,
            [
                Test::Store,
                Test::Get,
                Test::Mixed,
                Test::Query,
                Test::Delete
            ]
        );
        assert_eq!(args.batch, 64);
        assert!(args.rate.is_none() && args.duration.is_none());
    }

    #[test]
    fn redis_style_short_flags() {
        let args = parse(&[
            "-h",
            "::1",
            "-p",
            "6000",
            "-c",
            "8",
            "-n",
            "500",
            "-P",
            "16",
            "-d",
            "176",
            "-t",
            "store,GET",
            "-r",
            "1000",
            "-q",
        ])
        .unwrap();
        assert_eq!(args.address(), "[::1]:6000");
        assert_eq!(
            (args.clients, args.requests, args.pipeline, args.data_size),
            (8, 500, 16, 176)
        );
        assert_eq!(args.tests, [Test::Store, Test::Get]);
        assert_eq!(args.keyspace, 1000);
        assert!(args.quiet);
    }

    #[test]
    fn bounds_are_enforced() {
        for bad in [
            &["-c", "0"][..],
            &["-c", "10001"],
            &["-P", "0"],
            &["-P", "1025"],
            &["-n", "0"],
            &["-r", "0"],
            &["--rate", "0"],
            &["--get-percent", "101"],
            &["--duration", "0"],
            &["--duration", "3601"],
            &["--duration", "soon"],
            &["-t", "store,fly"],
            &["--json", "--csv"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let error = parse(&["-t", "learn"]).unwrap_err().to_string();
        assert!(
            error.contains("learn_load.py") && error.contains("search"),
            "{error}"
        );
    }

    #[test]
    fn durations_take_units() {
        let duration = |text: &str| parse(&["--duration", text]).unwrap().duration.unwrap();
        assert_eq!(duration("2"), Duration::from_secs(2));
        assert_eq!(duration("1.5s"), Duration::from_millis(1500));
        assert_eq!(duration("250ms"), Duration::from_millis(250));
        assert_eq!(duration("1m"), Duration::from_secs(60));
    }

    #[test]
    fn help_is_long_only_because_h_is_the_host() {
        let error = parse(&["--help"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = error.to_string();
        for flag in [
            "--host",
            "--clients",
            "--pipeline",
            "--rate",
            "--duration",
            "--json",
            "--csv",
        ] {
            assert!(help.contains(flag), "--help does not mention {flag}");
        }
    }
}
