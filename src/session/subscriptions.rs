//! Pub/Sub state: the subscription sets, the confirmations that change them, and the frames
//! that are messages rather than replies.

use std::collections::HashSet;

use super::command::{Kind, SubKind};

/// Channel, pattern and shard-channel subscriptions. Boxed and absent until the first
/// SUBSCRIBE: most sessions never subscribe, and every idle session carries this.
#[derive(Debug, Default)]
pub(super) struct Subscriptions(Option<Box<SubscriptionSets>>);

#[derive(Debug, Default)]
pub(super) struct SubscriptionSets {
    pub(super) channels: HashSet<Vec<u8>>,
    pub(super) patterns: HashSet<Vec<u8>>,
    pub(super) shards: HashSet<Vec<u8>>,
}

impl Subscriptions {
    /// Applies (UN)SUBSCRIBE with these channel arguments (none: unsubscribe from all).
    pub(super) fn apply(&mut self, k: SubKind, subscribe: bool, names: &[Vec<u8>]) {
        if !subscribe && self.0.is_none() {
            // Unsubscribing from nothing changes nothing.
            return;
        }
        let sets = self.sets_mut();
        let set = match k {
            SubKind::Channel => &mut sets.channels,
            SubKind::Pattern => &mut sets.patterns,
            SubKind::Shard => &mut sets.shards,
        };
        match (subscribe, names.is_empty()) {
            (true, _) => set.extend(names.iter().cloned()),
            (false, true) => set.clear(),
            (false, false) => {
                for n in names {
                    set.remove(n);
                }
            }
        }
        if self.is_empty() {
            self.0 = None;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|s| s.channels.is_empty() && s.patterns.is_empty() && s.shards.is_empty())
    }

    pub(super) fn clear(&mut self) {
        self.0 = None;
    }

    /// The sets (empty ones when there are none).
    pub(super) fn sets(&self) -> &SubscriptionSets {
        static NONE: std::sync::LazyLock<SubscriptionSets> =
            std::sync::LazyLock::new(SubscriptionSets::default);
        self.0.as_deref().unwrap_or(&NONE)
    }

    /// The sets, created at the first use.
    pub(super) fn sets_mut(&mut self) -> &mut SubscriptionSets {
        self.0.get_or_insert_with(Box::default)
    }
}

/// A Pub/Sub (un)subscribe confirmation.
pub(super) struct Confirmation {
    pub(super) kind: Kind,
    pub(super) channel: Option<Vec<u8>>,
}

/// Parses `[kind, channel, count]` confirmations, as a RESP2 array or a RESP3 push.
pub(super) fn pubsub_confirmation(frame: &[u8], push: bool) -> Option<Confirmation> {
    // Cheap filter before decoding: confirmations are 3-element aggregates.
    if frame.len() < 4 || &frame[1..4] != b"3\r\n" {
        return None;
    }
    let (name, channel) = if push {
        use redis_protocol::resp3::types::OwnedFrame as F;
        let (f, _) = redis_protocol::resp3::decode::complete::decode(frame).ok()??;
        let F::Push { data, .. } = f else { return None };
        let name = match data.first()? {
            F::BlobString { data, .. } | F::SimpleString { data, .. } => data.clone(),
            _ => return None,
        };
        let channel = match data.get(1)? {
            F::BlobString { data, .. } | F::SimpleString { data, .. } => Some(data.clone()),
            _ => None,
        };
        (name, channel)
    } else {
        use redis_protocol::resp2::types::OwnedFrame as F;
        let (f, _) = redis_protocol::resp2::decode::decode(frame).ok()??;
        let F::Array(data) = f else { return None };
        let name = match data.first()? {
            F::BulkString(b) | F::SimpleString(b) => b.clone(),
            _ => return None,
        };
        let channel = match data.get(1)? {
            F::BulkString(b) | F::SimpleString(b) => Some(b.clone()),
            _ => None,
        };
        (name, channel)
    };
    let kind = match name.to_ascii_lowercase().as_slice() {
        b"subscribe" => Kind::Subscribe(SubKind::Channel),
        b"psubscribe" => Kind::Subscribe(SubKind::Pattern),
        b"ssubscribe" => Kind::Subscribe(SubKind::Shard),
        b"unsubscribe" => Kind::Unsubscribe(SubKind::Channel),
        b"punsubscribe" => Kind::Unsubscribe(SubKind::Pattern),
        b"sunsubscribe" => Kind::Unsubscribe(SubKind::Shard),
        _ => return None,
    };
    Some(Confirmation { kind, channel })
}

/// A RESP2 Pub/Sub message (`message`, `pmessage`, `smessage`), which is not a reply.
pub(super) fn is_resp2_message(frame: &[u8]) -> bool {
    frame.starts_with(b"*3\r\n$7\r\nmessage\r\n")
        || frame.starts_with(b"*4\r\n$8\r\npmessage\r\n")
        || frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n")
}

/// A MONITOR line: `+<seconds>.<micros> [<db> <addr>] ...`. Replies to commands are simple
/// strings too, but none starts with a timestamp.
pub(super) fn is_monitor_line(frame: &[u8]) -> bool {
    let Some(rest) = frame.strip_prefix(b"+") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b'.') {
        return false;
    }
    let rest = &rest[digits + 1..];
    let frac = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    frac > 0 && rest[frac..].starts_with(b" [")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_are_told_from_replies() {
        assert!(is_monitor_line(
            b"+1795615083.338690 [0 127.0.0.1:41328] \"PING\"\r\n"
        ));
        assert!(!is_monitor_line(b"+OK\r\n"));
        assert!(!is_monitor_line(b"+PONG\r\n"));
        assert!(!is_monitor_line(b"+123\r\n"));
    }

    #[test]
    fn confirmations_parse_in_both_protocols() {
        let c = pubsub_confirmation(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", false).unwrap();
        assert_eq!(c.kind, Kind::Subscribe(SubKind::Channel));
        assert_eq!(c.channel.as_deref(), Some(&b"a"[..]));
        let c = pubsub_confirmation(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", false).unwrap();
        assert_eq!(c.kind, Kind::Unsubscribe(SubKind::Channel));
        assert!(c.channel.is_none());
        let c =
            pubsub_confirmation(b">3\r\n$10\r\npsubscribe\r\n$2\r\nh*\r\n:1\r\n", true).unwrap();
        assert_eq!(c.kind, Kind::Subscribe(SubKind::Pattern));
        assert!(
            pubsub_confirmation(b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", true).is_none()
        );
    }
}
