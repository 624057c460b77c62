//! Medians over rounds, the Markdown table and the SVG plot of throughput
//! ratios.

use std::path::Path;

use plotters::prelude::*;

use crate::client::LoadResult;
use crate::servers::Framework;

/// The median of `values` (mean of the middle two for an even count); 0
/// when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// One variant's results over all rounds.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Framework.
    pub framework: Framework,
    /// Route label.
    pub label: String,
    /// Each round's result.
    pub rounds: Vec<LoadResult>,
    /// Each round's 2xx/s divided by the framework's bare route's 2xx/s in
    /// the same round (empty for the bare route itself).
    pub ratios: Vec<f64>,
}

impl Summary {
    /// An empty summary.
    pub fn new(framework: Framework, label: &str) -> Self {
        Self {
            framework,
            label: label.to_owned(),
            rounds: Vec::new(),
            ratios: Vec::new(),
        }
    }

    /// Median 2xx answers per second.
    pub fn rps(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(LoadResult::ok_per_sec)
                .collect::<Vec<_>>(),
        )
    }

    /// Median ratio to the bare route (1 for the bare route).
    pub fn ratio(&self) -> f64 {
        if self.ratios.is_empty() {
            1.0
        } else {
            median(&self.ratios)
        }
    }

    /// Median over rounds of the `q` latency quantile, microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(|r| r.latency_us(q))
                .collect::<Vec<_>>(),
        )
    }

    /// Median process CPU microseconds per answer.
    pub fn cpu_us(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(LoadResult::cpu_us_per_answer)
                .collect::<Vec<_>>(),
        )
    }

    /// Median server-side CPU microseconds per answer.
    pub fn server_cpu_us(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(LoadResult::server_cpu_us_per_answer)
                .collect::<Vec<_>>(),
        )
    }

    /// Median CPU use of other processes during the rounds, in cores.
    pub fn foreign_cores(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(LoadResult::foreign_cores)
                .collect::<Vec<_>>(),
        )
    }

    /// Non-2xx answers and transport errors over all rounds.
    pub fn failures(&self) -> u64 {
        self.rounds.iter().map(|r| r.non_2xx() + r.errors).sum()
    }
}

/// The Markdown table of all variants, with a target column. "server CPU
/// ratio" is the bare route's server CPU per request over the variant's:
/// the throughput ratio a server with a core of its own would reach.
pub fn table(summaries: &[Summary], target: impl Fn(&Summary) -> Option<f64>) -> String {
    let mut out = String::from(
        "| framework | route | req/s (median) | ratio to bare (median) | target | p50 ms | p99 ms | server CPU us/req | server CPU ratio | other processes (cores) | non-2xx + errors |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let bare_cpu = summaries
            .iter()
            .find(|b| b.framework == s.framework && b.label == "bare")
            .map_or(f64::NAN, Summary::server_cpu_us);
        let target = match target(s) {
            Some(t) if s.ratio() >= t => format!(">= {t:.2} met"),
            Some(t) => format!(">= {t:.2} **MISSED**"),
            None => String::new(),
        };
        let failures = match s.failures() {
            0 => "0".to_owned(),
            n => format!("**{n} FLAGGED**"),
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} | {} | {:.2} | {:.2} | {:.1} | {:.3} | {:.2} | {} |\n",
            s.framework.name(),
            s.label,
            s.rps(),
            s.ratio(),
            target,
            s.latency_us(0.5) / 1000.0,
            s.latency_us(0.99) / 1000.0,
            s.server_cpu_us(),
            bare_cpu / s.server_cpu_us(),
            s.foreign_cores(),
            failures,
        ));
    }
    out
}

/// Draws the ratio of every non-bare variant as a bar chart into `path`
/// (SVG).
pub fn plot(summaries: &[Summary], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bars: Vec<(String, f64)> = summaries
        .iter()
        .filter(|s| s.label != "bare")
        .map(|s| (format!("{}: {}", s.framework.name(), s.label), s.ratio()))
        .collect();
    let n = bars.len().max(1);
    let width = u32::try_from(140 + 110 * n).unwrap_or(1200);
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "GET /api/me throughput, ratio to the framework's bare route (median of rounds)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..1.1f64)?;
    let labels: Vec<String> = bars.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("ratio")
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (label, ratio))| {
        // Bearer-token variants lighter than the cookie ones beside them.
        let alpha = if label.contains(": bearer") {
            0.35
        } else {
            0.6
        };
        let color = if label.starts_with("axum") {
            BLUE.mix(alpha)
        } else if label.starts_with("rocket") {
            GREEN.mix(alpha)
        } else {
            RED.mix(alpha)
        };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *ratio),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, ratio))| {
        Text::new(
            format!("{ratio:.2}"),
            (SegmentValue::CenterOf(i), ratio + 0.03),
            ("sans-serif", 14),
        )
    }))?;
    root.present()?;
    Ok(())
}
