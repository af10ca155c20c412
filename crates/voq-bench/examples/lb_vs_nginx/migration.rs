//! Phase 4, address change: whether real voq calls survive their client moving to a new IP
//! behind the proxy. `--calls` voq clients call voq servers with the echo agent through the
//! proxy; 1 s into each call the client rebinds to a new IP (127.0.0.10, …). A call survives
//! when it completes with the echo bit-exact. voq lb routes by the server id in the DCID, so
//! the new address reaches the same server; a proxy that hashes the client address may not.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::{Server, Settings, Tunnel};

use crate::quic_lb::lb_settings;
use crate::report::{CallResult, Migration};

/// Calls through `vip`; each client moves to a new IP mid-call.
pub(crate) async fn migration(
    vip: SocketAddr,
    servers: &[Server],
    calls: usize,
    prompt: &[i16],
) -> Migration {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..calls {
        let prompt = prompt.to_vec();
        let new_ip = Ipv4Addr::new(127, 0, 0, 10 + i as u8);
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
            let result = one_call(vip, new_ip, prompt).await;
            CallResult {
                new_ip,
                survived: result.is_ok(),
                error: result.err().map(|e| format!("{e:#}")),
            }
        });
    }
    let mut detail = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => detail.push(r),
            Err(e) => detail.push(CallResult {
                new_ip: Ipv4Addr::UNSPECIFIED,
                survived: false,
                error: Some(e.to_string()),
            }),
        }
    }
    detail.sort_by_key(|c| c.new_ip);
    Migration {
        calls,
        survived: detail.iter().filter(|c| c.survived).count(),
        sessions_per_server: servers
            .iter()
            .map(|s| s.stats().sessions_started.total())
            .collect(),
        calls_detail: detail,
    }
}

/// One call with the prompt in real time; 1 s in, the client rebinds to `new_ip`. Ok when
/// the call completes and the echo is bit-exact.
async fn one_call(vip: SocketAddr, new_ip: Ipv4Addr, prompt: Vec<i16>) -> anyhow::Result<()> {
    let client = Client::new(&Trust::Insecure, "127.0.0.1:0".parse()?)?;
    let target = Target {
        addr: vip,
        server_name: "localhost".into(),
        tls: true,
    };
    let opts = CallOptions {
        turns: vec![prompt.clone()],
        input_speed: 1.0,
        timeout: Duration::from_secs(6),
        ..Default::default()
    };
    let rebind = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let socket = UdpSocket::bind((new_ip, 0))?;
        client.endpoint().rebind(socket)?;
        anyhow::Ok(())
    };
    let (out, rebound) = tokio::join!(client.call(&target, opts), rebind);
    rebound.context("rebind")?;
    let out = out?;
    let p = &out.report.prompt;
    anyhow::ensure!(
        p.frames_confirmed == p.frames_sent,
        "{} of {} frames confirmed",
        p.frames_confirmed,
        p.frames_sent
    );
    anyhow::ensure!(out.reply_received == prompt, "the echo differs");
    client.endpoint().wait_idle().await;
    Ok(())
}

/// Three voq servers with the echo agent, server ids 1..=3, on `ports` (0 = any).
pub(crate) async fn start_servers(ports: &[u16], tunnel: Tunnel) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::new();
    for (id, port) in (1..=3u8).zip(ports) {
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], *port)),
            agent: "echo".into(),
            quic_lb: Some(lb_settings(id)),
            tunnel,
            drain_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        servers.push(Server::start(settings).await?);
    }
    Ok(servers)
}

/// The first 2 s of the test prompt, 24 kHz mono.
pub(crate) fn prompt() -> anyhow::Result<Vec<i16>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav");
    let pcm = voq_audio::read_wav_file(&path)?.to_mono_24k()?;
    Ok(pcm[..pcm.len().min(48_000)].to_vec())
}
