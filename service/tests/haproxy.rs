//! `deploy/haproxy/ml-base-lb.cfg` with the real haproxy (Debian package `haproxy`) in front
//! of two ML-base processes on loopback: both serve, and killing one mid-load fails no
//! request.

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
    let (one, two) = tokio::try_join!(start_replica("one"), start_replica("two"))?;
    let bind = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.to_string()
    };
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/haproxy/ml-base-lb.cfg"
    );
    let _haproxy = Haproxy(
        Command::new("haproxy")
            .args(["-db", "-f", config])
            .env("ML_BASE_LB_BIND", &bind)
            .env("ML_BASE_1", one.url.trim_start_matches("http://"))
            .env("ML_BASE_2", two.url.trim_start_matches("http://"))
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
    drop(two);
    Ok(())
}
