//! Settings of the session life cycle: expiry, touching, locks and policies.
//!
//! Cookie settings live in the `sessionkit` facade, next to the HTTP code that
//! uses them; this module holds what the session handle itself needs.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::Error;
use crate::owner::{OwnerCap, WhenFull};
use crate::record::Touch;

/// How locks behave: TTL, renewal, and the bounded wait to acquire one.
///
/// The defaults: a lock lives 30 s unless renewed, it is renewed every 10 s
/// while held (so a long request does not lose it silently), and a request
/// waits for it 5 s in all, pausing between attempts with a backoff that
/// grows with jitter from 2 ms to 50 ms instead of polling at a fixed pace.
///
/// Requests of one process (one [`SessionFactory`](crate::SessionFactory))
/// that want the same session's lock don't poll at all: they wait in a local
/// FIFO line, and a holder with someone behind it hands the store lock on
/// with its commit, unreleased, together with the session as written (one
/// store step instead of release + lock). The backoff only paces waits for
/// holders in other processes. `wait` bounds the whole wait, line included.
///
/// A setting given as "a number of retries with a fixed pause" is
/// [`LockConfig::wait`] = retries × pause, with the pause as
/// [`LockConfig::max_backoff`]. (`docs/coming-from-php.md` in the
/// repository maps other session libraries' lock options onto these.)
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::LockConfig;
///
/// let lock = LockConfig::default();
/// assert_eq!(lock.ttl, Duration::from_secs(30));
/// assert_eq!(lock.wait, Duration::from_secs(5));
/// assert!(lock.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockConfig {
    /// How long a lock lives without renewal. Default 30 s: a holder that dies
    /// blocks its session for at most this long.
    pub ttl: Duration,
    /// How often a held lock is renewed. Default `ttl / 3`, so two renewals
    /// can fail before the lock lapses.
    pub renew_every: Duration,
    /// How long [`Session::lock`](crate::Session::lock) waits in all before a
    /// [`LockTimeout`](crate::ErrorKind::LockTimeout). Default 5 s.
    pub wait: Duration,
    /// The first pause between attempts. Default 2 ms; it doubles each time.
    pub initial_backoff: Duration,
    /// The longest pause between attempts. Default 50 ms.
    pub max_backoff: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            wait: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(50),
        }
    }
}

impl LockConfig {
    /// Sets the TTL and renews at a third of it.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.renew_every = ttl / 3;
        self
    }

    /// Sets the total wait.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the first and the longest pause between attempts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_core::LockConfig;
    ///
    /// // A 60 s lock, and up to 100 attempts 50 ms apart.
    /// let lock = LockConfig::default()
    ///     .with_ttl(Duration::from_secs(60))
    ///     .with_wait(100 * Duration::from_micros(50_000))
    ///     .with_backoff(Duration::from_millis(2), Duration::from_micros(50_000));
    /// assert!(lock.validate().is_ok());
    /// ```
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Checks the settings; errors name the setting at fault.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ttl < Duration::from_millis(100) {
            return Err(Error::invalid_config("lock.ttl", "must be at least 100 ms"));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.ttl {
            return Err(Error::invalid_config(
                "lock.renew_every",
                "must be greater than zero and shorter than lock.ttl",
            ));
        }
        if self.initial_backoff.is_zero() || self.initial_backoff > self.max_backoff {
            return Err(Error::invalid_config(
                "lock.initial_backoff",
                "must be greater than zero and at most lock.max_backoff",
            ));
        }
        Ok(())
    }
}

/// When a session is locked without being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LockPolicy {
    /// Only [`Session::lock`](crate::Session::lock),
    /// [`Session::put`](crate::Session::put) and
    /// [`Session::transaction`](crate::Session::transaction) lock. Default.
    #[default]
    OnDemand,
    /// The first access to the session locks it for the rest of the request,
    /// as file-based session handlers traditionally do (the request holds
    /// the session file's lock). Requests of one session then run one after
    /// another; simple and safe, but slow for pages that fire many requests
    /// at once.
    WholeRequest,
}

/// Whether writes need a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WritePolicy {
    /// Writes outside a lock are buffered and flushed at the end of the
    /// request, key by key. Default.
    #[default]
    Buffered,
    /// Writes outside a lock fail with
    /// [`ModificationDenied`](crate::ErrorKind::ModificationDenied): every
    /// change goes through a locked transaction.
    LockedOnly,
}

