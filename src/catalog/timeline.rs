//! Timeline histories: which timelines a timeline descends from and where each one branched off,
//! read from PostgreSQL's `<timeline>.history` files, and which WAL segment a recovery following
//! that history reads for each segment number.
//!
//! A history file of timeline 3 reads (one line per ancestor, oldest first):
//!
//! ```text
//! 1    0/3000158    no recovery target specified
//! 2    0/5000000    before 2026-11-22 02:59:00+00
//! ```
//!
//! meaning: timeline 1 up to `0/3000158`, then timeline 2 up to `0/5000000`, then timeline 3.
//! Recovery reads segment number N from the newest timeline that had begun by the start of that
//! segment, so the segment holding a switch point comes from the new timeline (whose copy holds
//! the old timeline's WAL up to the switch, then the new one's).

use super::lsn::{Lsn, Timeline};
use super::wal::{SegmentSize, WalSegment};

/// The ancestry of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    timeline: Timeline,
    /// Each ancestor and the LSN at which its successor began, oldest first.
    ancestors: Vec<(Timeline, Lsn)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history file of timeline {timeline}, line {line}: {reason}")]
pub struct InvalidHistory {
    pub timeline: Timeline,
    pub line: usize,
    pub reason: String,
}

impl TimelineHistory {
    /// The history of a timeline without ancestors (timeline 1, or one whose history is unknown).
    pub fn root(timeline: Timeline) -> TimelineHistory {
        TimelineHistory { timeline, ancestors: Vec::new() }
    }

    /// Parses the contents of `<timeline>.history`.
    pub fn parse(timeline: Timeline, text: &str) -> Result<TimelineHistory, InvalidHistory> {
        let mut ancestors: Vec<(Timeline, Lsn)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let invalid = |reason: String| InvalidHistory { timeline, line: index + 1, reason };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(parent), Some(switch)) = (fields.next(), fields.next()) else {
                return Err(invalid(format!("expected `<timeline> <switch LSN> <reason>`, found {line:?}")));
            };
            let parent = parent
                .parse::<u32>()
                .ok()
                .and_then(Timeline::new)
                .ok_or_else(|| invalid(format!("{parent:?} is not a timeline id")))?;
            let switch: Lsn = switch.parse().map_err(|error| invalid(format!("{error}")))?;
            if let Some((previous, previous_switch)) = ancestors.last()
                && (parent <= *previous || switch < *previous_switch)
            {
                return Err(invalid("timelines and switch points must increase line by line".into()));
            }
            if parent >= timeline {
                return Err(invalid(format!("ancestor {parent} is not older than the timeline itself")));
            }
            ancestors.push((parent, switch));
        }
        Ok(TimelineHistory { timeline, ancestors })
    }

    pub fn timeline(&self) -> Timeline {
        self.timeline
    }

    /// Whether `timeline` is this timeline or one of its ancestors.
    pub fn includes(&self, timeline: Timeline) -> bool {
        timeline == self.timeline || self.ancestors.iter().any(|(ancestor, _)| *ancestor == timeline)
    }

    /// Where `timeline` stopped being followed by this history: the switch point to its successor,
    /// `None` for this timeline itself (still open) or for a timeline that is not in the history.
    pub fn switch_point(&self, timeline: Timeline) -> Option<Lsn> {
        self.ancestors.iter().find(|(ancestor, _)| *ancestor == timeline).map(|(_, switch)| *switch)
    }

    /// Where `timeline` began in this history (`0/0` for the oldest).
    fn begin(&self, timeline: Timeline) -> Lsn {
        let mut begin = Lsn::ZERO;
        for (ancestor, switch) in &self.ancestors {
            if *ancestor == timeline {
                return begin;
            }
            begin = *switch;
        }
        begin
    }

    /// Whether recovery that starts on `timeline` at `lsn` can follow this history: `timeline`
    /// is in it and `lsn` lies before the point where the history left it.
    pub fn reaches(&self, timeline: Timeline, lsn: Lsn) -> bool {
        self.includes(timeline) && self.switch_point(timeline).is_none_or(|switch| lsn <= switch)
    }

    /// The segment recovery reads for segment number `number`: from the newest timeline of the
    /// history that had begun by the end of that segment (a switch point inside a segment puts
    /// the segment on the new timeline).
    pub fn segment(&self, number: u64, size: SegmentSize) -> WalSegment {
        let timelines = self.ancestors.iter().map(|(ancestor, _)| *ancestor).chain([self.timeline]);
        let mut chosen = self.ancestors.first().map_or(self.timeline, |(first, _)| *first);
        for timeline in timelines {
            if WalSegment::containing(timeline, self.begin(timeline), size).number <= number {
                chosen = timeline;
            }
        }
        WalSegment::new(chosen, number)
    }

    /// The timelines of the history, oldest first, this one last.
    pub fn timelines(&self) -> impl Iterator<Item = Timeline> + '_ {
        self.ancestors.iter().map(|(ancestor, _)| *ancestor).chain([self.timeline])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(id: u32) -> Timeline {
        Timeline::new(id).unwrap()
    }

    #[test]
    fn histories_parse_and_answer_questions() {
        let text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-11-22 02:59:00+00\n";
        let history = TimelineHistory::parse(tl(3), text).unwrap();
        assert!(history.includes(tl(1)) && history.includes(tl(2)) && history.includes(tl(3)));
        assert!(!history.includes(tl(4)));
        assert_eq!(history.switch_point(tl(1)), Some("0/3000158".parse().unwrap()));
        assert_eq!(history.switch_point(tl(3)), None);
        assert!(history.reaches(tl(1), "0/3000000".parse().unwrap()));
        assert!(!history.reaches(tl(1), "0/4000000".parse().unwrap()), "timeline 1 was left at 0/3000158");
        assert!(history.reaches(tl(3), "9/0".parse().unwrap()));
        let size = SegmentSize::DEFAULT;
        // Segments 0..=2 from timeline 1; segment 3 holds the switch to timeline 2, so it comes from 2;
        // segment 5 begins exactly at the switch to timeline 3.
        let timelines: Vec<u32> = (0..7).map(|number| history.segment(number, size).timeline.id()).collect();
        assert_eq!(timelines, vec![1, 1, 1, 2, 2, 3, 3]);
        assert_eq!(history.timelines().map(Timeline::id).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn malformed_histories_are_refused_with_their_line() {
        let error = TimelineHistory::parse(tl(2), "# comment\n1\tnot-an-lsn\treason\n").unwrap_err();
        assert_eq!(error.line, 2);
        let error = TimelineHistory::parse(tl(2), "3\t0/1\treason\n").unwrap_err();
        assert!(error.reason.contains("not older"), "{error}");
        let error = TimelineHistory::parse(tl(4), "2\t0/5\tx\n1\t0/6\ty\n").unwrap_err();
        assert!(error.reason.contains("increase"), "{error}");
        let root = TimelineHistory::root(tl(1));
        assert_eq!(root.segment(9, SegmentSize::DEFAULT), WalSegment::new(tl(1), 9));
    }
}
