//! Every accepted login's opening and closing, in one order, so a test can
//! say "never two connections of one bot at once".
//!
//! Why it exists: two hosts running one WhatsApp session at the same time
//! break its Signal state; the fleet's ownership (issue 15) must prevent it
//! through every failure. The peer sees every connection of every host: it
//! records when it accepted a login (`<success>` sent) and when that
//! connection ended (its task finished: the client closed it, or the
//! process died), under the one log lock, so the events are totally
//! ordered. A login counts as open from its `<success>` to the peer's end of
//! the connection, a little longer than the client holds it: the check errs
//! on the side of seeing an overlap.

use super::{ClientKind, ConnectionRecord, PeerLog};

/// An accepted login of `phone` opening or closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSpan {
    pub conn: u64,
    pub phone: String,
    /// true: `<success>` sent; false: the connection ended.
    pub open: bool,
}

impl LoginSpan {
    fn of(rec: &ConnectionRecord, open: bool) -> Option<LoginSpan> {
        match &rec.client {
            ClientKind::Login { phone, .. } => Some(LoginSpan {
                conn: rec.id,
                phone: phone.clone(),
                open,
            }),
            ClientKind::Registration => None,
        }
    }

    pub(super) fn opened(rec: &ConnectionRecord) -> Option<LoginSpan> {
        LoginSpan::of(rec, true)
    }

    pub(super) fn closed(rec: &ConnectionRecord) -> Option<LoginSpan> {
        LoginSpan::of(rec, false)
    }
}

impl PeerLog {
    /// The most accepted logins of `phone` ever open at the same moment.
    pub fn max_concurrent_logins(&self, phone: &str) -> usize {
        let (mut now, mut max) = (0usize, 0);
        for s in self.login_spans.iter().filter(|s| s.phone == phone) {
            if s.open {
                now += 1;
                max = max.max(now);
            } else {
                now -= 1;
            }
        }
        max
    }

    /// Accepted logins of `phone` open now.
    pub fn open_logins(&self, phone: &str) -> usize {
        self.logins(phone).filter(|c| c.accepted && c.open).count()
    }
}

#[test]
fn max_concurrent_logins_counts_overlapping_spans_per_phone() {
    let span = |conn, phone: &str, open| LoginSpan {
        conn,
        phone: phone.into(),
        open,
    };
    let mut log = PeerLog::default();
    for s in [
        span(1, "a", true),
        span(2, "b", true),
        span(1, "a", false),
        span(3, "a", true),
        span(4, "b", true),
        span(3, "a", false),
    ] {
        log.login_spans.push(s);
    }
    assert_eq!(log.max_concurrent_logins("a"), 1, "one after the other");
    assert_eq!(log.max_concurrent_logins("b"), 2, "both open at once");
    assert_eq!(log.max_concurrent_logins("c"), 0);
}
