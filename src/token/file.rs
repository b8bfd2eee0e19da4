//! A token delivered as a file by another agent (`credential = "token-file"`).
//!
//! The file holds one raw access token (a JWT); its expiry comes from the `exp` claim. Real
//! deployments replace such files atomically (a rename, or Kubernetes' `..data` symlink swap),
//! so the source polls the *path* and compares what it reads, never trusting an inode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{jwt, BoxFuture, FetchedToken, Secret, TokenError, TokenSource};

/// Reads the token from a file; notices rewrites by polling.
pub struct TokenFileSource {
    /// The file's path, re-opened at every read.
    path: PathBuf,
    /// How often [`TokenSource::changed`] looks at the file.
    poll_interval: Duration,
    /// Fingerprint of the content last returned by `fetch`, so that a rewrite between a fetch
    /// and the next `changed` call is not missed.
    last_fetched: std::sync::Mutex<Option<u64>>,
}

impl TokenFileSource {
    /// A source reading `path`, polled every `poll_interval` for changes.
    pub fn new(path: impl Into<PathBuf>, poll_interval: Duration) -> Self {
        TokenFileSource {
            path: path.into(),
            poll_interval,
            last_fetched: std::sync::Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read(&self) -> Result<FetchedToken, TokenError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| TokenError::Read {
                what: "token file",
                path: self.path.display().to_string(),
                source,
            })?;
        *self.last_fetched.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(fingerprint(text.as_bytes()));
        super::warn_if_readable_by_others(&self.path, "token file");
        let token = text.trim().to_owned();
        drop(zeroize::Zeroizing::new(text));
        if token.is_empty() {
            return Err(TokenError::Malformed(format!(
                "the token file {} is empty",
                self.path.display()
            )));
        }
        let claims = jwt::claims(&token)?;
        let expires_at = claims
            .expires_at
            .ok_or_else(|| TokenError::Malformed("the token has no `exp` claim".into()))?;
        Ok(FetchedToken {
            secret: Secret::new(token),
            expires_at,
        })
    }

    /// Fingerprint of the file as it is now; `None` when it cannot be read.
    async fn current_fingerprint(&self) -> Option<u64> {
        let bytes = zeroize::Zeroizing::new(tokio::fs::read(&self.path).await.ok()?);
        Some(fingerprint(&bytes))
    }
}

/// A cheap fingerprint of the file's content (never logged): changes when the token does.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl TokenSource for TokenFileSource {
    fn describe(&self) -> String {
        format!("token-file {}", self.path.display())
    }

    fn fetch(&self) -> BoxFuture<'_, Result<FetchedToken, TokenError>> {
        Box::pin(self.read())
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let known = *self.last_fetched.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = self.current_fingerprint().await;
                // An unreadable file is not a change: the manager keeps the current token and
                // the next successful read notices the new content.
                if now.is_some() && now != known {
                    return;
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn jwt(exp: u64) -> String {
        jwt::unsigned_jwt(&serde_json::json!({"oid": "user-1", "exp": exp}))
    }

    #[tokio::test]
    async fn reads_token_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{}\n", jwt(2_000_000_000))).unwrap();
        let src = TokenFileSource::new(&path, Duration::from_millis(10));
        let t = src.fetch().await.unwrap();
        assert_eq!(t.secret.expose(), jwt(2_000_000_000));
        assert_eq!(
            t.expires_at,
            UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
    }

    #[tokio::test]
    async fn missing_file_names_the_path() {
        let src = TokenFileSource::new("/nonexistent/token", Duration::from_millis(10));
        let err = src.fetch().await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/token"), "{err}");
    }

    #[tokio::test]
    async fn notices_atomic_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, jwt(2_000_000_000)).unwrap();
        let src = TokenFileSource::new(&path, Duration::from_millis(10));
        src.fetch().await.unwrap();
        let changed = src.changed();
        let writer = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let tmp = dir.path().join("token.tmp");
            std::fs::write(&tmp, jwt(2_000_000_100)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        let (_, ()) = tokio::join!(writer, async {
            tokio::time::timeout(Duration::from_secs(5), changed)
                .await
                .expect("change noticed")
        });
        let t = src.fetch().await.unwrap();
        assert!(t.expires_at > SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_050));
    }
}
