//! `mining_report.json` and `report.html`: what a `mine` run produced, so margins can be tuned
//! by looking. The HTML is self-contained (inline SVG, no script, no network).

use std::path::Path;

use serde_json::{Value, json};

use super::kernel::GUARDS;

/// Fixed-bin histogram over `[-2, 2]` (scores and score differences of unit vectors), 0.005
/// wide: memory does not grow with the output; quantiles are exact to a bin.
#[derive(Debug, Clone)]
pub struct Histogram {
    bins: Vec<u64>,
    count: u64,
    min: f32,
    max: f32,
}

const LO: f32 = -2.0;
const HI: f32 = 2.0;
const BINS: usize = 800;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bins: vec![0; BINS],
            count: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
}

impl Histogram {
    /// Adds a value.
    pub fn add(&mut self, v: f32) {
        if !v.is_finite() {
            return;
        }
        let i = (((v - LO) / (HI - LO)) * BINS as f32).clamp(0.0, (BINS - 1) as f32) as usize;
        self.bins[i] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// The `q` quantile (bin centre; exact `min`/`max` at 0 and 1).
    pub fn quantile(&self, q: f64) -> Option<f32> {
        if self.count == 0 {
            return None;
        }
        if q <= 0.0 {
            return Some(self.min);
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let target = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &b) in self.bins.iter().enumerate() {
            seen += b;
            if seen >= target {
                let c = LO + (i as f32 + 0.5) * (HI - LO) / BINS as f32;
                return Some(c.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    fn to_json(&self) -> Value {
        let qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0];
        let names = ["min", "p05", "p25", "p50", "p75", "p95", "max"];
        let mut m = serde_json::Map::new();
        m.insert("count".into(), json!(self.count));
        for (q, n) in qs.iter().zip(names) {
            m.insert(n.into(), json!(self.quantile(*q)));
        }
        Value::Object(m)
    }
}

/// Everything the report says.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Anchors examined (an anchor with several positives counts once per positive).
    pub anchors: u64,
    /// Rows emitted.
    pub rows_out: u64,
    /// Anchors for which no positive exists in scope.
    pub anchors_without_positive: u64,
    /// Anchors that got fewer than `num_negatives` negatives.
    pub anchors_without_enough_negatives: u64,
    /// `n-tuple` rows dropped for lacking negatives.
    pub rows_dropped: u64,
    /// Per upper guard ([`GUARDS`] order): candidates rejected.
    pub guard_drops: [u64; 3],
    /// Rows whose embedding was rejected under `on_error: skip`.
    pub rows_skipped: u64,
    /// Paired mode: distinct candidates searched (positives plus corpus rows, deduplicated).
    pub candidates: u64,
    /// Paired mode: rows read from the extra `corpus` input.
    pub corpus_rows: u64,
    /// Paired mode: corpus rows equal (exact payload) to a positive or an earlier corpus row.
    pub corpus_duplicates: u64,
    /// Scores of positives.
    pub positive_scores: Histogram,
    /// Scores of negatives.
    pub negative_scores: Histogram,
    /// `s(a,p) − s(a,n)` per emitted (anchor, positive, negative).
    pub differences: Histogram,
    /// Class names (labelled mode).
    pub classes: Vec<String>,
    /// Records per class in the input.
    pub records_per_class: Vec<u64>,
    /// Anchors per class after sampling.
    pub anchors_per_class: Vec<u64>,
    /// Positives per class emitted.
    pub positives_per_class: Vec<u64>,
    /// Negatives per class emitted (by the negative's class).
    pub negatives_per_class: Vec<u64>,
}

fn imbalance(counts: &[u64]) -> Option<f64> {
    let present: Vec<u64> = counts.iter().copied().filter(|&c| c > 0).collect();
    let max = *present.iter().max()?;
    let min = *present.iter().min()?;
    Some(max as f64 / min as f64)
}

impl Stats {
    /// Makes sure the per-class vectors cover `n` classes.
    pub fn grow_classes(&mut self, n: usize) {
        for v in [
            &mut self.records_per_class,
            &mut self.anchors_per_class,
            &mut self.positives_per_class,
            &mut self.negatives_per_class,
        ] {
            if v.len() < n {
                v.resize(n, 0);
            }
        }
    }

    /// The JSON report.
    pub fn to_json(&self, stage: &str, settings: Value) -> Value {
        let mut guards = serde_json::Map::new();
        for (g, n) in GUARDS.iter().zip(self.guard_drops) {
            guards.insert((*g).into(), json!(n));
        }
        let classes: Vec<Value> = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "label": c,
                    "records": self.records_per_class.get(i).copied().unwrap_or(0),
                    "anchors": self.anchors_per_class.get(i).copied().unwrap_or(0),
                    "positives": self.positives_per_class.get(i).copied().unwrap_or(0),
                    "negatives": self.negatives_per_class.get(i).copied().unwrap_or(0),
                })
            })
            .collect();
        json!({
            "stage": stage,
            "settings": settings,
            "anchors": self.anchors,
            "rows_out": self.rows_out,
            "anchors_without_positive": self.anchors_without_positive,
            "anchors_without_enough_negatives": self.anchors_without_enough_negatives,
            "rows_dropped": self.rows_dropped,
            "rows_skipped": self.rows_skipped,
            "candidates": self.candidates,
            "corpus_rows": self.corpus_rows,
            "corpus_duplicates": self.corpus_duplicates,
            "candidates_dropped_per_guard": guards,
            "scores": {
                "positive": self.positive_scores.to_json(),
                "negative": self.negative_scores.to_json(),
                "positive_minus_negative": self.differences.to_json(),
            },
            "class_balance": {
                "imbalance_before_sampling": imbalance(&self.records_per_class),
                "imbalance_after_sampling": imbalance(&self.anchors_per_class),
                "classes": classes,
            },
        })
    }

    /// The one-line summary for the run summary.
    pub fn summary(&self) -> String {
        format!(
            "{} anchors, {} rows, {} without positive, {} short of negatives, guard drops {}",
            self.anchors,
            self.rows_out,
            self.anchors_without_positive,
            self.anchors_without_enough_negatives,
            GUARDS
                .iter()
                .zip(self.guard_drops)
                .map(|(g, n)| format!("{g}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    /// The HTML report.
    pub fn to_html(&self, stage: &str, report: &Value) -> String {
        let mut s = String::new();
        s.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>mining report: ");
        s.push_str(&esc(stage));
        s.push_str("</title><style>body{font-family:sans-serif;margin:2em;color:#222}svg{background:#fafafa;border:1px solid #ddd;margin:0.5em 0}pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head><body>");
        s.push_str(&format!("<h1>mining report: {}</h1>", esc(stage)));
        s.push_str(&format!("<p>{}</p>", esc(&self.summary())));
        for (title, h, colour) in [
            ("positive scores s(a,p)", &self.positive_scores, "#2a7"),
            ("negative scores s(a,n)", &self.negative_scores, "#c44"),
            ("s(a,p) − s(a,n)", &self.differences, "#36c"),
        ] {
            s.push_str(&format!("<h2>{}</h2>", esc(title)));
            s.push_str(&histogram_svg(h, colour));
        }
        if !self.classes.is_empty() {
            s.push_str("<h2>class balance: records (grey) and anchors after sampling (blue)</h2>");
            s.push_str(&class_svg(
                &self.classes,
                &self.records_per_class,
                &self.anchors_per_class,
            ));
        }
        s.push_str("<h2>mining_report.json</h2><pre>");
        s.push_str(&esc(
            &serde_json::to_string_pretty(report).unwrap_or_default()
        ));
        s.push_str("</pre></body></html>\n");
        s
    }

    /// Writes `mining_report.json` and `report.html` into `dir`.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write(&self, dir: &Path, stage: &str, settings: Value) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let report = self.to_json(stage, settings);
        std::fs::write(
            dir.join("mining_report.json"),
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        )?;
        std::fs::write(dir.join("report.html"), self.to_html(stage, &report))
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A bar histogram of `h` between its min and max, 60 bars.
fn histogram_svg(h: &Histogram, colour: &str) -> String {
    let (w, ht) = (640.0f32, 200.0f32);
    if h.count == 0 {
        return "<p>(no values)</p>".into();
    }
    let bars = 60usize;
    let lo = h.min;
    let hi = if h.max > h.min { h.max } else { h.min + 1e-3 };
    let mut counts = vec![0u64; bars];
    for (i, &c) in h.bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let centre = LO + (i as f32 + 0.5) * (HI - LO) / BINS as f32;
        let b = (((centre - lo) / (hi - lo)) * bars as f32).clamp(0.0, (bars - 1) as f32) as usize;
        counts[b] += c;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f32;
    let bw = w / bars as f32;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\">",
        ht + 20.0
    );
    for (i, &c) in counts.iter().enumerate() {
        let bh = c as f32 / top * (ht - 10.0);
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{c}</title></rect>",
            i as f32 * bw,
            ht - bh,
            (bw - 1.0).max(0.5),
            bh
        ));
    }
    s.push_str(&format!(
        "<text x=\"0\" y=\"{}\" font-size=\"12\">{lo:.3}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{hi:.3}</text></svg>",
        ht + 15.0,
        w,
        ht + 15.0
    ));
    s
}

fn class_svg(names: &[String], before: &[u64], after: &[u64]) -> String {
    let n = names.len().max(1);
    let w = (n as f32 * 14.0).max(320.0);
    let ht = 200.0f32;
    let top = before
        .iter()
        .chain(after)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f32;
    let bw = w / n as f32;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" role=\"img\">"
    );
    for (i, name) in names.iter().enumerate() {
        for (k, (v, colour)) in [
            (before.get(i).copied().unwrap_or(0), "#aaa"),
            (after.get(i).copied().unwrap_or(0), "#36c"),
        ]
        .into_iter()
        .enumerate()
        {
            let bh = v as f32 / top * (ht - 10.0);
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{}: {v}</title></rect>",
                i as f32 * bw + k as f32 * bw / 2.0,
                ht - bh,
                (bw / 2.0 - 0.5).max(0.5),
                bh,
                esc(name)
            ));
        }
    }
    s.push_str("</svg>");
    s
}
