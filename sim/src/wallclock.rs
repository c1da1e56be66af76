//! The only place the simulator reads a real clock: the sweep driver's seeds-per-second
//! figure and its time budget. Nothing measured here reaches a run or its trace.

/// Wall time since creation.
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods)] // measuring the sweep itself, never a run
    pub fn start() -> Stopwatch {
        Stopwatch(std::time::Instant::now())
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// `10m`, `90s`, `2h`, `500ms`, or plain seconds → milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration_ms("10m"), Some(600_000));
        assert_eq!(super::parse_duration_ms("90s"), Some(90_000));
        assert_eq!(super::parse_duration_ms("250ms"), Some(250));
        assert_eq!(super::parse_duration_ms("3"), Some(3_000));
        assert_eq!(super::parse_duration_ms("x"), None);
    }
}
