//! The test harness's own clients, where a fault of theirs would look like a fault of the
//! proxy or of redis-server.

use std::time::Duration;

use test_harness::{RedisServer, Reply};

/// tokio-rustls accepts a write into its buffer and answers `Ok` when the socket write
/// returns `Pending`, which tokio's cooperative budget makes it do once a task has done many
/// I/O operations in one poll (reading a large reply, such as `CLIENT LIST` of 9,900
/// clients). A command written then stays in the TLS buffer until a flush, and waiting for
/// its reply waits forever: the storm test's `ACL DELUSER` timeout (docs/reliability.md).
#[tokio::test]
async fn a_command_written_with_the_task_budget_spent_reaches_redis_server() {
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    for _ in 0..3 {
        while tokio::task::coop::has_budget_remaining() {
            tokio::task::coop::consume_budget().await;
        }
        let reply = tokio::time::timeout(Duration::from_secs(5), admin.cmd(&["PING"])).await;
        assert_eq!(
            reply.expect("PING answered within 5 s"),
            Reply::status("PONG")
        );
    }
}
