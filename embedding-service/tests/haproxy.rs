//! `deploy/haproxy/ml-base-lb.cfg` with the real haproxy (Debian package `haproxy`) in front
//! of two ML-base processes on loopback: both serve, killing one mid-load fails no request,
//! and the statistics socket (the seed's `echo "show stat" | nc localhost 9999`) shows both
//! UP, then the killed one DOWN. The file also passes `haproxy -c` with no environment.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::{get, start_replica};

struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_fails_over_between_two_replicas_without_a_failed_request() -> anyhow::Result<()> {
    if Command::new("haproxy").arg("-v").output().is_err() {
        assert!(
            std::env::var_os("SUTRA_SKIP_HAPROXY").is_some(),
            "haproxy is missing: apt-get install haproxy (or set SUTRA_SKIP_HAPROXY=1 to skip this test)"
        );
        return Ok(());
    }
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/haproxy/ml-base-lb.cfg"
    );
    // Every address has a default: the file checks with no environment at all.
    let check = Command::new("haproxy")
        .args(["-c", "-f", config])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()?;
    anyhow::ensure!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let (one, two) = tokio::try_join!(start_replica("one"), start_replica("two"))?;
    let free = || -> anyhow::Result<String> {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(probe.local_addr()?.to_string())
    };
    let (bind, stats_addr) = (free()?, free()?);
    let _haproxy = Haproxy(
        Command::new("haproxy")
            .args(["-db", "-f", config])
            .env("ML_BASE_LB_BIND", &bind)
            .env("ML_BASE_LB_STATS", &stats_addr)
            .env("ML_BASE_1", one.url.trim_start_matches("http://"))
            .env("ML_BASE_2", two.url.trim_start_matches("http://"))
            // The seed's third replica: here the second process again (a dead third server
            // would count as up until its checks fail, and could take retries).
            .env("ML_BASE_3", two.url.trim_start_matches("http://"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let url = format!("http://{bind}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(get(&format!("{url}/health")).await, Ok((200, _))) {
        anyhow::ensure!(Instant::now() < deadline, "haproxy never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_status(&stats_addr, &[("ml-base-1", "UP"), ("ml-base-2", "UP")]).await?;

    let http = reqwest::Client::new();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut served = Vec::new();
                for index in 0..20 {
                    let response = http
                        .post(format!("{url}/embed"))
                        .json(&json!({"texts": [format!("through haproxy {client} {index}")]}))
                        .send()
                        .await?;
                    let status = response.status();
                    let body: serde_json::Value = response.json().await?;
                    anyhow::ensure!(
                        status == 200,
                        "client {client} request {index}: {status} {body}"
                    );
                    served.push(body["instance_id"].as_str().unwrap_or("").to_owned());
                }
                anyhow::Ok(served)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(one); // SIGKILL, mid-load
    let mut by_instance: HashMap<String, usize> = HashMap::new();
    for client in clients {
        for instance in client.await?? {
            *by_instance.entry(instance).or_default() += 1;
        }
    }
    assert_eq!(by_instance.values().sum::<usize>(), 80);
    assert!(
        by_instance.get("one").copied().unwrap_or(0) > 0,
        "{by_instance:?}"
    );
    assert!(
        by_instance.get("two").copied().unwrap_or(0) > 0,
        "{by_instance:?}"
    );
    // The killed replica fails its checks (2 at 1 s) and is DOWN in `show stat`.
    wait_for_status(&stats_addr, &[("ml-base-1", "DOWN"), ("ml-base-2", "UP")]).await?;
    drop(two);
    Ok(())
}

/// `show stat` on the statistics socket: `(server, status)` of the replicas' backend.
async fn show_stat(socket_addr: &str) -> anyhow::Result<Vec<(String, String)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(socket_addr).await?;
    socket.write_all(b"show stat\n").await?;
    let mut csv = String::new();
    socket.read_to_string(&mut csv).await?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|line| line.strip_prefix("# "))
        .ok_or_else(|| anyhow::anyhow!("no CSV header in {csv:?}"))?
        .split(',')
        .collect();
    let column = |name: &str| header.iter().position(|field| *field == name);
    let (proxy, server, status) = (column("pxname"), column("svname"), column("status"));
    let (Some(proxy), Some(server), Some(status)) = (proxy, server, status) else {
        anyhow::bail!("unexpected header {header:?}");
    };
    Ok(lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| fields.get(proxy) == Some(&"ml_base_replicas"))
        .filter_map(|fields| {
            Some((
                fields.get(server)?.to_string(),
                fields.get(status)?.to_string(),
            ))
        })
        .collect())
}

/// Polls `show stat` for 15 s until each named server has its wanted status.
async fn wait_for_status(stats: &str, wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = show_stat(stats).await?;
        let matches = wanted.iter().all(|(server, status)| {
            rows.iter()
                .any(|(name, state)| name == server && state.starts_with(status))
        });
        if matches {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "show stat never had {wanted:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
