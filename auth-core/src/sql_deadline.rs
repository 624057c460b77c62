//! A deadline on every statement the SQL stores send to PostgreSQL.
//!
//! sqlx has no timeout of its own for a query in flight: over a network
//! that stops delivering in the middle of a query (a stalled link, a
//! server that froze), the future waits until the kernel gives up on the
//! connection, many minutes later. The request loads, the bearer check and
//! the logins carry deadlines of their own; this one covers every other
//! store operation (logout, password change, MFA, token refresh and
//! revocation, recovery, link tokens, passkeys, ...): a statement that has
//! not finished within [`STATEMENT_DEADLINE`] fails with an I/O
//! `TimedOut` error, which the flows answer 503 with `Retry-After` (see
//! [`AuthError::store_unavailable`](crate::flow::AuthError::store_unavailable)).
//!
//! A SQLite file needs none: it is local, and a wait for its lock ends with
//! the busy timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::deadline::{Within, within};
use crate::sqlite_inline::Inline;

/// How long one statement (or `BEGIN` / `COMMIT`) may take on PostgreSQL.
pub(crate) const STATEMENT_DEADLINE: Duration = Duration::from_secs(5);

/// The deadline a database's statements get: `None` where the driver or
/// the database bounds them already.
pub(crate) trait StatementDeadline {
    /// The deadline, if any.
    const DEADLINE: Option<Duration>;
}

#[cfg(feature = "sqlite")]
impl StatementDeadline for sqlx::Sqlite {
    const DEADLINE: Option<Duration> = None;
}

#[cfg(feature = "postgres")]
impl StatementDeadline for sqlx::Postgres {
    const DEADLINE: Option<Duration> = Some(STATEMENT_DEADLINE);
}

pin_project_lite::pin_project! {
    /// The future of [`Deadline::bounded`].
    pub(crate) struct Bounded<'a, F> {
        // The timer is made at the first poll that waits (PostgreSQL only).
        #[pin]
        statement: Within<F>,
        // The store's inline reads, told when the statement is over (an
        // awaited statement is dropped as soon as it is ready).
        inline: &'a Inline,
    }

    impl<F> PinnedDrop for Bounded<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            this.inline.statement_finished();
        }
    }
}

impl<T, F> Future for Bounded<'_, F>
where
    F: Future<Output = Result<T, sqlx::Error>>,
{
    type Output = Result<T, sqlx::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .statement
            .poll(cx)
            .map(|done| done.unwrap_or_else(|_| Err(timed_out())))
    }
}

/// The error of a statement past its deadline: an I/O `TimedOut`, which
/// the flows treat as a store that is unavailable (never as a bug).
fn timed_out() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the database did not answer within {} s",
            STATEMENT_DEADLINE.as_secs()
        ),
    ))
}

/// `.bounded::<DB>(&store.inline)` on a sqlx future: the statement, or a
/// `TimedOut` error once `DB`'s [`StatementDeadline`] has passed. When it
/// is over, the store's inline reads are told (a SQLite file's request
/// steps then probe it afresh: `sqlite_inline::RequestProbe`).
pub(crate) trait Deadline: Future + Sized {
    /// See the trait.
    fn bounded<DB: StatementDeadline>(self, inline: &Inline) -> Bounded<'_, Self> {
        Bounded {
            statement: within(DB::DEADLINE, self),
            inline,
        }
    }
}

impl<F: Future> Deadline for F {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement that never answers (a stalled network) fails with the
    /// unavailable kind of error once the deadline has passed.
    #[cfg(feature = "postgres")]
    #[tokio::test(start_paused = true)]
    async fn a_postgres_statement_that_never_answers_times_out() {
        let started = tokio::time::Instant::now();
        let stalled = std::future::pending::<Result<(), sqlx::Error>>();
        // Watched by a later timer, so a missing deadline fails the test
        // instead of hanging it.
        let bounded = stalled.bounded::<sqlx::Postgres>(&Inline::NONE);
        let error = tokio::time::timeout(STATEMENT_DEADLINE * 2, bounded)
            .await
            .expect("the deadline must end the wait")
            .expect_err("a stalled statement must fail");
        assert_eq!(started.elapsed(), STATEMENT_DEADLINE);
        assert!(
            matches!(&error, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut),
            "{error:?}"
        );
        let auth_error = crate::flow::AuthError::internal(error);
        assert_eq!(auth_error.status(), 503, "{auth_error:?}");
    }

    /// A statement that answers keeps its answer, also on PostgreSQL.
    #[cfg(feature = "postgres")]
    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_kept() {
        let answered = async { Ok::<_, sqlx::Error>(7) };
        assert_eq!(
            answered.bounded::<sqlx::Postgres>(&Inline::NONE).await.ok(),
            Some(7)
        );
    }

    /// SQLite has no deadline here (its busy timeout bounds a lock wait).
    #[cfg(feature = "sqlite")]
    #[tokio::test(start_paused = true)]
    async fn sqlite_statements_get_no_deadline() {
        let stalled = std::future::pending::<Result<(), sqlx::Error>>()
            .bounded::<sqlx::Sqlite>(&Inline::NONE);
        let waited = tokio::time::timeout(STATEMENT_DEADLINE * 10, stalled).await;
        assert!(waited.is_err(), "still waiting: {waited:?}");
    }
}
