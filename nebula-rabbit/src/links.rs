//! The per-bus state of the two side channels, kept on [`RabbitBus`](crate::RabbitBus): the
//! report publisher (used by `reports`) and where the bus stands on each stream (used by
//! `streams`). Here, below both, so that the bus holds them without importing either.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use lapin::Channel;
use lapin::types::{AMQPValue, LongString};

/// How far before its first subscription a bus that acknowledged nothing on a stream resumes
/// (the broker's and this host's clocks may differ; AMQP timestamps are whole seconds).
pub const TIMESTAMP_SLACK: Duration = Duration::from_secs(10);

/// A bus's report publisher: one confirm-mode channel on the bus's connection, with the report
/// topology declared, opened at the first report.
#[derive(Debug, Default)]
pub(crate) struct ReportLink {
    pub(crate) publisher: tokio::sync::Mutex<Option<Channel>>,
}

/// Where this bus stands on each stream it subscribed to.
#[derive(Default)]
pub(crate) struct Offsets {
    streams: Mutex<HashMap<String, Position>>,
}

#[derive(Clone, Copy, Debug)]
enum Position {
    /// Subscribed at this time, nothing acknowledged yet.
    Since(SystemTime),
    /// Everything up to this offset is handled.
    After(u64),
}

/// Where a consumer starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    Next,
    Since(SystemTime),
    After(u64),
}

impl Start {
    pub(crate) fn argument(self) -> AMQPValue {
        match self {
            Self::Next => AMQPValue::LongString(LongString::from("next")),
            Self::Since(at) => {
                let secs = at
                    .checked_sub(TIMESTAMP_SLACK)
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                AMQPValue::Timestamp(secs)
            }
            Self::After(offset) => {
                AMQPValue::LongLongInt(i64::try_from(offset.saturating_add(1)).unwrap_or(i64::MAX))
            }
        }
    }

    /// The first offset this consumer may hand on (the broker starts at a chunk's beginning).
    pub(crate) fn first(self) -> u64 {
        match self {
            Self::After(offset) => offset.saturating_add(1),
            Self::Next | Self::Since(_) => 0,
        }
    }
}

impl Offsets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Position>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a consumer of `stream` starts, remembering that this bus subscribed to it.
    pub(crate) fn start(&self, stream: &str) -> Start {
        let mut streams = self.lock();
        match streams.get(stream) {
            None => {
                streams.insert(stream.to_owned(), Position::Since(SystemTime::now()));
                Start::Next
            }
            Some(Position::Since(at)) => Start::Since(*at),
            Some(Position::After(offset)) => Start::After(*offset),
        }
    }

    /// Everything up to `offset` of `stream` is handled (never moves back).
    pub(crate) fn handled(&self, stream: &str, offset: u64) {
        let mut streams = self.lock();
        match streams.get_mut(stream) {
            Some(Position::After(at)) => *at = (*at).max(offset),
            Some(p @ Position::Since(_)) => *p = Position::After(offset),
            None => {
                streams.insert(stream.to_owned(), Position::After(offset));
            }
        }
    }
}
