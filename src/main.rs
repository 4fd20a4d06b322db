//! Command line: `serve` (default), `migrate`, `token`. Every setting is an
//! environment variable (also read from ./.env) and a flag; `--help` lists
//! them all (see `config`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use todo_api::config::LogFormat;
use todo_api::{Settings, StartupError, auth, config};
use tokio::net::{TcpListener, TcpSocket};

/// mimalloc (v2): faster than glibc's allocator for the many small
/// allocations of a request, and it returns freed memory promptly; built
/// to commit memory as it is used (`.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Todo API for a Next.js + Better Auth frontend.",
    after_help = "Every setting is an environment variable (also read from ./.env); a flag overrides it.\n\
                  Run it: `todo-api serve --dev` (embedded SQLite, a demo token). Docs at http://HOST:PORT/docs."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve {
        /// Try it out: without auth settings, a random secret for this run; prints a demo token and the docs URL.
        #[arg(long)]
        dev: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print an HS256 token signed with BETTER_AUTH_SECRET (for curl and tests).
    Token {
        /// User id (the `sub` claim): 1 to 255 characters, no control characters.
        #[arg(long)]
        sub: String,
        /// Email address (the `email` claim), optional.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
        ttl: i64,
    },
}

fn main() -> ExitCode {
    // A missing .env is normal; a broken one is worth saying.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    let command = Settings::arguments(Cli::command());
    let matches = Settings::parse(command, std::env::args_os(), |name| {
        std::env::var(name).ok()
    })
    .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let settings = Settings::from_arg_matches(&matches)
        .map_err(|e| e.to_string())
        .and_then(|s| s.resolve().map_err(|e| e.to_string()));
    let format = settings
        .as_ref()
        .map_or(LogFormat::Text, |s| s.operations.log_format);
    init_logging(format);
    let outcome = match settings {
        Ok(settings) => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.server.worker_threads())
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                let command = cli.command.unwrap_or(Command::Serve { dev: false });
                runtime.block_on(run(command, settings))
            }
            Err(e) => Err(format!("cannot start the async runtime: {e}")),
        },
        Err(e) => Err(e),
    };
    let Err(message) = outcome else {
        return ExitCode::SUCCESS;
    };
    // The reason is the last line, after everything logged before it.
    match format {
        LogFormat::Json => tracing::error!(error = %message, "exiting"),
        LogFormat::Text => eprintln!("error: {message}"),
    }
    ExitCode::FAILURE
}

/// Logs go to stderr, a line at a time as it happens (a crash loses none);
/// stdout carries only what a command prints (tokens).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line, the event's fields at the top level.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

async fn run(command: Command, mut settings: Settings) -> Result<(), String> {
    match command {
        Command::Migrate => {
            todo_api::startup::reach_and_migrate(&settings.database)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "migrations applied to {}",
                config::redact_url(settings.database.migration_url())
            );
            Ok(())
        }
        Command::Token { sub, email, ttl } => {
            let secret = settings
                .auth
                .secret()
                .ok_or("BETTER_AUTH_SECRET is not set: tokens are signed with it")?;
            if !auth::is_valid_user_id(&sub) {
                return Err(format!(
                    "--sub must be 1 to {} characters with no control characters (the server refuses any other)",
                    auth::MAX_USER_ID_CHARS
                ));
            }
            let token =
                auth::mint_hs256(secret, &sub, email.as_deref(), ttl).map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::Serve { dev } => {
            if dev {
                print_dev_banner(&mut settings)?;
            }
            warn_about_weak_secret(&settings);
            serve(settings).await.map_err(|e| e.to_string())
        }
    }
}

