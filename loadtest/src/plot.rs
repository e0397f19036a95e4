//! `--plot FILE.svg`: a run drawn as two charts side by side, the latency distribution by
//! percentile (the tail is what users feel, so the x axis stretches towards 99.99%) and the
//! throughput of every second of the run.

use crate::progress::Timeline;
use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (1200, 480);
/// The x axis ends at 99.999%: "nines" = -log10(1 - q).
const MAX_NINES: f64 = 5.0;

/// What a scenario offers to draw.
pub struct PlotData<'a> {
    pub title: &'a str,
    /// Latencies in microseconds.
    pub latency: &'a Histogram<u64>,
    pub timeline: &'a Timeline,
    /// The timeline's counter drawn as throughput.
    pub rate_series: &'a str,
}

/// Writes `data` as an SVG file at `path`.
pub fn write_svg(path: &Path, data: &PlotData<'_>) -> Result<()> {
    let plotting = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(data.title, ("sans-serif", 22))?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        draw_percentiles(&left, data.latency)?;
        draw_rate(&right, data.timeline, data.rate_series)?;
        root.present()?;
        Ok(())
    };
    plotting()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

/// (nines, milliseconds) along the histogram's percentiles.
fn percentile_curve(latency: &Histogram<u64>) -> Vec<(f64, f64)> {
    latency
        .iter_quantiles(1)
        .map(|step| {
            let nines = -(1.0 - step.quantile_iterated_to()).max(1e-12).log10();
            (nines.min(MAX_NINES), step.value_iterated_to() as f64 / 1e3)
        })
        .collect()
}

fn draw_percentiles<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    latency: &Histogram<u64>,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let curve = percentile_curve(latency);
    let top = curve.iter().map(|&(_, ms)| ms).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..MAX_NINES, 0f64..top)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|nines| percentile_label(*nines))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    chart.draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))?;
    Ok(())
}

fn draw_rate<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    timeline: &Timeline,
    series: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let rates = timeline.per_second.get(series).cloned().unwrap_or_default();
    let top = rates.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let seconds = rates.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{series} per second"), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc(format!("{series}/s"))
        .draw()?;
    chart.draw_series(LineSeries::new(
        rates
            .iter()
            .enumerate()
            .map(|(i, &rate)| ((i + 1) as f64, rate as f64)),
        RED.stroke_width(2),
    ))?;
    Ok(())
}

/// `90%`, `99.9%`, … for a position on the nines axis.
fn percentile_label(nines: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines - 2.0).ceil().max(0.0) as usize;
    format!("{percent:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::latency_histogram;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }

    #[test]
    fn the_curve_rises_to_the_maximum() {
        let mut latency = latency_histogram();
        for us in 1..=10_000 {
            latency.record(us).unwrap();
        }
        let curve = percentile_curve(&latency);
        assert!(curve.windows(2).all(|w| w[0].1 <= w[1].1));
        let (nines, ms) = *curve.last().unwrap();
        assert!(nines > 3.0, "{nines}");
        assert!((ms - 10.0).abs() < 0.1, "{ms}");
    }

    #[test]
    fn writes_an_svg() {
        let mut latency = latency_histogram();
        latency.record_n(1_500, 99).unwrap();
        latency.record(20_000).unwrap();
        let mut timeline = Timeline::default();
        timeline.per_second.insert("delivered", vec![100, 250, 240]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        let data = PlotData {
            title: "test run",
            latency: &latency,
            timeline: &timeline,
            rate_series: "delivered",
        };
        write_svg(&path, &data).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("latency by percentile"));
        assert!(svg.contains("delivered per second"));
    }
}
