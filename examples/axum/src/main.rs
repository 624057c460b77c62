//! `cargo run -p example-axum`: the demo on http://127.0.0.1:3000 with a
//! SQLite file `demo.db` (see `DEMO_ADDR`, `DATABASE_URL`, `REDIS_URL`,
//! `DEMO_TRUSTED_PROXIES`).

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (settings, auth) = example_shared::start().await?;
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    example_shared::announce("axum", listener.local_addr()?, &settings);
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
