//! `mock-identity`: a local stand-in for Microsoft Entra ID, for tests and the README demo.
//! See `mock-identity --help` ([`mock_identity::USAGE`]).
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("az") {
        std::process::exit(mock_identity::az_main(&args[1..]));
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", mock_identity::USAGE);
        return;
    }
    let config = match mock_identity::parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mock-identity: {e}");
            std::process::exit(64);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mock-identity: {e}");
            std::process::exit(70);
        }
    };
    if let Err(e) = runtime.block_on(mock_identity::run(config)) {
        eprintln!("mock-identity: {e}");
        std::process::exit(1);
    }
}
