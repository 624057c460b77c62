//! `cargo run -p example-actix`: the demo on http://127.0.0.1:3000 with a
//! SQLite file `demo.db` (see `DEMO_ADDR`, `DATABASE_URL`, `REDIS_URL`,
//! `DEMO_TRUSTED_PROXIES`).

use actix_web::HttpServer;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
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
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(std::time::Duration::from_secs(600));
        loop {
            every.tick().await;
            if let Err(error) = sessions.delete_expired().await {
                tracing::warn!(%error, "sweeping expired sessions failed");
            }
        }
    });
    let server = HttpServer::new(move || example_actix::app(auth.clone())).bind(settings.addr)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or("the server bound no address")?;
    tracing::info!(%addr, database = %example_shared::redact_url(&settings.database_url), "demo listening");
    // Printed for people and for the integration tests, which start the
    // binary on port 0 and read the address from here.
    eprintln!("auth toolkit demo (actix) listening on http://{addr}/");
    // actix stops gracefully on Ctrl-C / SIGTERM.
    server.run().await?;
    Ok(())
}
