//! `cluster::rewrite`: arbitrary bytes never make `rewrite_redirects` or `rewrite_topology`
//! panic or loop; whatever they produce is one complete RESP frame, rewriting it again changes
//! nothing (every address is already local), and `may_redirect` has no false negatives.
#![no_main]

use std::net::SocketAddr;

use entra_redis_proxy::cluster::rewrite::{
    may_redirect, rewrite_redirects, rewrite_topology, Topology,
};
use entra_redis_proxy::resp::ReplyScanner;
use libfuzzer_sys::fuzz_target;

fn everything_local(_: &str, _: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 1)))
}

fn assert_one_frame(out: &[u8]) {
    let len = ReplyScanner::default().scan(out, usize::MAX >> 1);
    assert_eq!(len, Ok(Some(out.len())), "output is not one whole frame");
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, frame)) = input.split_first() else {
        return;
    };
    let map = &everything_local;
    if let Ok(Some(out)) = rewrite_redirects(frame, map) {
        assert!(may_redirect(frame), "may_redirect missed a redirect");
        assert_one_frame(&out);
        let again = rewrite_redirects(&out, map).expect("output rewrites again");
        assert_eq!(again.as_deref().unwrap_or(&out), &out[..], "not idempotent");
    }
    let which = [
        Topology::Slots,
        Topology::Shards,
        Topology::Nodes,
        Topology::Replicas,
    ][sel as usize % 4];
    if let Ok(out) = rewrite_topology(which, frame, map) {
        assert_one_frame(&out);
        let again = rewrite_topology(which, &out, map).expect("output rewrites again");
        assert_eq!(again, out, "not idempotent");
    }
});
