//! Per-publisher sequence checking on the subscriber side.
//!
//! A publisher numbers its messages 0, 1, 2, …; the subscriber remembers which numbers it saw
//! in a bitset (one bit per message, so millions of messages stay cheap) and so can tell a
//! duplicate from a reordered message, and at the end name exactly which ones never arrived.

/// How one received sequence number relates to what was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, and higher than everything seen before.
    InOrder,
    /// First time seen, but a higher number arrived earlier.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// Beyond the number of messages the publisher may send: not ours or corrupted.
    OutOfRange,
}

/// What never arrived out of what the publisher sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    pub count: u64,
    pub first: Option<u64>,
}

pub struct SeqChecker {
    /// Bit `seq` is set once `seq` arrived; grows on demand up to `limit` bits.
    seen: Vec<u64>,
    limit: u64,
    highest: Option<u64>,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub out_of_range: u64,
    pub first_duplicate: Option<u64>,
    pub first_out_of_order: Option<u64>,
}

impl SeqChecker {
    /// A checker for a publisher that sends at most `limit` messages, numbered from 0.
    pub fn new(limit: u64) -> Self {
        Self {
            seen: Vec::new(),
            limit,
            highest: None,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            out_of_range: 0,
            first_duplicate: None,
            first_out_of_order: None,
        }
    }

    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.limit {
            self.out_of_range += 1;
            return Arrival::OutOfRange;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            self.first_duplicate.get_or_insert(seq);
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.highest {
            Some(highest) if seq < highest => {
                self.out_of_order += 1;
                self.first_out_of_order.get_or_insert(seq);
                Arrival::OutOfOrder
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// The numbers below `published` that never arrived.
    pub fn missing(&self, published: u64) -> Missing {
        let published = published.min(self.limit);
        let mut missing = Missing {
            count: 0,
            first: None,
        };
        for word in 0..published.div_ceil(64) {
            let bits_here = (published - word * 64).min(64);
            let mask = if bits_here == 64 {
                u64::MAX
            } else {
                (1u64 << bits_here) - 1
            };
            let absent = !self.seen.get(word as usize).copied().unwrap_or(0) & mask;
            if absent != 0 {
                missing.count += u64::from(absent.count_ones());
                missing
                    .first
                    .get_or_insert(word * 64 + u64::from(absent.trailing_zeros()));
            }
        }
        missing
    }
}

/// Whether `seqs` is exactly 1..=count in order; otherwise the first thing wrong.
pub fn check_log_sequence(seqs: &[u64], count: u64) -> Result<(), String> {
    let mut expected = 1;
    for &seq in seqs {
        if seq == expected && seq <= count {
            expected += 1;
        } else if seq < expected {
            return Err(format!(
                "duplicate or out-of-order seq {seq} after {}",
                expected - 1
            ));
        } else if seq > count {
            return Err(format!("unexpected seq {seq} beyond {count}"));
        } else {
            return Err(format!("first missing seq {expected} (got {seq} instead)"));
        }
    }
    if expected <= count {
        return Err(format!(
            "first missing seq {expected} (nothing after {})",
            expected - 1
        ));
    }
    Ok(())
}

/// How the sequences a device received for its log's 1..=count fall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogTally {
    /// Sequences of 1..=count received at least once.
    pub unique: u64,
    /// Receptions of a sequence received before.
    pub repeated: u64,
    /// Sequences outside 1..=count.
    pub unexpected: u64,
}

pub fn tally_log_sequence(seqs: &[u64], count: u64) -> LogTally {
    let mut checker = SeqChecker::new(count);
    let mut zero = 0;
    for &seq in seqs {
        match seq.checked_sub(1) {
            Some(index) => {
                checker.record(index);
            }
            None => zero += 1,
        }
    }
    LogTally {
        unique: checker.unique,
        repeated: checker.duplicates,
        unexpected: checker.out_of_range + zero,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_losses() {
        let mut checker = SeqChecker::new(1_000);
        for seq in 0..1_000 {
            assert_eq!(checker.record(seq), Arrival::InOrder);
        }
        assert_eq!(
            checker.missing(1_000),
            Missing {
                count: 0,
                first: None
            }
        );
        assert_eq!((checker.duplicates, checker.out_of_order), (0, 0));
    }

    #[test]
    fn detects_missing_messages() {
        let mut checker = SeqChecker::new(200);
        for seq in (0..200).filter(|s| ![3, 64, 130, 199].contains(s)) {
            checker.record(seq);
        }
        assert_eq!(
            checker.missing(200),
            Missing {
                count: 4,
                first: Some(3)
            }
        );
        // Only what was actually published counts as missing.
        assert_eq!(
            checker.missing(100),
            Missing {
                count: 2,
                first: Some(3)
            }
        );
        assert_eq!(
            SeqChecker::new(10).missing(0),
            Missing {
                count: 0,
                first: None
            }
        );
    }

    #[test]
    fn detects_duplicates() {
        let mut checker = SeqChecker::new(10);
        assert_eq!(checker.record(0), Arrival::InOrder);
        assert_eq!(checker.record(1), Arrival::InOrder);
        assert_eq!(checker.record(1), Arrival::Duplicate);
        assert_eq!(checker.record(0), Arrival::Duplicate);
        assert_eq!((checker.duplicates, checker.first_duplicate), (2, Some(1)));
        assert_eq!(checker.unique, 2);
    }

    #[test]
    fn detects_reordering() {
        let mut checker = SeqChecker::new(10);
        for seq in [0, 2, 1, 3, 5, 4] {
            checker.record(seq);
        }
        assert_eq!(checker.out_of_order, 2);
        assert_eq!(checker.first_out_of_order, Some(1));
        assert_eq!(checker.missing(6).count, 0);
    }

    #[test]
    fn rejects_numbers_beyond_the_limit() {
        let mut checker = SeqChecker::new(5);
        assert_eq!(checker.record(5), Arrival::OutOfRange);
        assert_eq!(checker.out_of_range, 1);
        assert_eq!(checker.unique, 0);
    }

    #[test]
    fn a_complete_sequence_passes() {
        assert_eq!(check_log_sequence(&[1, 2, 3], 3), Ok(()));
    }

    #[test]
    fn the_first_problem_is_named() {
        let problem = |seqs: &[u64]| check_log_sequence(seqs, 4).unwrap_err();
        assert!(problem(&[1, 2, 4]).contains("first missing seq 3"));
        assert!(problem(&[1, 2, 3]).contains("first missing seq 4"));
        assert!(problem(&[]).contains("first missing seq 1"));
        assert!(problem(&[1, 2, 2, 3, 4]).contains("duplicate or out-of-order seq 2"));
        assert!(problem(&[1, 3, 2, 4]).contains("first missing seq 2"));
        assert!(problem(&[1, 2, 3, 4, 5]).contains("unexpected seq 5"));
    }

    #[test]
    fn tallies_a_log_sequence() {
        assert_eq!(
            tally_log_sequence(&[1, 2, 3], 3),
            LogTally {
                unique: 3,
                repeated: 0,
                unexpected: 0
            }
        );
        assert_eq!(
            tally_log_sequence(&[0, 1, 3, 3, 1, 9], 4),
            LogTally {
                unique: 2,
                repeated: 2,
                unexpected: 2
            }
        );
    }
}
