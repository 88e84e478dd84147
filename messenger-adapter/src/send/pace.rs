//! Outbound pacing per Page under the Send API limits: 300 calls/s for text and
//! most messages, 10 calls/s for audio and video (REFERENCE §f). Uses `governor`'s
//! GCRA limiter, so bursts are smoothed instead of rejected.

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
    Quota, RateLimiter,
};

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limiters of every configured Page, on clock `C` (the system's; a fake one in
/// the tests).
pub struct Pacer<C: Clock = DefaultClock> {
    pages: HashMap<String, PageLimits<C>>,
    clock: C,
}

struct PageLimits<C: Clock> {
    all: Option<Limiter<C>>,
    media: Option<Limiter<C>>,
}

impl Pacer {
    /// Limiters for `pages`: `per_second` calls for everything, `media_per_second` for
    /// audio and video on top. 0 disables a limit.
    pub fn new<'a>(
        pages: impl IntoIterator<Item = &'a str>,
        per_second: u32,
        media_per_second: u32,
    ) -> Self {
        Self::with_clock(pages, per_second, media_per_second, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Pacer<C> {
    fn with_clock<'a>(
        pages: impl IntoIterator<Item = &'a str>,
        per_second: u32,
        media_per_second: u32,
        clock: C,
    ) -> Self {
        let limiter = |per_second: u32| {
            NonZeroU32::new(per_second)
                .map(|n| RateLimiter::direct_with_clock(Quota::per_second(n), clock.clone()))
        };
        let pages = pages
            .into_iter()
            .map(|id| {
                let limits = PageLimits {
                    all: limiter(per_second),
                    media: limiter(media_per_second),
                };
                (id.to_owned(), limits)
            })
            .collect();
        Self { pages, clock }
    }

    /// The limits one more call of `page` (of audio or video when `media`) must pass,
    /// in order.
    fn limits(&self, page: &str, media: bool) -> impl Iterator<Item = &Limiter<C>> {
        let limits = self.pages.get(page);
        let media = limits.and_then(|l| l.media.as_ref()).filter(|_| media);
        media.into_iter().chain(limits.and_then(|l| l.all.as_ref()))
    }

    /// Takes one call from `limiter`, or says how long until it has one to give.
    fn take(&self, limiter: &Limiter<C>) -> Result<(), Duration> {
        limiter
            .check()
            .map_err(|not_yet| not_yet.wait_time_from(self.clock.now()))
    }

    /// Waits until `page` may make one more call (of audio or video when `media`).
    pub async fn ready(&self, page: &str, media: bool) {
        for limiter in self.limits(page, media) {
            while let Err(wait) = self.take(limiter) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    /// How many calls in a row `limiter` lets through now, on a clock that stands still.
    fn burst<C: Clock + Clone>(pacer: &Pacer<C>, limiter: &Limiter<C>) -> usize {
        (0..100).take_while(|_| pacer.take(limiter).is_ok()).count()
    }

    #[test]
    fn media_calls_pass_the_media_limit_then_the_page_limit() {
        let clock = FakeRelativeClock::default();
        let pacer = Pacer::with_clock(["p"], 30, 10, clock);
        let limits: Vec<_> = pacer.limits("p", true).collect();
        assert_eq!(limits.len(), 2);
        assert_eq!(burst(&pacer, limits[0]), 10, "the media limit comes first");
        assert_eq!(burst(&pacer, limits[1]), 30);
        assert_eq!(pacer.limits("p", false).count(), 1);
        assert_eq!(pacer.limits("another page", true).count(), 0);
    }

    #[test]
    fn past_its_burst_a_media_call_waits_a_tenth_of_a_second_at_ten_a_second() {
        let clock = FakeRelativeClock::default();
        let pacer = Pacer::with_clock(["p"], 1000, 10, clock.clone());
        let media = pacer.limits("p", true).next().unwrap();
        assert_eq!(burst(&pacer, media), 10);
        assert_eq!(pacer.take(media), Err(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(60));
        assert_eq!(pacer.take(media), Err(Duration::from_millis(40)));
        clock.advance(Duration::from_millis(40));
        assert_eq!(pacer.take(media), Ok(()));
        assert!(pacer.take(media).is_err());
    }

    #[test]
    fn a_limit_of_zero_is_no_limit() {
        let pacer = Pacer::with_clock(["p"], 0, 0, FakeRelativeClock::default());
        assert_eq!(pacer.limits("p", true).count(), 0);
    }
}
