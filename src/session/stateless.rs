//! The allow-list of commands that leave no state on the connection that runs them.
//!
//! A session may move to a new upstream connection (after the old one was lost) only if the
//! proxy knows the whole state its client built there. Data commands (GET, HSET, EVAL, XADD,
//! ...) change the dataset, not the connection, and are listed here; the commands that change
//! connection state are modelled one by one in `command.rs`. Anything else (a command this
//! table does not know, from a newer server or a module outside the namespaces below) makes
//! the session not replaceable: an allow-list, so that an unknown command errs on the side of
//! closing the client rather than of a silently different connection.

/// Top-level command names (upper case, sorted) that leave no connection state. Blocking
/// commands, transactions, Pub/Sub, CLIENT, HELLO, SELECT and the like are not here: they are
/// modelled in `command.rs`.
const STATELESS: &[&str] = &[
    "ACL",
    "APPEND",
    "ASKING",
    "BGREWRITEAOF",
    "BGSAVE",
    "BITCOUNT",
    "BITFIELD",
    "BITFIELD_RO",
    "BITOP",
    "BITPOS",
    "CLUSTER",
    "COMMAND",
    "CONFIG",
    "COPY",
    "DBSIZE",
    "DEBUG",
    "DECR",
    "DECRBY",
    "DEL",
    "DUMP",
    "ECHO",
    "EVAL",
    "EVALSHA",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXISTS",
    "EXPIRE",
    "EXPIREAT",
    "EXPIRETIME",
    "FAILOVER",
    "FCALL",
    "FCALL_RO",
    "FLUSHALL",
    "FLUSHDB",
    "FUNCTION",
    "GEOADD",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUS",
    "GEORADIUSBYMEMBER",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GEOSEARCHSTORE",
    "GET",
    "GETBIT",
    "GETDEL",
    "GETEX",
    "GETRANGE",
    "GETSET",
    "HDEL",
    "HEXISTS",
    "HEXPIRE",
    "HEXPIREAT",
    "HEXPIRETIME",
    "HGET",
    "HGETALL",
    "HGETDEL",
    "HGETEX",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HMSET",
    "HPERSIST",
    "HPEXPIRE",
    "HPEXPIREAT",
    "HPEXPIRETIME",
    "HPTTL",
    "HRANDFIELD",
    "HSCAN",
    "HSET",
    "HSETEX",
    "HSETNX",
    "HSTRLEN",
    "HTTL",
    "HVALS",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "INFO",
    "KEYS",
    "LASTSAVE",
    "LATENCY",
    "LCS",
    "LINDEX",
    "LINSERT",
    "LLEN",
    "LMOVE",
    "LMPOP",
    "LOLWUT",
    "LPOP",
    "LPOS",
    "LPUSH",
    "LPUSHX",
    "LRANGE",
    "LREM",
    "LSET",
    "LTRIM",
    "MEMORY",
    "MGET",
    "MIGRATE",
    "MODULE",
    "MOVE",
    "MSET",
    "MSETNX",
    "OBJECT",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PEXPIRETIME",
    "PFADD",
    "PFCOUNT",
    "PFDEBUG",
    "PFMERGE",
    "PFSELFTEST",
    "PING",
    "PSETEX",
    "PTTL",
    "PUBLISH",
    "PUBSUB",
    "RANDOMKEY",
    "RENAME",
    "RENAMENX",
    "REPLICAOF",
    "RESTORE",
    "RESTORE-ASKING",
    "ROLE",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SAVE",
    "SCAN",
    "SCARD",
    "SCRIPT",
    "SDIFF",
    "SDIFFSTORE",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SHUTDOWN",
    "SINTER",
    "SINTERCARD",
    "SINTERSTORE",
    "SISMEMBER",
    "SLAVEOF",
    "SLOWLOG",
    "SMEMBERS",
    "SMISMEMBER",
    "SMOVE",
    "SORT",
    "SORT_RO",
    "SPOP",
    "SPUBLISH",
    "SRANDMEMBER",
    "SREM",
    "SSCAN",
    "STRLEN",
    "SUBSTR",
    "SUNION",
    "SUNIONSTORE",
    "SWAPDB",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "UNLINK",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREVRANGE",
    "XSETID",
    "XTRIM",
    "ZADD",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTER",
    "ZINTERCARD",
    "ZINTERSTORE",
    "ZLEXCOUNT",
    "ZMPOP",
    "ZMSCORE",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANGESTORE",
    "ZRANK",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
    "ZUNIONSTORE",
];

/// Namespaces of the module commands Azure Managed Redis offers (RediSearch, RedisJSON,
/// RedisBloom, RedisTimeSeries): data commands, none of which changes connection state.
const MODULE_PREFIXES: &[&str] = &[
    "BF.", "CF.", "CMS.", "FT.", "JSON.", "TDIGEST.", "TOPK.", "TS.",
];

/// True if a command of this name (any case) leaves no state on its connection.
#[inline]
pub(super) fn is_stateless(name: &[u8]) -> bool {
    if name.len() > 20 {
        return false;
    }
    let found = STATELESS
        .binary_search_by(|probe| cmp_upper(probe.as_bytes(), name))
        .is_ok();
    found
        || MODULE_PREFIXES
            .iter()
            .any(|p| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// The allow-list's top-level names (upper case), for tables built from it.
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    STATELESS.iter().copied()
}

/// Compares an upper-case name with any-case bytes, as if both were upper case.
#[inline]
fn cmp_upper(upper: &[u8], name: &[u8]) -> std::cmp::Ordering {
    let n = upper.len().min(name.len());
    for i in 0..n {
        let c = name[i].to_ascii_uppercase();
        match upper[i].cmp(&c) {
            std::cmp::Ordering::Equal => {}
            other => return other,
        }
    }
    upper.len().cmp(&name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_upper_case() {
        for w in STATELESS.windows(2) {
            assert!(w[0] < w[1], "{} before {}", w[0], w[1]);
        }
        for n in STATELESS {
            assert_eq!(n.to_ascii_uppercase(), *n);
            assert!(n.len() <= 20, "{n}");
        }
    }

    #[test]
    fn data_commands_are_stateless_and_connection_commands_are_not() {
        for c in [
            "get",
            "SET",
            "HsEt",
            "xadd",
            "EVAL",
            "json.set",
            "FT.SEARCH",
            "ts.add",
        ] {
            assert!(is_stateless(c.as_bytes()), "{c}");
        }
        for c in [
            "SELECT",
            "CLIENT",
            "HELLO",
            "MULTI",
            "WATCH",
            "SUBSCRIBE",
            "MONITOR",
            "BLPOP",
            "READONLY",
            "SYNC",
            "FOO",
            "GETX",
            "JSON.",
            "",
            "AUTH",
            "RESET",
        ] {
            assert!(!is_stateless(c.as_bytes()), "{c}");
        }
    }
}
