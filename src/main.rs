//! Command line: `serve` (default), `migrate`, `token`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use todo_api::{Settings, StartupError, auth, config};
use tokio::net::{TcpListener, TcpSocket};

#[derive(Parser)]
#[command(
    version,
    about = "Todo API for a Next.js + Better Auth frontend. Settings come from the environment and ./.env"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve {
        /// Without any auth settings, generate a secret for this run and print a demo token.
        #[arg(long)]
        dev: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print an HS256 token signed with BETTER_AUTH_SECRET (for curl and tests).
    Token {
        /// User id (the `sub` claim).
        #[arg(long)]
        sub: String,
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
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
    // Logs go to stderr; stdout carries only what a command prints (tokens).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve { dev: false }))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    let mut settings = Settings::from_env().map_err(|e| e.to_string())?;
    match command {
        Command::Migrate => {
            let shown = config::redact_url(settings.database.migration_url());
            todo_api::db::migrate(&settings.database)
                .await
                .map_err(|source| {
                    todo_api::db::StartupError::Migration {
                        url: shown.clone(),
                        source,
                    }
                    .to_string()
                })?;
            println!("migrations applied to {shown}");
            Ok(())
        }
        Command::Token { sub, email, ttl } => {
            let secret = settings
                .auth
                .secret
                .as_deref()
                .ok_or("BETTER_AUTH_SECRET is not set")?;
            let token =
                auth::mint_hs256(secret, &sub, email.as_deref(), ttl).map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::Serve { dev } => {
            if dev && !settings.auth.is_configured() {
                print_dev_credentials(&mut settings)?;
            }
            serve(settings).await.map_err(|e| e.to_string())
        }
    }
}

/// `serve --dev`: a random secret for this run only, and a token to try the API with.
fn print_dev_credentials(settings: &mut Settings) -> Result<(), String> {
    use rand::Rng;
    let secret: [u8; 32] = rand::rng().random();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let token = auth::mint_hs256(
        secret.as_bytes(),
        "demo-user",
        Some("demo@example.com"),
        24 * 3600,
    )
    .map_err(|e| e.to_string())?;
    settings.auth.secret = Some(secret.into_bytes());
    println!(
        "dev mode: a random BETTER_AUTH_SECRET was generated for this run (tokens die with the process)."
    );
    println!("demo token (user \"demo-user\", valid 24 h):\n{token}");
    println!(
        "try:\ncurl -H 'Authorization: Bearer {token}' http://{}/api/tasks",
        settings.server.listen
    );
    Ok(())
}

/// Listens at once; reaches the database in the background (it may be late),
/// and exits with an error if it cannot within `DB_STARTUP_TIMEOUT`.
async fn serve(settings: Settings) -> Result<(), StartupError> {
    todo_api::http::server::raise_open_file_limit();
    let app = todo_api::build(&settings).await?;
    let listener = listen(settings.server.listen).map_err(|source| StartupError::Bind {
        addr: settings.server.listen,
        source,
    })?;
    let addr = listener.local_addr().unwrap_or(settings.server.listen);
    tracing::info!(%addr, database = %config::redact_url(&settings.database.url), "listening");

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => {}
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = interrupt => {}, _ = terminate => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
