//! Stop strings matched across token boundaries.
//!
//! Text is released only when it cannot be the start of a stop string; a
//! match ends generation and the matched text (and anything after it) is
//! never emitted.

/// Holds back text that may turn into a stop string.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What pushing text produced.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now (may be empty).
    Emit(String),
    /// A stop string matched: emit the text before it, then stop.
    Stopped {
        /// Text before the match.
        before: String,
        /// The stop string that matched.
        stop: String,
    },
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds newly decoded text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.pending.push_str(text);
        if let Some((pos, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|p| (p, s)))
            .min_by_key(|(p, _)| *p)
        {
            let before = self.pending[..pos].to_string();
            let stop = stop.clone();
            self.pending.clear();
            return StopOutcome::Stopped { before, stop };
        }
        // Keep the longest suffix that is a proper prefix of some stop:
        // for each stop, the longest prefix no longer than the pending text
        // that ends it, tried from the longest down.
        let mut keep = 0;
        for s in &self.stops {
            let longest = self.pending.len().min(s.len() - 1);
            if let Some(i) = (1..=longest)
                .rev()
                .filter(|&i| s.is_char_boundary(i))
                .find(|&i| self.pending.ends_with(&s[..i]))
            {
                keep = keep.max(i);
            }
        }
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Emit(out)
    }

    /// Ends the stream: whatever was held back is emitted.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_across_pushes_and_hides_the_stop() {
        let mut m = StopMatcher::new(&["</end>".to_string(), "\n\n".to_string()]);
        assert_eq!(m.push("Hello </"), StopOutcome::Emit("Hello ".into()));
        assert_eq!(m.push("e"), StopOutcome::Emit(String::new()));
        assert_eq!(
            m.push("nd> more"),
            StopOutcome::Stopped {
                before: String::new(),
                stop: "</end>".into()
            }
        );
    }

    #[test]
    fn releases_text_once_it_cannot_match() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("ST"), StopOutcome::Emit(String::new()));
        assert_eq!(m.push("ay"), StopOutcome::Emit("STay".into()));
        assert_eq!(m.push("S"), StopOutcome::Emit(String::new()));
        assert_eq!(m.finish(), "S");
        let mut none = StopMatcher::new(&[]);
        assert_eq!(none.push("abc"), StopOutcome::Emit("abc".into()));
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = StopMatcher::new(&["b".to_string(), "abc".to_string()]);
        assert_eq!(
            m.push("xabcd"),
            StopOutcome::Stopped {
                before: "x".into(),
                stop: "abc".into()
            }
        );
    }
}