/// What happens to changes made under a lock that the handler never
/// committed or rolled back, when the response is produced.
///
/// Buffered writes (made outside a lock) are not affected: they are flushed
/// whatever the response, like any write the handler made. A handler that
/// wants a failed request to leave no trace uses a lock, or returns before
/// writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReleasePolicy {
    /// Commit when the response is a success or a redirect (1xx, 2xx, 3xx);
    /// roll back on client and server errors (4xx, 5xx). Default.
    ///
    /// A handler that locks, changes the session and then returns early with
    /// an error status (`lock(); insert("qty", -5); return 400`) did not mean
    /// to keep its half-done change; with this rule it is not kept. Buffered
    /// writes made outside a lock are flushed whatever the status (a flash
    /// message on an error page, a counter of failed logins): only locked,
    /// uncommitted changes follow this rule. To make a transaction's scope
    /// explicit, use [`Session::transaction`](crate::Session::transaction).
    #[default]
    CommitOnSuccess,
    /// Commit unless the response is a server error (5xx): a 4xx keeps the
    /// locked changes (the rule before 0.2).
    CommitUnlessServerError,
    /// Always commit.
    Commit,
    /// Always roll back: only explicit commits persist.
    Rollback,
}

impl ReleasePolicy {
    /// Whether locks still held when a request with this `outcome` ends
    /// commit their changes.
    ///
    /// ```
    /// use sessionkit_core::{Outcome, ReleasePolicy};
    ///
    /// assert!(ReleasePolicy::default().commits(Outcome::Success));
    /// assert!(!ReleasePolicy::default().commits(Outcome::ClientError));
    /// assert!(ReleasePolicy::CommitUnlessServerError.commits(Outcome::ClientError));
    /// ```
    pub fn commits(self, outcome: Outcome) -> bool {
        match self {
            ReleasePolicy::CommitOnSuccess => outcome == Outcome::Success,
            ReleasePolicy::CommitUnlessServerError => outcome != Outcome::ServerError,
            ReleasePolicy::Commit => true,
            ReleasePolicy::Rollback => false,
        }
    }
}

/// How the request a session served ended, as its response's status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// 1xx, 2xx or 3xx.
    Success,
    /// 4xx.
    ClientError,
    /// 5xx (and anything outside 100..=599).
    ServerError,
}

impl Outcome {
    /// The outcome of a response with HTTP status `status`.
    ///
    /// ```
    /// use sessionkit_core::Outcome;
    ///
    /// assert_eq!(Outcome::from_status(303), Outcome::Success);
    /// assert_eq!(Outcome::from_status(404), Outcome::ClientError);
    /// assert_eq!(Outcome::from_status(503), Outcome::ServerError);
    /// ```
    pub fn from_status(status: u16) -> Self {
        match status {
            100..=399 => Outcome::Success,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }
}

/// The settings of the session life cycle.
///
/// Build it with [`SessionConfig::builder`], which validates every value.
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::SessionConfig;
///
/// let config = SessionConfig::builder()
///     .lifetime(Duration::from_secs(30 * 60))
///     .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
///     .build()
///     .unwrap();
/// assert_eq!(config.lifetime(), Duration::from_secs(1800));
///
/// let err = SessionConfig::builder().lifetime(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.setting(), Some("lifetime"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub(crate) lifetime: Duration,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) touch: Touch,
    pub(crate) lock: LockConfig,
    pub(crate) lock_policy: LockPolicy,
    pub(crate) write_policy: WritePolicy,
    pub(crate) release_policy: ReleasePolicy,
    pub(crate) keep_old_id_for: Option<Duration>,
    pub(crate) owner_cap: Option<OwnerCap>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            lifetime: Duration::from_secs(120 * 60),
            absolute_lifetime: None,
            touch: Touch::when_remaining_below(0.75).expect("valid share"),
            lock: LockConfig::default(),
            lock_policy: LockPolicy::default(),
            write_policy: WritePolicy::default(),
            release_policy: ReleasePolicy::default(),
            keep_old_id_for: None,
            owner_cap: None,
        }
    }
}

