//! The real `sutra-embedding-service` binary with its log on a pipe nobody reads
//! (`sutra-embedding-service ml-base 2>&1 | head -1`): every log write fails with EPIPE, and
//! the replica must still load its model, serve, and stop on SIGTERM with status 0 (a failed
//! log write used to panic: at start-up, or in the task that logs).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{get, model_dir};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_stops_neither_start_up_nor_sigterm() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_sutra-embedding-service"))
            .arg("ml-base")
            .env_clear()
            .env("ML_BASE_HOST", "127.0.0.1")
            .env("ML_BASE_PORT", port.to_string())
            .env("SUTRA_MODEL_DIR", model_dir())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    // Both ends closed before the first log line.
    drop(child.0.stdout.take());
    drop(child.0.stderr.take());
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = get(&url).await {
            break;
        }
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("exited during start-up with {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "never loaded its model");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()?;
    anyhow::ensure!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(status.code() == Some(0), "exit status {status}");
    Ok(())
}

#[test]
fn help_speaks_of_no_future_work() {
    let service = env!("CARGO_BIN_EXE_sutra-embedding-service");
    let validate = env!("CARGO_BIN_EXE_sutra-validate");
    for (binary, args) in [
        (service, &["--help"][..]),
        (service, &["serve", "--help"]),
        (service, &["ml-base", "--help"]),
        (validate, &["--help"]),
    ] {
        let output = Command::new(binary).args(args).output().expect("runs");
        assert!(output.status.success(), "{binary} {args:?}");
        let stale = sutra_tests::stale_help(&String::from_utf8_lossy(&output.stdout));
        assert!(
            stale.is_empty(),
            "{binary} {args:?}: stale lines: {stale:#?}"
        );
    }
}
