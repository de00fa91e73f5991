//! The real `sutra-storage` binary: `--help`, configuration from the environment, refusal of
//! bad configuration with a clear message, and a clean exit 0 on SIGTERM after serving.

#![allow(clippy::expect_used, reason = "a failed expectation is a failed test")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    spawn, spawn_in, wait_for_address, wait_for_address_then_close_log, wait_for_address_with_log,
    wait_for_exit, BINARY,
};

#[test]
fn help_documents_the_environment_variables() {
    let output = Command::new(BINARY).arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("utf-8");
    for name in [
        "STORAGE_PORT",
        "STORAGE_PATH",
        "VECTOR_DIMENSION",
        "SUTRA_ROLE",
        "MAX_CONNECTIONS",
        "RUST_LOG",
    ] {
        assert!(help.contains(name), "--help lacks {name}");
    }
}

#[test]
fn invalid_configuration_is_refused_with_a_clear_message() {
    let output = Command::new(BINARY)
        .env_clear()
        .env("VECTOR_DIMENSION", "0")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("VECTOR_DIMENSION must be between 1 and"),
        "{stderr}"
    );
}

#[test]
fn a_taken_port_is_named_once_and_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("bound").port().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(BINARY)
        .env_clear()
        .env("STORAGE_PORT", &port)
        .env("STORAGE_PATH", dir.path())
        .env("RUST_LOG", "off")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!("sutra-storage: cannot listen on 127.0.0.1:{port}: Address already in use (os error 98)")
    );
}

#[test]
fn serves_text_and_http_then_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn(&[
        ("STORAGE_PORT", "0"),
        ("STORAGE_PATH", dir.path().to_str().expect("utf-8")),
        ("SUTRA_ROLE", "cache_shard"),
        ("VECTOR_DIMENSION", "64"),
    ]);
    let addr = wait_for_address(&mut child);

    let replies = store_and_get_over_text(&addr);
    // The cache_shard role gives stores a default TTL of one day.
    assert!(replies.contains("\"expires_at_ms\":1"), "{replies}");

    let mut http = TcpStream::connect(&addr).expect("connects");
    http.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("writes");
    let mut response = String::new();
    http.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"vector_dimension\":64"), "{response}");
    assert!(response.contains("\"role\":\"cache_shard\""), "{response}");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs")
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
            break;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Started from any directory, without SUTRA_MODEL_DIR, the server finds the default model
/// where scripts/fetch-model installs it: `$XDG_DATA_HOME/sutra/models/all-MiniLM-L6-v2`.
#[test]
fn the_default_model_is_found_from_any_directory() {
    let checkout_model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/all-MiniLM-L6-v2")
        .canonicalize()
        .expect("the default model (./scripts/fetch-model)");
    let data = tempfile::tempdir().expect("temp dir");
    let models = data.path().join("sutra/models");
    std::fs::create_dir_all(&models).expect("creates");
    std::os::unix::fs::symlink(&checkout_model, models.join("all-MiniLM-L6-v2")).expect("links");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let storage = elsewhere.path().join("data");
    let mut child = spawn_in(
        Some(elsewhere.path()),
        &[
            ("STORAGE_PORT", "0"),
            ("STORAGE_PATH", storage.to_str().expect("utf-8")),
            ("XDG_DATA_HOME", data.path().to_str().expect("utf-8")),
        ],
    );
    let addr = wait_for_address(&mut child);
    let response = health(&addr).expect("/health answers");
    assert!(
        response.contains("\"model\":\"all-MiniLM-L6-v2\""),
        "{response}"
    );
    signal(&child, "-TERM");
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
}

/// A variable the seed sets that changes nothing here gets one warning line at start-up,
/// naming what to use instead; the seed's variables that do work get none.
#[test]
fn seed_variables_without_effect_are_named_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn(&[
        ("STORAGE_PORT", "0"),
        ("STORAGE_PATH", dir.path().to_str().expect("utf-8")),
        ("CACHE_MODE", "true"),
        ("SUTRA_EDITION", "simple"),
        ("MMAP_ENABLED", "true"),
    ]);
    let (_, log) = wait_for_address_with_log(&mut child);
    let warnings: Vec<&String> = log.iter().filter(|line| line.contains("WARN")).collect();
    assert_eq!(warnings.len(), 2, "{log:#?}");
    assert!(
        warnings[0].contains("CACHE_MODE=true has no effect here")
            && warnings[0].contains("SUTRA_ROLE=cache_shard"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("SUTRA_EDITION=simple"), "{warnings:?}");
    signal(&child, "-TERM");
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
}

fn signal(child: &std::process::Child, name: &str) {
    assert!(Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success());
}

fn health(addr: &str) -> Option<String> {
    let mut http = TcpStream::connect(addr).ok()?;
    http.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    http.read_to_string(&mut response).ok()?;
    Some(response)
}

/// `sutra-storage 2>&1 | head -4`: once `head` exits, every log write fails with EPIPE. The
/// server must still serve, and stop on SIGTERM and SIGINT (it used to panic inside the signal
/// handler while logging, and ignore both signals).
#[test]
fn a_closed_log_pipe_stops_neither_serving_nor_signals() {
    for name in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = spawn(&[
            ("STORAGE_PORT", "0"),
            ("STORAGE_PATH", dir.path().to_str().expect("utf-8")),
        ]);
        let addr = wait_for_address_then_close_log(&mut child);
        for _ in 0..3 {
            let response = health(&addr).expect("/health answers");
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        signal(&child, name);
        assert_eq!(wait_for_exit(&mut child).code(), Some(0), "{name}");
    }
}