impl SessionConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> SessionConfigBuilder {
        SessionConfigBuilder {
            config: SessionConfig::default(),
            touch_share: 0.75,
            owner_cap_max: None,
        }
    }

    /// The idle lifetime: a session not used for this long expires.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The absolute lifetime, measured from creation, if any.
    pub fn absolute_lifetime(&self) -> Option<Duration> {
        self.absolute_lifetime
    }

    /// When loads refresh the idle expiry.
    pub fn touch(&self) -> Touch {
        self.touch
    }

    /// The lock settings.
    pub fn lock(&self) -> &LockConfig {
        &self.lock
    }

    /// The lock policy.
    pub fn lock_policy(&self) -> LockPolicy {
        self.lock_policy
    }

    /// The write policy.
    pub fn write_policy(&self) -> WritePolicy {
        self.write_policy
    }

    /// The release policy.
    pub fn release_policy(&self) -> ReleasePolicy {
        self.release_policy
    }

    /// A builder that starts from these settings: to change one of them,
    /// for example in a configuration read from the environment.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_core::SessionConfig;
    ///
    /// let base = SessionConfig::builder().lifetime(Duration::from_secs(600)).build()?;
    /// let changed = base.to_builder().absolute_lifetime(Some(Duration::from_secs(3600))).build()?;
    /// assert_eq!(changed.lifetime(), Duration::from_secs(600)); // kept
    /// assert_eq!(changed.absolute_lifetime(), Some(Duration::from_secs(3600)));
    /// # Ok::<(), sessionkit_core::Error>(())
    /// ```
    pub fn to_builder(&self) -> SessionConfigBuilder {
        SessionConfigBuilder {
            config: self.clone(),
            touch_share: f64::from(self.touch.permille()) / 1000.0,
            owner_cap_max: None,
        }
    }

    /// How long the old id still carries the session's data after a
    /// regenerate, if at all (see [`SessionConfigBuilder::keep_old_id_for`]).
    pub fn keep_old_id_for(&self) -> Option<Duration> {
        self.keep_old_id_for
    }

    /// The cap on sessions per owner, if any (see
    /// [`SessionConfigBuilder::max_sessions_per_owner`]).
    pub fn owner_cap(&self) -> Option<OwnerCap> {
        self.owner_cap
    }
}

/// Builds a [`SessionConfig`]; see there.
#[derive(Debug, Clone)]
pub struct SessionConfigBuilder {
    config: SessionConfig,
    touch_share: f64,
    /// As given, to refuse 0 at `build`.
    owner_cap_max: Option<u32>,
}

