//! The `lienwatch` binary: argument parsing, logging and exit codes. Everything else is in the
//! library. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.

use clap::{Parser, Subcommand};
use lienwatch::config::{self, Config};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc, not glibc's allocator: an acknowledged position's buffers are made on a connection
/// task and freed on the engine thread (and the history drain's on the blocking pool), and
/// glibc serialises such cross-thread frees on the arena's lock. On the ingest bench
/// (`e2e_tcp`, which uses the same allocator) it gave about a fifth more acks per second with
/// history on; see the README's performance table.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lienwatch",
    version,
    about = "Ingestion daemon for auto-loan collateral GPS trackers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Config file (default: $LIENWATCH_CONFIG, else /etc/lienwatch/lienwatch.toml if it exists, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: exit 0 if valid, 2 with a message naming the key otherwise.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Decode frames given as hex (argument or standard input) and print one JSON object per message.
    Decode {
        /// gt06 | jt808 | teltonika | teltonika-udp | h02
        #[arg(long)]
        protocol: String,
        /// Hex bytes; read from standard input when absent.
        hex: Option<String>,
    },
    /// Replay captured sessions through the daemon's pipeline on a virtual clock; print alerts as JSON lines.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => run(config),
        Cmd::CheckConfig { config } => {
            let path = match config::resolve_path(config.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("lienwatch: {e}");
                    return ExitCode::from(2);
                }
            };
            match Config::load(path.as_deref()) {
                Ok(_) => {
                    match &path {
                        Some(p) => println!("{}: ok", p.display()),
                        None => println!("built-in defaults: ok"),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lienwatch: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Decode { protocol, hex } => decode(&protocol, hex),
        Cmd::Replay { config, fixtures } => {
            let _ = init_logging("warn", "text");
            let cfg = match config {
                Some(p) => match Config::load(Some(&p)) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("lienwatch: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::default(),
            };
            let mut stdout = std::io::stdout().lock();
            match lienwatch::replay::run_files(&cfg, &fixtures, &mut stdout) {
                Ok(report) if report.failures == 0 => {
                    eprintln!("replay: {} fixture(s) passed", report.fixtures);
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    eprintln!(
                        "replay: {} of {} fixture(s) failed",
                        report.failures, report.fixtures
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("lienwatch: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

fn run(config: Option<PathBuf>) -> ExitCode {
    let path = match config::resolve_path(config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lienwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lienwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let log_reload = init_logging(&cfg.log.level, &cfg.log.format);
    match &path {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no config file; using built-in defaults"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lienwatch: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = lienwatch::daemon::RunOptions {
        config_path: path.clone(),
        log_reload,
    };
    let result = rt.block_on(lienwatch::daemon::run(cfg, opts));
    // Everything acknowledged is on disk by now (the engine's last flush). A background pass
    // still running on a blocking thread (history sealing can take a minute on a large fleet)
    // is left to end with the process, as a crash would end it, rather than holding the stop
    // past systemd's TimeoutStopSec.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "lienwatch failed");
            eprintln!("lienwatch: {e}");
            ExitCode::from(1)
        }
    }
}

fn decode(protocol: &str, hex: Option<String>) -> ExitCode {
    let Some(wire) = lienwatch::protocol::WireProtocol::parse(protocol) else {
        eprintln!(
            "lienwatch: unknown protocol {protocol:?} (gt06, jt808, teltonika, teltonika-udp, h02)"
        );
        return ExitCode::from(2);
    };
    let text = match hex {
        Some(h) => h,
        None => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("lienwatch: reading standard input: {e}");
                return ExitCode::from(1);
            }
            s
        }
    };
    let bytes = match lienwatch::protocol::parse_hex(&text) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lienwatch: bad hex: {e}");
            return ExitCode::from(2);
        }
    };
    match lienwatch::replay::decode_bytes(wire, &bytes) {
        Ok(lines) => {
            print_lines(&lines);
            ExitCode::SUCCESS
        }
        Err((lines, msg)) => {
            print_lines(&lines);
            eprintln!("lienwatch: {msg}");
            ExitCode::from(1)
        }
    }
}

/// One line each on standard output, stopping quietly when the reader has gone (`| head`):
/// `println!` would panic on the broken pipe.
fn print_lines(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

/// Logs to stderr (journald-friendly: no colours, and no timestamps of our own under journald,
/// which adds its own). Returns a handle that changes the filter at run time (SIGHUP).
fn init_logging(level: &str, format: &str) -> Option<lienwatch::daemon::LogReload> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};
    let from_env = std::env::var("RUST_LOG").is_ok();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Under journald each line carries its syslog priority, so `journalctl -p warning` works.
    use lienwatch::log_priority::SyslogPriority;
    let output: Box<dyn Layer<Registry> + Send + Sync> = match (format, under_journald) {
        ("json", true) => fmt::layer()
            .json()
            .event_format(SyslogPriority(fmt::format().json()))
            .with_writer(std::io::stderr)
            .boxed(),
        ("json", false) => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        (_, true) => fmt::layer()
            .with_ansi(false)
            .event_format(SyslogPriority(
                fmt::format().with_ansi(false).without_time(),
            ))
            .with_writer(std::io::stderr)
            .boxed(),
        _ => fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (filter, handle) = reload::Layer::new(filter);
    if tracing_subscriber::registry()
        .with(output)
        .with(filter)
        .try_init()
        .is_err()
    {
        return None;
    }
    if from_env {
        // RUST_LOG wins over the config, on reload too.
        return None;
    }
    Some(std::sync::Arc::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| format!("log.level: {e}"))?;
        handle.reload(f).map_err(|e| format!("log.level: {e}"))
    }))
}
