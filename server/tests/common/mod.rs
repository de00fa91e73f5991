//! Starting the real `sutra-storage` binary, shared by the binary-level test files.

#![allow(dead_code, reason = "each test file uses part of this")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_sutra-storage");

pub fn spawn(envs: &[(&str, &str)]) -> Child {
    spawn_in(None, envs)
}

/// [`spawn`] with another working directory.
pub fn spawn_in(dir: Option<&std::path::Path>, envs: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BINARY);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .env_clear()
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().expect("the binary starts")
}

/// Reads the log until the "listening" line and returns the bound address; the log is
/// drained from then on.
pub fn wait_for_address(child: &mut Child) -> String {
    read_address(child, true)
}

/// [`wait_for_address`], then closes the log pipe: every later log write fails (`EPIPE`).
pub fn wait_for_address_then_close_log(child: &mut Child) -> String {
    read_address(child, false)
}

/// Waits up to 20 s for the process to exit after a signal; its status.
pub fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("no exit within 20 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_address(child: &mut Child, keep_draining: bool) -> String {
    read_start_up(child, keep_draining).0
}

/// [`wait_for_address`], and the log lines before the "listening" one.
pub fn wait_for_address_with_log(child: &mut Child) -> (String, Vec<String>) {
    read_start_up(child, true)
}

fn read_start_up(child: &mut Child, keep_draining: bool) -> (String, Vec<String>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let line = lines
            .next()
            .expect("the server logs before exiting")
            .expect("utf-8 log");
        if line.contains("listening") {
            let addr = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("addr="))
                .expect("addr field");
            if keep_draining {
                // Keep draining the log so the server never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
            }
            return (addr.to_owned(), before);
        }
        before.push(line);
    }
    panic!("no listening line within 20 s");
}
