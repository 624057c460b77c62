//! `cargo run -p example-rocket`: the demo on http://127.0.0.1:3000 with a
//! SQLite file `demo.db` (see `DEMO_ADDR`, `DATABASE_URL`, `REDIS_URL`,
//! `DEMO_TRUSTED_PROXIES`; `ROCKET_LOG_LEVEL` for Rocket's own log).

use std::net::SocketAddr;

use rocket::fairing::AdHoc;
use tracing_subscriber::EnvFilter;

#[rocket::main]
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
    // The address is `DEMO_ADDR`'s, whatever Rocket.toml or ROCKET_* say.
    let config = rocket::Config {
        address: settings.addr.ip(),
        port: settings.addr.port(),
        ..example_rocket::config()
    };
    let database = redact_url(&settings.database_url);
    let announce = AdHoc::on_liftoff("announce the address", move |rocket| {
        Box::pin(async move {
            // Rocket has bound by now: with port 0 this is the real port.
            let addr = SocketAddr::new(rocket.config().address, rocket.config().port);
            tracing::info!(%addr, %database, "demo listening");
            // Printed for people and for the integration tests, which start
            // the binary on port 0 and read the address from here.
            eprintln!("auth toolkit demo (rocket) listening on http://{addr}/");
        })
    });
    let launched = example_rocket::app(auth)
        .configure(config)
        .attach(announce)
        .launch()
        .await;
    if let Err(error) = launched {
        // A rocket::Error panics when dropped unread; pretty_print reads it.
        return Err(error.pretty_print().into());
    }
    Ok(())
}

/// A database URL without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://[REDACTED]@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
