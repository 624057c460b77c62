//! `cargo run -p example-actix`: the demo on http://127.0.0.1:3000 with a
//! SQLite file `demo.db` (see `DEMO_ADDR`, `DATABASE_URL`, `REDIS_URL`,
//! `DEMO_TRUSTED_PROXIES`).

use actix_web::HttpServer;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (settings, auth) = example_shared::start().await?;
    let server = HttpServer::new(move || example_actix::app(auth.clone())).bind(settings.addr)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or("the server bound no address")?;
    example_shared::announce("actix", addr, &settings);
    // actix stops gracefully on Ctrl-C / SIGTERM.
    server.run().await?;
    Ok(())
}
