//! A Rocket app with its own `users` table, using the toolkit for register,
//! log in, log out and one protected route. `cargo run -p minimal-rocket`,
//! then:
//!
//! ```sh
//! curl -i localhost:3000/register -H 'content-type: application/json' \
//!      -d '{"email":"Alice@example.com","password":"correct horse battery staple"}'
//! curl -i -c jar localhost:3000/login -H 'content-type: application/json' \
//!      -d '{"email":"alice@example.com","password":"correct horse battery staple"}'
//! curl -b jar localhost:3000/me
//! ```
use std::net::{SocketAddr, ToSocketAddrs};

use auth_rocket::auth_core::web::AllowedHosts;
use auth_rocket::{Auth, AuthFairing, AuthRejection, AuthSession, AuthUser, CurrentUser, Json};
use auth_rocket::{LoginName, NewUser, Password, RequireLogin, UserStore, UserStoreError as Error};
use rocket::{Config, fairing::AdHoc, get, http::Status, post, routes};
use sqlx::{SqlitePool, query, query_as};

/// The app's own user type: a row of its own table.
struct User {
    id: i64,
    email: String,
    password_hash: String,
}

type Row = (i64, String, String); // id, email, password_hash

fn user((id, email, password_hash): Row) -> User {
    User { id, email, password_hash }
}

impl AuthUser for User {
    type Id = i64;
    fn id(&self) -> i64 {
        self.id
    }
    fn login(&self) -> &str {
        &self.email
    }
    fn password_hash(&self) -> &str {
        &self.password_hash
    }
}

/// The app's own table. Emails are stored in normal form (`LoginName::
/// normalized`: NFKC, lower case), so `Alice@Example.com` finds them.
struct Users(SqlitePool);

impl UserStore for Users {
    type User = User;
    async fn find_by_login(&self, login: &LoginName) -> Result<Option<User>, Error> {
        let find =
            query_as::<_, Row>("SELECT * FROM users WHERE email = ?").bind(login.normalized());
        Ok(find.fetch_optional(&self.0).await.map_err(Error::backend)?.map(user))
    }
    async fn find_by_id(&self, id: &i64) -> Result<Option<User>, Error> {
        let find = query_as::<_, Row>("SELECT * FROM users WHERE id = ?").bind(id);
        Ok(find.fetch_optional(&self.0).await.map_err(Error::backend)?.map(user))
    }
    async fn set_password_hash(&self, id: &i64, old: &str, new: &str) -> Result<bool, Error> {
        let set = query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?");
        let done = set.bind(new).bind(id).bind(old).execute(&self.0).await;
        Ok(done.map_err(Error::backend)?.rows_affected() == 1)
    }
    async fn create(&self, new: NewUser) -> Result<User, Error> {
        let insert = query_as::<_, Row>(
            "INSERT INTO users (email, password_hash) VALUES (?, ?) RETURNING *",
        );
        let insert = insert.bind(new.login.normalized()).bind(new.password_hash.as_str());
        match insert.fetch_one(&self.0).await {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::LoginTaken),
            row => row.map(user).map_err(Error::backend),
        }
    }
}

/// Read with `auth_rocket::Json`, not Rocket's: Rocket logs a refused
/// body guard's error, and its own `Json`'s error holds the raw body.
#[derive(serde::Deserialize)]
struct Form {
    email: String,
    password: Password,
}

#[post("/register", data = "<form>")]
async fn register(auth: AuthSession, form: Json<Form>) -> Result<Status, AuthRejection> {
    auth.register(&form.email, &form.password).await?;
    Ok(Status::Created)
}

#[post("/login", data = "<form>")]
async fn login(auth: AuthSession, form: Json<Form>) -> Result<Status, AuthRejection> {
    auth.login(&form.email, &form.password).await?;
    Ok(Status::NoContent)
}

#[post("/logout")]
async fn logout(auth: AuthSession) -> Result<Status, AuthRejection> {
    auth.logout().await?;
    Ok(Status::NoContent)
}

/// The handler gets the app's own `User`, read once with the session.
#[get("/me")]
fn me(_login: RequireLogin, user: CurrentUser<User>) -> String {
    format!("Hello, {} (user {})", user.email, user.id)
}

#[rocket::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name, default: &str| std::env::var(name).unwrap_or(default.to_owned());
    // app.db holds password hashes: in production, create it readable by the app only.
    let db = SqlitePool::connect(&env("DATABASE_URL", "sqlite://app.db?mode=rwc")).await?;
    query("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL)").execute(&db).await?;
    // The Host names the app answers to (others get 400: a defence against
    // DNS rebinding); yours in production.
    let hosts = AllowedHosts::parse(&env("APP_HOSTS", "localhost,127.0.0.1,[::1]"))?;
    // Rocket's own config (Rocket.toml, ROCKET_*), with the address of `APP_ADDR`.
    let addr = env("APP_ADDR", "127.0.0.1:3000").to_socket_addrs()?.next().ok_or("no APP_ADDR")?;
    let config = Config::figment().merge(("address", addr.ip())).merge(("port", addr.port()));
    rocket::custom(config)
        .mount("/", routes![register, login, logout, me])
        .attach(AuthFairing::new(Auth::builder(Users(db)).allowed_hosts(hosts).build()?))
        // Rocket has bound by liftoff: with port 0 its config holds the real port.
        .attach(AdHoc::on_liftoff("announce", |rocket| {
            let bound = SocketAddr::new(rocket.config().address, rocket.config().port);
            Box::pin(async move { eprintln!("listening on http://{bound}/") })
        }))
        .launch()
        .await?;
    Ok(())
}
