//! The `entra-redis-proxy` binary: load and validate the configuration, set up logging, run
//! the server. Configuration errors (including those the server finds at start-up) exit with
//! 64 (EX_USAGE), runtime failures with 1.
//!
//! `entra-redis-proxy doctor [--json] [the daemon's flags]` checks the path once instead
//! (see [`entra_redis_proxy::doctor`]).

use std::ffi::OsString;
use std::process::ExitCode;

use entra_redis_proxy::config::{self, ConfigError, EXIT_USAGE};
use entra_redis_proxy::startup::StartupError;
use entra_redis_proxy::{doctor, logging, server};

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "doctor") {
        args.remove(1);
        let before = args.len();
        args.retain(|a| a != "--json");
        let json = before != args.len();
        return doctor_main(args, json);
    }
    let loaded = match config::load_from(args) {
        Ok(loaded) => loaded,
        Err(e) => return config_failure(e),
    };
    let settings = loaded.settings;
    let plan = match settings.plan() {
        Ok(plan) => plan,
        Err(e) => return config_failure(e),
    };
    if loaded.print_config {
        print!("{}", settings.redacted_toml());
        return ExitCode::SUCCESS;
    }

    logging::init(settings.log_format);
    match run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        // A problem only the server can detect in the configuration (say, a CA file that
        // does not parse) is still a configuration error for the operator: exit 64.
        Err(e) if e.is_configuration() => {
            eprintln!("entra-redis-proxy: configuration error: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            tracing::error!(error = %e, "entra-redis-proxy stopped");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Builds the runtime (`threads`: 0 one worker per CPU, 1 single-threaded, N workers) and
/// runs the server until it stops.
fn run(plan: config::Plan) -> Result<(), StartupError> {
    let mut builder = match plan.settings.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    let runtime = builder
        .enable_all()
        .thread_name("entra-redis-proxy")
        .build()
        .map_err(|source| StartupError::Process {
            what: "cannot start the runtime",
            source,
        })?;
    runtime.block_on(server::run(plan))
}

/// Reports a configuration error on stderr and picks the exit code: 0 for `--help` and
/// `--version`, 64 for everything else.
fn config_failure(e: ConfigError) -> ExitCode {
    if let ConfigError::Cli(clap_err) = &e {
        // clap renders help, version and usage errors itself (with the usage line).
        let _ = clap_err.print();
        return if clap_err.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!("entra-redis-proxy: configuration error: {e}");
    ExitCode::from(EXIT_USAGE)
}

/// `doctor`: the daemon's configuration, checked step by step; prints the report (text or
/// JSON) and exits 0 (all passed), 1 (a check failed) or 64 (configuration error).
fn doctor_main(args: Vec<OsString>, json: bool) -> ExitCode {
    // The local time zone can only be read safely while the process has one thread.
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let report = match config::load_from(args) {
        Err(ConfigError::Cli(clap_err)) => {
            let _ = clap_err.print();
            return if clap_err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(e) => doctor::Report::config_failure(e.to_string()),
        Ok(loaded) => match loaded.settings.plan() {
            Err(e) => doctor::Report::config_failure(e.to_string()),
            Ok(plan) => {
                // Warnings and errors of the code doctor reuses go to stderr; the report to stdout.
                let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .try_init();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("entra-redis-proxy doctor: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                runtime.block_on(doctor::run(&plan, offset))
            }
        },
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    ExitCode::from(report.exit_code())
}
