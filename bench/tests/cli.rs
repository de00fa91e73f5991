//! Runs the real `sutra-bench` binary against a real server on 127.0.0.1 (ephemeral port,
//! temporary data directory) and checks what it reports.

#![allow(clippy::expect_used, reason = "tests fail loudly")]

use std::process::{Command, Output};

use serde_json::Value;
use sutra_tests::TestServer;

async fn bench(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sutra-bench"))
            .args(&args)
            .output()
            .expect("running sutra-bench")
    })
    .await
    .expect("joining")
}

fn args(server: &TestServer, extra: &[&str]) -> Vec<String> {
    ["-h", "127.0.0.1", "-p", &server.addr.port().to_string()]
        .iter()
        .chain(extra)
        .map(|arg| (*arg).to_owned())
        .collect()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "sutra-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_run_reports_every_test_in_json() {
    let server = TestServer::start().await.expect("server");
    let output = bench(args(
        &server,
        &[
            "--duration",
            "1",
            "-t",
            "store,get,mixed,query,delete,getmany,storemany",
            "--batch",
            "8",
            "-c",
            "4",
            "-P",
            "4",
            "-d",
            "100",
            "-r",
            "500",
            "--json",
        ],
    ))
    .await;
    let report = json(&output);
    assert_eq!(report["clients"], 4);
    assert_eq!(report["pipeline"], 4);
    assert_eq!(report["vector_dimension"], 256);
    assert_eq!(report["mode"], "closed");
    assert_eq!(report["batch"], 8);
    let tests = report["tests"].as_array().expect("tests");
    let names: Vec<&str> = tests
        .iter()
        .map(|test| test["test"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "store",
            "get",
            "mixed",
            "query",
            "delete",
            "getmany",
            "storemany"
        ]
    );
    for test in tests {
        let requests = test["requests"].as_u64().expect("requests");
        assert!(requests > 0, "{test}");
        assert_eq!(test["errors"], 0, "{test}");
        assert_eq!(
            test["ok"].as_u64().unwrap_or(0) + test["misses"].as_u64().unwrap_or(0),
            requests,
            "{test}"
        );
        // Each test ran for about the requested second (one batch may finish after it).
        let seconds = test["duration_s"].as_f64().expect("duration_s");
        assert!((0.9..5.0).contains(&seconds), "{test}");
        let latency = &test["latency_ms"];
        let p50 = latency["p50"].as_f64().expect("p50");
        let p99 = latency["p99"].as_f64().expect("p99");
        let max = latency["max"].as_f64().expect("max");
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{test}");
    }
    // The stores landed: the server holds some of the 500 keys (deletes removed some).
    let stats = sutra_client::Client::connect(server.addr_string())
        .await
        .expect("client")
        .stats()
        .await
        .expect("stats");
    assert!(stats.get("stores").unwrap_or(0) > 0, "{stats:?}");
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_with_prefill_sends_the_count_at_the_rate_and_every_get_hits() {
    let server = TestServer::start().await.expect("server");
    let started = std::time::Instant::now();
    let output = bench(args(
        &server,
        &[
            "--rate",
            "400",
            "-n",
            "200",
            "-t",
            "get",
            "-c",
            "2",
            "-r",
            "50",
            "--prefill",
            "--json",
        ],
    ))
    .await;
    let report = json(&output);
    assert_eq!(report["mode"], "open");
    assert_eq!(report["rate"], 400);
    let test = &report["tests"][0];
    assert_eq!(test["requests"], 200);
    assert_eq!(test["ok"], 200, "prefill stored every key: {test}");
    // 200 requests at 400/s take half a second; a closed loop would take a few ms.
    let seconds = test["duration_s"].as_f64().expect("duration_s");
    assert!(seconds >= 0.45, "{test}");
    assert!(started.elapsed().as_secs() < 20);
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_lines_up_with_redis_benchmark() {
    let server = TestServer::start().await.expect("server");
    let output = bench(args(
        &server,
        &["-n", "300", "-t", "store,get", "-c", "3", "--csv"],
    ))
    .await;
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("\"test\",\"rps\",\"avg_latency_ms\""),
        "{stdout}"
    );
    assert!(lines[1].starts_with("\"STORE\",") && lines[2].starts_with("\"GET\","));
    assert!(
        lines[1..].iter().all(|line| line.split(',').count() == 8),
        "{stdout}"
    );
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_and_set_the_exit_status() {
    // A server with a tiny content limit refuses every store of 100 bytes.
    let server = TestServer::start_with(|config| config.limits.max_content_bytes = 10)
        .await
        .expect("server");
    let output = bench(args(
        &server,
        &["-n", "20", "-t", "store", "-d", "100", "-c", "1", "--json"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let test = &report["tests"][0];
    assert_eq!(test["errors"], 20);
    let first = test["first_error"].as_str().expect("first_error");
    assert!(first.contains("content"), "{first}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn no_server_is_a_clear_failure() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let output = bench(vec!["-p".into(), port.to_string(), "-n".into(), "1".into()]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is sutra-storage running?"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_authenticates_every_connection_and_a_wrong_one_is_a_clear_failure() {
    let server = TestServer::start_with(|config| {
        config.auth = Some(sutra_server::AuthConfig::new("s3cret", false));
    })
    .await
    .expect("server");
    let output = bench(args(
        &server,
        &[
            "-a",
            "s3cret",
            "-n",
            "200",
            "-t",
            "store,get",
            "-c",
            "4",
            "--json",
        ],
    ))
    .await;
    let report = json(&output);
    for test in report["tests"].as_array().expect("tests") {
        assert_eq!(test["errors"], 0, "{test}");
        assert_eq!(test["requests"], 200, "{test}");
    }
    let output = bench(args(&server, &["-a", "wrong", "-n", "10", "-t", "get"])).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    server.stop().await.expect("stop");
}

#[test]
fn help_speaks_of_no_future_work() {
    for binary in [
        env!("CARGO_BIN_EXE_sutra-bench"),
        env!("CARGO_BIN_EXE_sutra-embed-bench"),
    ] {
        let output = Command::new(binary).arg("--help").output().expect("runs");
        assert!(output.status.success(), "{binary} --help");
        let stale = sutra_tests::stale_help(&String::from_utf8_lossy(&output.stdout));
        assert!(stale.is_empty(), "{binary}: stale --help lines: {stale:#?}");
    }
}