/// `sutra-storage 2>&1 | head -1`: the log pipe closes during start-up; start-up goes on.
#[test]
fn a_log_pipe_closed_at_start_up_does_not_stop_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let mut child = spawn(&[
        ("STORAGE_PORT", &port),
        ("STORAGE_HOST", "127.0.0.1"),
        ("STORAGE_PATH", dir.path().to_str().expect("utf-8")),
    ]);
    drop(child.stderr.take());
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        if let Some(response) = health(&addr) {
            break response;
        }
        if let Some(status) = child.try_wait().expect("waits") {
            panic!("exited during start-up with {status}");
        }
        assert!(Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    signal(&child, "-TERM");
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
}

/// fsync failure, end to end: the server runs under `fiu-run` (Debian package `fiu-utils`);
/// after a first batch of writes is acknowledged, `fiu-ctrl` makes `fdatasync` fail at random.
/// Once a write gets StorageUnavailable, no later write is acknowledged (the log is poisoned,
/// not retried), `/health` reports `read_only`, and after a restart without fault injection
/// every acknowledged write is present. (Enabling the fault from the start made the test flaky:
/// one time in twenty the very first write failed and there was nothing to check.)
#[test]
fn failed_fsyncs_poison_the_log_and_lose_no_acknowledged_write() {
    use sutra_client::sutra_protocol::{ConceptId, ErrorCode, StoreConcept};
    use sutra_client::BlockingClient;

    if Command::new("fiu-run").arg("-h").output().is_err() {
        assert!(
            std::env::var_os("SUTRA_SKIP_FIU").is_some(),
            "fiu-run is missing: apt-get install fiu-utils (or set SUTRA_SKIP_FIU=1 to skip this test)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let control = tempfile::tempdir().expect("temp dir for the control fifos");
    let fifo_prefix = control.path().join("fiu-ctrl");
    let fifo_prefix = fifo_prefix.to_str().expect("utf-8 temp path");
    let mut command = Command::new("fiu-run");
    command
        .args(["-x", "-f", fifo_prefix, BINARY])
        .env_clear()
        .env("RUST_LOG", "info")
        .env("STORAGE_PORT", "0")
        .env("STORAGE_PATH", dir.path())
        .env("VECTOR_DIMENSION", "8")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("fiu-run starts");
    let addr = wait_for_address(&mut child);
    let client = BlockingClient::connect(addr.clone()).expect("connects");
    let mut acknowledged = Vec::new();
    let mut failed = false;
    for index in 0..5_000 {
        if index == 100 {
            let status = Command::new("fiu-ctrl")
                .args([
                    "-f",
                    fifo_prefix,
                    "-c",
                    "enable_random name=posix/io/sync/fdatasync,probability=0.05",
                    &child.id().to_string(),
                ])
                .status()
                .expect("fiu-ctrl runs");
            assert!(status.success(), "fiu-ctrl failed: {status}");
        }
        let id = format!("f{index}");
        match client.store_concept(StoreConcept::new(
            ConceptId::parse(&id).expect("id"),
            id.clone(),
        )) {
            Ok(_) => {
                assert!(!failed, "a write was acknowledged after a failed fsync");
                acknowledged.push(id);
            }
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::StorageUnavailable), "{error}");
                failed = true;
            }
        }
    }
    assert!(failed, "5% of fdatasync calls failing never failed a write");
    assert!(
        acknowledged.len() >= 100,
        "the writes before the fault were acknowledged"
    );
    assert_eq!(client.health_check().expect("health").status, "read_only");
    drop(client);
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let mut child = spawn(&[
        ("STORAGE_PORT", "0"),
        ("STORAGE_PATH", dir.path().to_str().expect("utf-8")),
        ("VECTOR_DIMENSION", "8"),
    ]);
    let addr = wait_for_address(&mut child);
    let client = BlockingClient::connect(addr).expect("connects");
    for id in &acknowledged {
        assert_eq!(
            client
                .get_concept_by_id(id)
                .expect("acknowledged write survives")
                .content,
            *id
        );
    }
    assert_eq!(
        client.health_check().expect("health").status,
        "ok",
        "a restart clears the poison"
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

/// `SERVER_THREADS` sets the runtime's worker threads, and one thread serves reads and
/// writes (under `always` too, where the log thread acknowledges writes) without waiting on
/// itself.
#[test]
fn server_threads_sets_the_workers_and_one_serves() {
    let runtime_threads = |threads: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = spawn(&[
            ("STORAGE_PORT", "0"),
            ("STORAGE_PATH", dir.path().to_str().expect("utf-8")),
            ("SERVER_THREADS", threads),
            ("WAL_FSYNC", "always"),
        ]);
        let addr = wait_for_address(&mut child);
        store_and_get_over_text(&addr);
        // Workers and blocking threads share the runtime's thread name.
        let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id())).expect("tasks");
        let count = tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .filter(|name| name.trim() == "tokio-rt-worker")
            .count();
        child.kill().expect("kills");
        let _ = child.wait();
        count
    };
    let one = runtime_threads("1");
    let four = runtime_threads("4");
    assert!(one >= 1, "{one}");
    assert_eq!(
        four.checked_sub(one),
        Some(3),
        "runtime threads: {one} with 1 worker, {four} with 4"
    );
}

/// Stores "hello" under `a` on the text protocol and reads it back; the replies.
fn store_and_get_over_text(addr: &str) -> String {
    let mut text = TcpStream::connect(addr).expect("connects");
    text.write_all(b"STORE a note hello\nGET a\nQUIT\n")
        .expect("writes");
    let mut replies = String::new();
    text.read_to_string(&mut replies)
        .expect("reads until QUIT closes");
    assert!(replies.contains("\"content\":\"hello\""), "{replies}");
    replies
}