/// `serve --dev`: a secret for this run unless one is configured, a demo
/// token, and where to go next.
fn print_dev_banner(settings: &mut Settings) -> Result<(), String> {
    let base = format!("http://{}", settings.server.listen());
    match (settings.auth.secret(), &settings.auth.better_auth_jwks_url) {
        (None, None) => {
            use rand::Rng;
            let secret: [u8; 32] = rand::rng().random();
            let secret = hex::encode(secret);
            settings.auth.better_auth_secret = Some(secret.into());
            println!(
                "dev mode: a random BETTER_AUTH_SECRET was generated for this run (tokens die with the process)."
            );
        }
        (Some(_), _) => println!(
            "dev mode: BETTER_AUTH_SECRET is set, so it is used (no secret generated); the demo token is signed with it."
        ),
        (None, Some(url)) => {
            println!(
                "dev mode: tokens come from Better Auth ({url}); no secret is set, so there is no demo token.\n\
                 API docs: {base}/docs"
            );
            return Ok(());
        }
    }
    let secret = settings.auth.secret().unwrap_or_default();
    let token = auth::mint_hs256(secret, "demo-user", Some("demo@example.com"), 24 * 3600)
        .map_err(|e| e.to_string())?;
    println!("demo token (user \"demo-user\", valid 24 h):\n{token}");
    println!("try:\ncurl -H 'Authorization: Bearer {token}' {base}/api/tasks");
    println!("API docs (Authorize with the token): {base}/docs");
    Ok(())
}

/// Better Auth itself asks for a secret of 32 characters or more.
fn warn_about_weak_secret(settings: &Settings) {
    if let Some(secret) = settings.auth.secret()
        && secret.len() < 32
    {
        tracing::warn!(
            length = secret.len(),
            "BETTER_AUTH_SECRET is shorter than 32 bytes: anyone who guesses it can sign tokens; use a long random value (e.g. `openssl rand -base64 32`)"
        );
    }
}

/// Listens at once; reaches the database in the background (it may be late),
/// and exits with an error if it cannot within `DB_STARTUP_TIMEOUT`.
async fn serve(settings: Settings) -> Result<(), StartupError> {
    // Before anything is logged: a SIGTERM that follows any log line is ours.
    let signalled = shutdown_signal();
    todo_api::http::server::raise_open_file_limit();
    let app = todo_api::build(&settings).await?;
    let listener = listen(settings.server.listen()).map_err(|source| StartupError::Bind {
        addr: settings.server.listen(),
        source,
    })?;
    let addr = listener.local_addr().unwrap_or(settings.server.listen());
    tracing::info!(%addr, database = %config::redact_url(settings.database.url()), "listening");

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            () = signalled => {}
            _ = failed_rx => {}
        }
    };
    let server = todo_api::serve(listener, &app, shutdown);
    tokio::pin!(server);
    let mut startup_error = None;
    tokio::select! {
        served = &mut server => {
            served.map_err(|source| StartupError::Bind { addr, source })?;
            tracing::info!("shut down");
            return Ok(());
        }
        started = app.start() => {
            if let Err(err) = started {
                tracing::error!(error = %err, "start-up failed; shutting down");
                startup_error = Some(err);
                let _ = failed_tx.send(());
            } else {
                // Keep the sender: dropping it would read as a failure.
                std::mem::forget(failed_tx);
            }
        }
    }
    server
        .await
        .map_err(|source| StartupError::Bind { addr, source })?;
    match startup_error {
        Some(err) => Err(err),
        None => {
            tracing::info!("shut down");
            Ok(())
        }
    }
}

/// Connections the kernel has completed and the server not yet accepted.
/// `TcpListener::bind` uses 128 (the standard library's value); beyond it the
/// kernel drops new handshakes, and those clients wait seconds to retry. That
/// is what happens while the server is out of file descriptors (it cannot
/// accept until some close) or busy with a burst, so the queue is larger.
/// The kernel caps it at `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the listening socket as `TcpListener::bind` does, with [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind`: a restarted server can bind its port at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal sent as soon as the
/// server has logged anything must not find the default action (exit 143).
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let received = {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        // A handler that could not be installed leaves the default action
        // (exit) in place for its signal, so only the other is awaited.
        let recv = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! { () = recv(interrupt) => {}, () = recv(terminate) => {} }
        }
    };
    #[cfg(not(unix))]
    let received = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    async move {
        received.await;
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}