impl SessionConfigBuilder {
    /// The idle lifetime. Default 120 minutes.
    ///
    /// # Security
    ///
    /// Shorter is safer: OWASP suggests 2–5 minutes for high-value
    /// applications and 15–30 minutes for low-risk ones
    /// ([Session Expiration](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-expiration)).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.config.lifetime = lifetime;
        self
    }

    /// The absolute lifetime from creation, after which a session expires
    /// however active it is. Default none.
    ///
    /// # Security
    ///
    /// An absolute timeout bounds how long a stolen id stays useful
    /// ([OWASP: Absolute Timeout](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#absolute-timeout)).
    pub fn absolute_lifetime(mut self, absolute: Option<Duration>) -> Self {
        self.config.absolute_lifetime = absolute;
        self
    }

    /// A load refreshes the idle expiry when less than this share of the
    /// lifetime remains. Default 0.75: at most one store write per quarter
    /// lifetime for a session that is only read. `1.0` refreshes on every load.
    pub fn touch_threshold(mut self, share: f64) -> Self {
        self.touch_share = share;
        self
    }

    /// The lock settings. Default [`LockConfig::default`].
    pub fn lock(mut self, lock: LockConfig) -> Self {
        self.config.lock = lock;
        self
    }

    /// The lock policy. Default [`LockPolicy::OnDemand`].
    pub fn lock_policy(mut self, policy: LockPolicy) -> Self {
        self.config.lock_policy = policy;
        self
    }

    /// The write policy. Default [`WritePolicy::Buffered`].
    pub fn write_policy(mut self, policy: WritePolicy) -> Self {
        self.config.write_policy = policy;
        self
    }

    /// The release policy. Default [`ReleasePolicy::CommitOnSuccess`].
    pub fn release_policy(mut self, policy: ReleasePolicy) -> Self {
        self.config.release_policy = policy;
        self
    }

    /// Keeps the old id alive for `grace` after a
    /// [`regenerate`](crate::Session::regenerate), carrying a copy of the
    /// session's data as it was then. Default `None`: the old id dies with
    /// the regenerate, in the same atomic store operation.
    ///
    /// # Security
    ///
    /// This is weaker, and off by default for that reason. The point of a new
    /// id at login is that the old one stops working
    /// ([OWASP](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#renew-the-session-id-after-any-privilege-level-change)):
    /// for `grace`, whoever knows the old id (a fixed or stolen one) still
    /// reaches a copy of the session as it was at the regenerate — before
    /// the login, if the login writes after it. Use it only for what it is
    /// for: requests already in flight with the old cookie (a page's
    /// parallel asset or API requests during a login) that would otherwise
    /// find an empty session. Keep `grace` to seconds.
    ///
    /// The copy is a separate session: writes made through the old id
    /// during `grace` are not merged into the new one, and are gone with the
    /// copy. It carries no owner (see
    /// [`Session::set_owner`](crate::Session::set_owner)): it is in no
    /// owner's list, so a revocation could not end it. It costs two store round trips per regenerate (read, create);
    /// a failure to make it is logged and does not fail the regenerate. The
    /// copy ends at `grace` at the latest, whatever its lifetime: `grace` is
    /// both its idle and its absolute lifetime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_core::SessionConfig;
    ///
    /// let config = SessionConfig::builder()
    ///     .keep_old_id_for(Some(Duration::from_secs(10)))
    ///     .build()?;
    /// assert_eq!(config.keep_old_id_for(), Some(Duration::from_secs(10)));
    /// # Ok::<(), sessionkit_core::Error>(())
    /// ```
    pub fn keep_old_id_for(mut self, grace: Option<Duration>) -> Self {
        self.config.keep_old_id_for = grace;
        self
    }

    /// At most `max` sessions per owner at once, enforced when
    /// [`Session::set_owner`](crate::Session::set_owner) gives a session its
    /// owner (in the same store operation, so simultaneous logins cannot
    /// both slip under the cap); beyond it, `when_full` says whether the
    /// owner's least recently used other sessions end or the new one is
    /// refused. Default: no cap.
    ///
    /// The cap is checked at `set_owner` only: lowering it ends no session
    /// by itself. An owner over a lowered cap loses sessions at the next
    /// login ([`WhenFull::EndLeastRecent`](crate::owner::WhenFull::EndLeastRecent)),
    /// or has every `set_owner` refused until enough sessions end
    /// ([`WhenFull::Refuse`](crate::owner::WhenFull::Refuse)), also one on a
    /// session that already carries that owner (which keeps it).
    ///
    /// ```
    /// use sessionkit_core::SessionConfig;
    /// use sessionkit_core::owner::WhenFull;
    ///
    /// let config = SessionConfig::builder()
    ///     .max_sessions_per_owner(3, WhenFull::EndLeastRecent)
    ///     .build()?;
    /// assert_eq!(config.owner_cap().unwrap().max.get(), 3);
    /// assert!(SessionConfig::builder().max_sessions_per_owner(0, WhenFull::Refuse).build().is_err());
    /// # Ok::<(), sessionkit_core::Error>(())
    /// ```
    pub fn max_sessions_per_owner(mut self, max: u32, when_full: WhenFull) -> Self {
        self.owner_cap_max = Some(max);
        self.config.owner_cap = NonZeroU32::new(max).map(|max| OwnerCap { max, when_full });
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<SessionConfig, Error> {
        if self.owner_cap_max == Some(0) {
            return Err(Error::invalid_config(
                "max_sessions_per_owner",
                "must be at least 1",
            ));
        }
        let mut config = self.config;
        if config.lifetime < Duration::from_secs(1) {
            return Err(Error::invalid_config(
                "lifetime",
                "must be at least one second",
            ));
        }
        if let Some(abs) = config.absolute_lifetime
            && abs < Duration::from_secs(1)
        {
            return Err(Error::invalid_config(
                "absolute_lifetime",
                "must be at least one second",
            ));
        }
        config.touch = Touch::when_remaining_below(self.touch_share)
            .ok_or_else(|| Error::invalid_config("touch_threshold", "must be a share in (0, 1]"))?;
        if let Some(grace) = config.keep_old_id_for
            && grace < Duration::from_millis(1)
        {
            return Err(Error::invalid_config(
                "keep_old_id_for",
                "must be at least one millisecond (or None)",
            ));
        }
        config.lock.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = SessionConfig::builder().build().unwrap();
        assert_eq!(config, SessionConfig::default());
        assert_eq!(config.lifetime(), Duration::from_secs(7200));
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases = [
            (
                SessionConfig::builder().touch_threshold(0.0),
                "touch_threshold",
            ),
            (
                SessionConfig::builder().absolute_lifetime(Some(Duration::ZERO)),
                "absolute_lifetime",
            ),
            (
                SessionConfig::builder()
                    .lock(LockConfig::default().with_ttl(Duration::from_millis(1))),
                "lock.ttl",
            ),
        ];
        for (builder, setting) in cases {
            assert_eq!(builder.build().unwrap_err().setting(), Some(setting));
        }
    }
}
