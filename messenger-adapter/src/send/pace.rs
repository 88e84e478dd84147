//! Outbound pacing per Page under the Send API limits: 300 calls/s for text and
//! most messages, 10 calls/s for audio and video (REFERENCE §f). Uses `governor`'s
//! GCRA limiter, so bursts are smoothed instead of rejected.

use std::{collections::HashMap, num::NonZeroU32};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The limiters of every configured Page.
pub struct Pacer {
    pages: HashMap<String, PageLimits>,
}

struct PageLimits {
    all: Option<DefaultDirectRateLimiter>,
    media: Option<DefaultDirectRateLimiter>,
}

fn limiter(per_second: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::direct(Quota::per_second(n)))
}

impl Pacer {
    /// Limiters for `pages`: `per_second` calls for everything, `media_per_second` for
    /// audio and video on top. 0 disables a limit.
    pub fn new<'a>(
        pages: impl IntoIterator<Item = &'a str>,
        per_second: u32,
        media_per_second: u32,
    ) -> Self {
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
        Self { pages }
    }

    /// Waits until `page` may make one more call (of audio or video when `media`).
    pub async fn ready(&self, page: &str, media: bool) {
        let Some(limits) = self.pages.get(page) else {
            return;
        };
        if media {
            if let Some(limiter) = &limits.media {
                limiter.until_ready().await;
            }
        }
        if let Some(limiter) = &limits.all {
            limiter.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn media_calls_are_held_to_their_rate() {
        let pacer = Pacer::new(["p"], 1000, 10);
        let start = Instant::now();
        for _ in 0..13 {
            pacer.ready("p", true).await;
        }
        // 10/s with a burst of 10: the 11th to 13th calls wait ~100 ms each.
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }
}
