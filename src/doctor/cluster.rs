//! The cluster step (`cluster = true`): CLUSTER NODES on the seed, then TLS, AUTH and PING on
//! every node the topology names (`node`).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Map};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::context::{Planned, Run};
use super::probe::{command, reply_text};
use super::report::Verdict;
use crate::resp;
use crate::token::AccessToken;

/// In cluster mode: CLUSTER NODES, then AUTH and PING on every node the topology names, with
/// the local port the proxy would give it.
pub(super) async fn check_cluster<S: AsyncRead + AsyncWrite + Unpin>(
    run: &mut Run,
    p: &Planned,
    stream: &mut S,
    token: &AccessToken,
) {
    use crate::cluster::rewrite::{self, NodeMap, Topology};
    let started = Instant::now();
    let reply = match command(stream, &["CLUSTER", "NODES"], p.plan.settings.auth_timeout).await {
        Ok(r) if !resp::is_error_reply(&r) => r,
        Ok(r) => {
            run.push(
                "cluster",
                Verdict::Fail,
                started,
                format!("CLUSTER NODES refused: {}", reply_text(&r)),
                Some("cluster = true needs a cache with the OSS cluster policy (Cluster API); for Enterprise or non-clustered caches set cluster = false".into()),
                Map::new(),
            );
            return;
        }
        Err(e) => {
            run.push("cluster", Verdict::Fail, started, e, None, Map::new());
            return;
        }
    };
    /// Records the nodes in order; gives each the local port the proxy would (the range in
    /// order of first sight).
    struct Recording {
        /// The local IP address node listeners would bind.
        ip: std::net::IpAddr,
        /// `cluster_ports`, if set.
        ports: Option<std::ops::RangeInclusive<u16>>,
        /// `(endpoint, port, local port)` in order of first sight.
        nodes: Mutex<Vec<(String, u16, Option<u16>)>>,
    }
    impl NodeMap for Recording {
        fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr> {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, l)) = nodes.iter().find(|(e, p, _)| e == endpoint && *p == port) {
                return Some(SocketAddr::new(self.ip, l.unwrap_or(0)));
            }
            let local = self.ports.clone().and_then(|mut r| r.nth(nodes.len()));
            nodes.push((endpoint.to_owned(), port, local));
            Some(SocketAddr::new(self.ip, local.unwrap_or(0)))
        }
    }
    let ip = p
        .plan
        .listen
        .iter()
        .find_map(|a| match a {
            crate::config::ListenAddr::Tcp(a) => Some(a.ip()),
            _ => None,
        })
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let recording = Recording {
        ip,
        ports: p.plan.cluster.as_ref().and_then(|c| c.ports.clone()),
        nodes: Mutex::new(Vec::new()),
    };
    if let Err(e) = rewrite::rewrite_topology(Topology::Nodes, &reply, &recording) {
        run.push(
            "cluster",
            Verdict::Fail,
            started,
            format!("CLUSTER NODES did not parse: {e}"),
            None,
            Map::new(),
        );
        return;
    }
    let nodes = recording
        .nodes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    run.push(
        "cluster",
        Verdict::Ok,
        started,
        format!("the topology names {} node(s)", nodes.len()),
        None,
        Map::new(),
    );
    for (endpoint, port, local) in nodes {
        let started = Instant::now();
        let node = p.connector.for_node(&endpoint, port);
        let local = local
            .map(|l| SocketAddr::new(ip, l).to_string())
            .unwrap_or_else(|| "an ephemeral local port".into());
        let facts = Map::from_iter([
            ("node".to_owned(), json!(node.addr())),
            ("local".to_owned(), json!(local)),
        ]);
        match node.connect(token).await {
            Ok(mut s) => {
                let pong = command(&mut s, &["PING"], p.plan.settings.auth_timeout).await;
                let _ = s.shutdown().await;
                match pong {
                    Ok(r) if r == b"+PONG\r\n" => run.push(
                        "node",
                        Verdict::Ok,
                        started,
                        format!("{} (local {local}): TLS, AUTH and PING ok", node.addr()),
                        None,
                        facts,
                    ),
                    Ok(r) => run.push("node", Verdict::Fail, started, format!("{}: PING answered {}", node.addr(), reply_text(&r)), None, facts),
                    Err(e) => run.push("node", Verdict::Fail, started, format!("{}: {e}", node.addr()), None, facts),
                }
            }
            Err(e) => run.push(
                "node",
                Verdict::Fail,
                started,
                format!("{} (local {local}): {e}", node.addr()),
                Some("every node must be reachable from here on the port the topology names (check firewall rules for the shard ports)".into()),
                facts,
            ),
        }
    }
}
