//! The `riffle` binary: parse, run, map the outcome to an exit code.
//! 0 done; 1 a definite error; 2 bad usage (clap's own); 3 `riffle verify`
//! found differences.

use clap::Parser;

// Events are built on the source's thread and freed on the sink's: glibc's
// allocator serialises that on a lock (measured: a fifth of the binlog
// stream's time); mimalloc frees across threads without one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::io::IsTerminal;
use std::process::ExitCode;

fn init_logs(cli: &riffle::cli::Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match cli.log_format {
        riffle::cli::LogFormat::Json => builder.json().init(),
        riffle::cli::LogFormat::Text => builder.with_ansi(ansi).init(),
    }
}

fn main() -> ExitCode {
    let cli = riffle::cli::Cli::parse();
    init_logs(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(riffle::run(cli));
    // Work still running on a blocking thread once the command has ended
    // (a sink `riffle verify` was still reading when stopped) gets a few
    // seconds, not as long as it would take.
    runtime.shutdown_timeout(std::time::Duration::from_secs(3));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<riffle::verify::Differences>().is_some() => {
            eprintln!("{e:#}");
            ExitCode::from(riffle::verify::DIFFERENCES_EXIT)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
