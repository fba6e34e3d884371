//! Which push failures deserve another attempt, and how long to wait before it. A dropped or
//! reset connection, a timeout, a 5xx, a 429 or a 408 are passing trouble; anything else a
//! registry answers is its final word, and retrying would only hide it.

use crate::Error;
use std::time::Duration;
use ureq::http::{Response, StatusCode};
use ureq::Body;

/// The longest wait a registry's `Retry-After` can impose.
const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(60);
/// The longest wait between two attempts when the registry did not name one.
const BACKOFF_LIMIT: Duration = Duration::from_secs(16);

/// Why one attempt failed, and whether another may succeed. (Boxed: failures are rare and
/// results travel through every step of an upload.)
pub(crate) enum Failure {
    /// Worth another attempt, after `retry_after` if the registry asked for it.
    Transient {
        error: Box<Error>,
        retry_after: Option<Duration>,
    },
    /// Trying again would fail the same way.
    Fatal(Box<Error>),
}

impl Failure {
    pub(crate) fn transient(error: Error, retry_after: Option<Duration>) -> Failure {
        Failure::Transient {
            error: Box::new(error),
            retry_after,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Fatal(Box::new(e))
    }
}

/// Runs `attempt` until it succeeds, fails fatally, or has failed `attempts` times; between
/// two attempts it tells `on_retry` (failures so far, the wait, the error) and sleeps. When
/// all attempts failed, `exhausted` turns the last error and their number into the answer.
pub(crate) fn retrying<T>(
    attempts: u32,
    backoff: Duration,
    mut attempt: impl FnMut() -> Result<T, Failure>,
    mut on_retry: impl FnMut(u32, Duration, &Error),
    exhausted: impl FnOnce(Error, u32) -> Error,
) -> Result<T, Error> {
    let attempts = attempts.max(1);
    let mut failures = 0;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(e)) => return Err(*e),
            Err(Failure::Transient { error, retry_after }) => {
                failures += 1;
                if failures >= attempts {
                    return Err(exhausted(*error, failures));
                }
                let wait = delay(backoff, failures, retry_after);
                on_retry(failures, wait, &error);
                std::thread::sleep(wait);
            }
        }
    }
}

/// Whether a request that got no answer may get one if sent again: the connection broke,
/// timed out or carried garbage. Unknown hosts and TLS failures stay as they are.
pub(crate) fn transport_is_transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::Protocol(_)
            | ureq::Error::ConnectionFailed
    )
}

/// Whether an error status is the registry's passing trouble rather than its verdict.
pub(crate) fn status_is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The wait a response's `Retry-After` asks for, if it gives one in seconds.
pub(crate) fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let value = resp.headers().get("retry-after")?.to_str().ok()?;
    parse_retry_after(value)
}

/// `Retry-After: 3` → 3 s, at most [`RETRY_AFTER_LIMIT`]. The HTTP-date form is left to the
/// backoff: clocks of client and registry need not agree.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_LIMIT))
}

/// The wait after the `failures`-th failure: what the registry asked for, else `first`
/// doubled per failure, at most [`BACKOFF_LIMIT`].
fn delay(first: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| {
        let doublings = failures.saturating_sub(1).min(16);
        first.saturating_mul(1 << doublings).min(BACKOFF_LIMIT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(n: u32) -> Failure {
        Failure::transient(
            Error::Timeout {
                reference: format!("r{n}"),
                timeout: Duration::from_secs(1),
            },
            None,
        )
    }

    #[test]
    fn backoff_doubles_up_to_a_limit_unless_the_registry_says() {
        let ms = Duration::from_millis;
        let first = ms(500);
        assert_eq!(delay(first, 1, None), ms(500));
        assert_eq!(delay(first, 2, None), ms(1000));
        assert_eq!(delay(first, 4, None), ms(4000));
        assert_eq!(delay(first, 7, None), BACKOFF_LIMIT);
        assert_eq!(delay(first, 1000, None), BACKOFF_LIMIT);
        assert_eq!(delay(first, 3, Some(ms(100))), ms(100));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("86400"), Some(RETRY_AFTER_LIMIT));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn retries_transient_failures_until_success_or_the_limit() {
        let mut calls = 0;
        let mut retries = Vec::new();
        let got = retrying(
            5,
            Duration::ZERO,
            || {
                calls += 1;
                if calls < 3 {
                    Err(transient(calls))
                } else {
                    Ok(calls)
                }
            },
            |n, _, e| retries.push((n, e.to_string())),
            |_, _| panic!("should not give up"),
        );
        assert!(matches!(got, Ok(3)));
        assert_eq!(retries.len(), 2);
        assert_eq!(retries[1].0, 2);

        let mut calls = 0;
        let got: Result<(), _> = retrying(
            3,
            Duration::ZERO,
            || {
                calls += 1;
                Err(transient(calls))
            },
            |_, _, _| {},
            |last, attempts| Error::InvalidReference {
                input: last.to_string(),
                reason: attempts.to_string(),
            },
        );
        match got {
            Err(Error::InvalidReference { input, reason }) => {
                assert_eq!(reason, "3");
                assert!(input.starts_with("r3:"), "{input}");
            }
            _ => panic!("expected to give up after 3 attempts"),
        }
    }

    #[test]
    fn fatal_failures_are_not_retried() {
        let mut calls = 0;
        let got: Result<(), _> = retrying(
            5,
            Duration::ZERO,
            || {
                calls += 1;
                Err(Error::InvalidReference {
                    input: "x".into(),
                    reason: "no".into(),
                }
                .into())
            },
            |_, _, _| panic!("no retry expected"),
            |_, _| panic!("a fatal failure is not exhaustion"),
        );
        assert!(matches!(got, Err(Error::InvalidReference { .. })));
        assert_eq!(calls, 1);
    }

    #[test]
    fn statuses_that_pass() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(status_is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 413] {
            assert!(
                !status_is_transient(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }
}
