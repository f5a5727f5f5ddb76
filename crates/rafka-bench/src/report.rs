//! The result table: one row per figure, with its target (when the issue sets one),
//! whether the target was met, and how the figure compares with this machine's
//! limits measured in the same run. Printed as aligned text and, on request,
//! written as a Markdown table for `docs/benchmarks.md`.

use std::fmt::Write as _;

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No target for this figure.
    None,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub result: String,
    pub target: String,
    pub verdict: Verdict,
    /// The figure as a ratio to a machine limit, or another reading aid.
    pub versus: String,
}

impl Row {
    pub fn new(scenario: &'static str, figure: impl Into<String>, result: impl Into<String>) -> Row {
        Row {
            scenario,
            figure: figure.into(),
            result: result.into(),
            target: String::new(),
            verdict: Verdict::None,
            versus: String::new(),
        }
    }

    /// A lower bound: the figure must be at least `target`.
    pub fn at_least(mut self, value: f64, target: f64, shown: impl Into<String>) -> Row {
        self.target = shown.into();
        self.verdict = if value >= target { Verdict::Met } else { Verdict::Missed };
        self
    }

    /// An upper bound: the figure must be at most `target`.
    pub fn at_most(mut self, value: f64, target: f64, shown: impl Into<String>) -> Row {
        self.target = shown.into();
        self.verdict = if value <= target { Verdict::Met } else { Verdict::Missed };
        self
    }

    pub fn versus(mut self, text: impl Into<String>) -> Row {
        self.versus = text.into();
        self
    }

    fn verdict_text(&self) -> &'static str {
        match self.verdict {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::None => "",
        }
    }

    fn target_text(&self) -> String {
        match self.verdict {
            Verdict::None => self.target.clone(),
            _ => format!("{} ({})", self.target, self.verdict_text()),
        }
    }
}

const HEADERS: [&str; 5] = ["scenario", "figure", "result", "target", "vs. this machine"];

fn cells(row: &Row) -> [String; 5] {
    [row.scenario.to_string(), row.figure.clone(), row.result.clone(), row.target_text(), row.versus.clone()]
}

/// Aligned plain-text table.
pub fn text_table(rows: &[Row]) -> String {
    let mut widths = HEADERS.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(cells(row)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &HEADERS.map(String::from));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in rows {
        line(&mut out, &cells(row));
    }
    out
}

/// Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n|{}\n", HEADERS.join(" | "), "---|".repeat(HEADERS.len()));
    for row in rows {
        let escaped: Vec<String> = cells(row).iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", escaped.join(" | "));
    }
    out
}

/// `1234567.0` → `1,234,567`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if value < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// A duration in milliseconds, or seconds when large.
pub fn millis(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-42000.0), "-42,000");
    }

    #[test]
    fn verdicts_follow_the_bound() {
        assert_eq!(Row::new("s", "f", "r").at_least(5.0, 4.0, "≥ 4").verdict, Verdict::Met);
        assert_eq!(Row::new("s", "f", "r").at_least(3.0, 4.0, "≥ 4").verdict, Verdict::Missed);
        assert_eq!(Row::new("s", "f", "r").at_most(3.0, 4.0, "≤ 4").verdict, Verdict::Met);
        assert_eq!(Row::new("s", "f", "r").at_most(5.0, 4.0, "≤ 4").verdict, Verdict::Missed);
    }

    #[test]
    fn tables_hold_every_row() {
        let rows = vec![
            Row::new("produce", "RF=1 | acks=1", "1,000 rec/s").at_least(1000.0, 10.0, "≥ 10"),
            Row::new("limits", "memcpy", "9 GB/s"),
        ];
        let text = text_table(&rows);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("≥ 10 (met)"), "{text}");
        let md = markdown_table(&rows);
        assert!(md.contains("RF=1 \\| acks=1"), "{md}");
        assert_eq!(md.lines().count(), 4);
        assert_eq!(millis(1.234), "1.23 ms");
        assert_eq!(millis(1500.0), "1500 ms");
        assert_eq!(millis(12_000.0), "12.0 s");
    }
}
