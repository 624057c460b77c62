//! `cargo run -p example-rocket`: the demo on http://127.0.0.1:3000 with a
//! SQLite file `demo.db` (see `DEMO_ADDR`, `DATABASE_URL`, `REDIS_URL`,
//! `DEMO_TRUSTED_PROXIES`; `ROCKET_LOG_LEVEL` for Rocket's own log, above
//! `critical` only with `DEMO_INSECURE_ROCKET_LOG=true`: it logs link tokens).

use std::net::SocketAddr;

use rocket::fairing::AdHoc;

#[rocket::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (settings, auth) = example_shared::start().await?;
    // The address is `DEMO_ADDR`'s, whatever Rocket.toml or ROCKET_* say.
    let config = rocket::Config {
        address: settings.addr.ip(),
        port: settings.addr.port(),
        ..example_rocket::config()
    };
    let announce = AdHoc::on_liftoff("announce the address", move |rocket| {
        Box::pin(async move {
            // Rocket has bound by now: with port 0 this is the real port.
            let addr = SocketAddr::new(rocket.config().address, rocket.config().port);
            example_shared::announce("rocket", addr, &settings);
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
