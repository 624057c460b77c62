//! `cargo run -p example-axum`: the demo on http://127.0.0.1:3000 with a
//! SQLite file `demo.db` (see `DEMO_ADDR`, `DATABASE_URL`, `REDIS_URL`,
//! `DEMO_TRUSTED_PROXIES`).

use std::net::SocketAddr;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = example_shared::Settings::from_env()?;
    let auth = example_shared::build_auth(&settings).await?;
    // Stores without native expiry (SQLite, PostgreSQL) are swept every
    // 10 minutes.
    let sessions = auth.authenticator().sessions().clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            every.tick().await;
            if let Err(error) = sessions.delete_expired().await {
                tracing::warn!(%error, "sweeping expired sessions failed");
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %example_shared::redact_url(&settings.database_url), "demo listening");
    // Printed for people and for the integration tests, which start the
    // binary on port 0 and read the address from here.
    eprintln!("auth toolkit demo (axum) listening on http://{addr}/");
    axum::serve(
        listener,
        example_axum::app(auth).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
