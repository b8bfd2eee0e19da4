//! Temporary entry point (the full CLI with config layering replaces it).
use clap::Parser;
use entra_redis_proxy::config::{CredentialKind, Settings};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    listen: Vec<String>,
    #[arg(long)]
    upstream: String,
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    #[arg(long)]
    tls_server_name: Option<String>,
    #[arg(long)]
    token_file: std::path::PathBuf,
    #[arg(long, default_value = "1s")]
    token_file_poll: String,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut s = Settings {
        upstream: cli.upstream,
        ca_file: cli.ca_file,
        tls_server_name: cli.tls_server_name,
        credential: CredentialKind::TokenFile,
        token_file: Some(cli.token_file),
        token_file_poll: entra_redis_proxy::config::duration::parse(&cli.token_file_poll).unwrap(),
        ..Settings::default()
    };
    if !cli.listen.is_empty() {
        s.listen = cli.listen;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Err(e) = rt.block_on(entra_redis_proxy::server::run(s)) {
        eprintln!("entra-redis-proxy: {e:#}");
        std::process::exit(1);
    }
}
