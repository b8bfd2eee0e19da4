//! The `mock-identity` binary as the proxy's tests and the demo run it: `--help`, a refused
//! argument, and a start that prints its addresses and `READY`, then answers a managed-identity
//! token request over plain HTTP. (Having an integration test also makes `cargo test
//! --workspace` build the binary the proxy's tests start.)

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn mock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mock-identity"))
}

#[test]
fn help_and_a_bad_argument() {
    let out = mock().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), mock_identity::USAGE);

    let out = mock().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument --bogus"));
}

#[test]
fn starts_and_issues_a_managed_identity_token() {
    let mut child = mock()
        .args(["--identity-header", "h1", "--lifetime", "90s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("MOCK_IDENTITY_ADDR=") {
            addr = Some(a.to_owned());
        }
        if line == "READY" {
            break;
        }
    }
    let addr = addr.expect("MOCK_IDENTITY_ADDR printed before READY");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /msi/token?resource=https%3A%2F%2Fredis.azure.com&api-version=2019-08-01 HTTP/1.1\r\n\
         Host: {addr}\r\nX-IDENTITY-HEADER: h1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"access_token\""), "{response}");
}
