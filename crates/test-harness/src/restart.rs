//! Restarting the test redis-server on the same port (failover / restart emulation).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{RedisServer, Reply};

impl RedisServer {
    /// Kills the server and starts it again on the same port with the same configuration.
    /// ACL users created at run time are gone afterwards, as after a real restart.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let conf = self.dir.path().join("redis.conf");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.child = Command::new("redis-server")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("restart redis-server");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // the port may still be held: try again
                }
                if let Ok(mut admin) = self.try_admin().await {
                    if admin.cmd(&["PING"]).await == Reply::status("PONG") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart: {}",
                self.log()
            );
        }
    }
}
