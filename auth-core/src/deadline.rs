//! Deadlines on store work whose timer is made only when the work has to
//! wait.
//!
//! Most of a request's store reads answer at their first poll (a memory
//! store, a SQLite file's inline reads, a Redis record in the client-side
//! cache). `tokio::time::timeout` reads the clock and builds a timer entry
//! for each of them all the same; [`within`] starts the clock at the first
//! poll that finds the work not ready, so a read that answers at once pays
//! nothing for its deadline, and one that waits gets the whole of it from
//! there (the first poll's own work is synchronous and short).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The error of work that did not finish within its deadline. The flows
/// answer it as a store that is unavailable (503 with `Retry-After`; see
/// [`AuthError::store_unavailable`](crate::flow::AuthError::store_unavailable)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadlinePassed(pub(crate) Duration);

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {} ms", self.0.as_millis())
    }
}

impl std::error::Error for DeadlinePassed {}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    #[derive(Debug)]
    pub(crate) struct Within<F> {
        #[pin]
        work: F,
        // `None`: no deadline.
        after: Option<Duration>,
        // Made at the first poll that finds `work` pending; boxed, so the
        // future stays small for the reads that never need it.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

/// `work`, or [`DeadlinePassed`] once it has waited `after` (or forever,
/// with `None`) since its first poll that was not ready.
pub(crate) fn within<F: Future>(after: Option<Duration>, work: F) -> Within<F> {
    Within {
        work,
        after,
        timer: None,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.work.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        let Some(after) = *this.after else {
            return Poll::Pending;
        };
        this.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)))
            .as_mut()
            .poll(cx)
            .map(|()| Err(DeadlinePassed(after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(5);

    /// Work that never answers fails once the deadline has passed, counted
    /// from its first poll, and the error is a store outage (503).
    #[tokio::test(start_paused = true)]
    async fn work_that_never_answers_fails_at_the_deadline() {
        let started = tokio::time::Instant::now();
        // Watched by a later timer, so a missing deadline fails the test
        // instead of hanging it.
        let error =
            tokio::time::timeout(AFTER * 2, within(Some(AFTER), std::future::pending::<()>()))
                .await
                .expect("the deadline must end the wait")
                .expect_err("pending work must fail");
        assert_eq!(started.elapsed(), AFTER);
        assert_eq!(error, DeadlinePassed(AFTER));
        let auth_error = crate::flow::AuthError::internal(error);
        assert_eq!(auth_error.status(), 503, "{auth_error:?}");
    }

    /// Work that waits but answers in time keeps its answer.
    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_kept() {
        let late = async {
            tokio::time::sleep(AFTER - Duration::from_millis(1)).await;
            7
        };
        assert_eq!(within(Some(AFTER), late).await, Ok(7));
    }

    /// Work that answers at its first poll never makes a timer; work that
    /// waits does, and without a deadline it never does.
    #[tokio::test]
    async fn the_timer_is_made_only_for_work_that_waits() {
        let mut cx = Context::from_waker(std::task::Waker::noop());

        let mut ready = std::pin::pin!(within(Some(AFTER), async { 1 }));
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
        assert!(ready.timer.is_none());

        let mut waiting = std::pin::pin!(within(Some(AFTER), std::future::pending::<()>()));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(waiting.timer.is_some());

        let mut unbounded = std::pin::pin!(within(None, std::future::pending::<()>()));
        assert!(unbounded.as_mut().poll(&mut cx).is_pending());
        assert!(unbounded.timer.is_none());
    }
}
