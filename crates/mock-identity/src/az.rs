//! The `az` stand-in: a script put first on `PATH` that runs this binary's `az` mode, which
//! asks the mock's `/cli/token` and prints what the real CLI prints.

use std::net::SocketAddr;
use std::time::Duration;

use super::http::percent_encode;

/// Writes `DIR/az`, a shell script that runs this binary's `az` mode against `addr`.
pub(super) fn write_az_script(dir: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()?;
    let exe = exe.display().to_string().replace('\'', "'\\''");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("az");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec '{exe}' az --endpoint http://{addr} \"$@\"\n"),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// The `az` stand-in: `az account get-access-token -o json --scope S [--tenant T]` asks the
/// mock's `/cli/token` and prints what the real CLI prints. Returns the exit code.
pub fn az_main(args: &[String]) -> i32 {
    use std::io::{Read, Write};
    let mut endpoint = None;
    let mut scope = None;
    let mut tenant = None;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--endpoint" => endpoint = it.next().cloned(),
            "--scope" | "--resource" => scope = it.next().cloned(),
            "--tenant" | "-t" => tenant = it.next().cloned(),
            "-o" | "--output" | "--subscription" => {
                it.next();
            }
            w => words.push(w.to_owned()),
        }
    }
    if words != ["account", "get-access-token"] {
        eprintln!("ERROR: mock az supports only `account get-access-token`");
        return 2;
    }
    let (Some(endpoint), Some(scope)) = (endpoint, scope) else {
        eprintln!("ERROR: mock az needs --endpoint and --scope");
        return 2;
    };
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut query = format!("scope={}", percent_encode(&scope));
    if let Some(t) = tenant {
        query.push_str(&format!("&tenant={}", percent_encode(&t)));
    }
    let result = (|| -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "GET /cli/token?{query} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        )?;
        let mut head_and_body = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            head_and_body.extend_from_slice(&chunk[..n]);
            if let Some(i) = head_and_body.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&head_and_body[..i]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if head_and_body.len() >= i + 4 + len {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&head_and_body[i + 4..i + 4 + len]);
                    return Ok((status, body.into_owned()));
                }
            }
        }
        Err(std::io::Error::other("the mock closed the connection"))
    })();
    match result {
        Ok((200, body)) => {
            println!("{body}");
            0
        }
        Ok((status, body)) => {
            eprintln!("ERROR: the mock identity endpoint answered {status}: {body}");
            1
        }
        Err(e) => {
            eprintln!("ERROR: cannot reach the mock identity endpoint: {e}");
            1
        }
    }
}
