//! Listeners and accept loops: binding TCP listeners and Unix sockets (with their socket
//! files), accepting with a connection permit taken before `accept()`, backing off when
//! accepting fails (out of file descriptors), and spawning one session per client.
//!
//! Used by [`crate::server`] for the configured listeners and by [`crate::cluster`] for the
//! listener of each cluster node.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use crate::session::{self, SessionContext};

/// A bound listener of either kind.
pub(crate) enum Listener {
    /// A TCP listener (`listen = "127.0.0.1:6379"`, and every cluster node listener).
    Tcp(TcpListener),
    /// A Unix socket listener (`listen = "unix:/path"`).
    Unix(UnixListener),
}

/// A client connection of either kind.
enum ClientStream {
    /// From a TCP listener; Nagle is turned off before the session starts.
    Tcp(TcpStream),
    /// From a Unix socket listener.
    Unix(UnixStream),
}

impl Listener {
    /// Accepts one client of the listener's kind.
    async fn accept(&self) -> io::Result<ClientStream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| ClientStream::Tcp(s)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| ClientStream::Unix(s)),
        }
    }
}

/// Why a client listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The TCP address could not be bound (taken, not local, not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        /// The `listen` entry.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process answers on the socket file.
    #[error("cannot listen on unix:{}: another process is listening there", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is at the path (it is never removed): the
    /// configuration must name another path.
    #[error("cannot listen on unix:{}: the path exists and is not a socket", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Creating the socket, removing a stale one or setting its mode failed.
    #[error("{what} unix:{}: {source}", path.display())]
    Unix {
        /// What failed ("cannot listen on", "cannot remove stale socket").
        what: String,
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ListenError {
    /// True when the configuration must change (a path that is not a socket), as opposed to
    /// a run-time condition (a port already taken).
    pub fn is_configuration(&self) -> bool {
        matches!(self, ListenError::NotASocket { .. })
    }
}

/// Binds a TCP listener on `addr` (a `listen` entry, resolved when the configuration was
/// checked).
pub(crate) async fn bind_tcp(addr: std::net::SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Tcp {
            addr: addr.to_string(),
            source,
        })
}

/// A socket file this process created; removed on drop if it is still the same file.
#[derive(Debug)]
pub(crate) struct SocketFile {
    /// Where it is.
    path: PathBuf,
    /// Device and inode at creation, so a file someone else put there later is left alone.
    id: (u64, u64),
}

impl SocketFile {
    /// Where the socket file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds a Unix socket listener at `path` with file mode `mode`. A stale socket file (no
/// process answers on it) is removed first; anything else at `path` is an error.
pub(crate) fn bind_unix(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), ListenError> {
    let unix = |what: &str| {
        let what = what.to_owned();
        move |source| ListenError::Unix {
            what,
            path: path.to_owned(),
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(unix("cannot remove stale socket"))?;
            tracing::info!(path = %path.display(), "removed a stale socket file");
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unix("cannot listen on")(e)),
    }
    let listener = UnixListener::bind(path).map_err(unix("cannot listen on"))?;
    let meta = std::fs::symlink_metadata(path).map_err(unix("cannot listen on"))?;
    let file = SocketFile {
        path: path.to_owned(),
        id: (meta.dev(), meta.ino()),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(unix(&format!("cannot set mode {mode:04o} on")))?;
    Ok((listener, file))
}

/// The id of the next session, process-wide (it names the session in logs).
static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts clients on `listener` and runs a session for each, until shutdown.
pub(crate) async fn accept_loop(
    listener: Listener,
    ctx: Arc<SessionContext>,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // The permit is taken before accept: at the limit, clients wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok(stream) => {
                let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                // Two task types: a shared session's task must not hold room for a
                // one-to-one session (idle memory).
                if ctx.pool.is_some() {
                    tokio::spawn(async move {
                        match stream {
                            ClientStream::Tcp(s) => {
                                let _ = s.set_nodelay(true);
                                session::run_shared(s, ctx, shutdown, id).await;
                            }
                            ClientStream::Unix(s) => {
                                session::run_shared(s, ctx, shutdown, id).await
                            }
                        }
                        drop(permit);
                    });
                } else {
                    // The permit goes to the session's own task (`session::run`).
                    tokio::spawn(async move {
                        match stream {
                            ClientStream::Tcp(s) => {
                                let _ = s.set_nodelay(true);
                                session::run(s, ctx, shutdown, id, permit).await;
                            }
                            ClientStream::Unix(s) => {
                                session::run(s, ctx, shutdown, id, permit).await
                            }
                        }
                    });
                }
            }
            Err(e) => {
                // Never fatal. Out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (listener, file) = bind_unix(&path, 0o600).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A live listener is not stolen.
        let err = bind_unix(&path, 0o600).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
        drop(listener);
        drop(file);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, "data").unwrap();
        let err = bind_unix(&path, 0o600).unwrap_err();
        assert!(matches!(err, ListenError::NotASocket { .. }), "{err}");
        assert!(err.is_configuration());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
