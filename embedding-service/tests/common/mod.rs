//! Helpers shared by the service's integration tests.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2")
}

pub async fn get(url: &str) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::get(url).await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// An ML-base replica process (`sutra-embedding-service ml-base`), killed when dropped.
pub struct Replica {
    pub url: String,
    child: std::process::Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a replica on a free port and waits until `/health` says the model is loaded (503
/// before that).
pub async fn start_replica(name: &str) -> anyhow::Result<Replica> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sutra-embedding-service"))
        .arg("ml-base")
        .env_clear()
        .env("ML_BASE_PORT", "0")
        .env("INSTANCE_ID", name)
        .env("SUTRA_MODEL_DIR", model_dir())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = lines.by_ref().map_while(Result::ok).find_map(|line| {
            line.contains("ML-base listening").then(|| {
                let start = line.find("addr=").map(|at| at + 5)?;
                line[start..].split_whitespace().next().map(str::to_owned)
            })?
        });
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        addr
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("ML-base {name} printed no address"))?;
    let url = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, health)) = get(&format!("{url}/health")).await {
            assert_eq!(health["instance_id"], name);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ML-base {name} never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Replica { url, child })
}
