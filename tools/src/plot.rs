//! `--plot FILE.svg`: a load run over time in one SVG, three panels sharing the time axis:
//! throughput (produced and consumed per second), backlog, and ack latency (p50, p99, max per
//! second, log scale). Drawn with plotters' SVG backend and a bundled font (DejaVu Sans), so
//! no system library or font is needed.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// What a run recorded, per second unless said.
pub struct Series<'a> {
    pub title: String,
    pub produced: &'a [u64],
    pub consumed: Option<&'a [u64]>,
    /// (seconds since start, records stored and not consumed)
    pub backlog: &'a [(f64, u64)],
    pub p50_us: &'a [u64],
    pub p99_us: &'a [u64],
    pub max_us: &'a [u64],
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

type Linear<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel over the run's seconds with a linear y axis from 0 to `top`, its grid drawn.
fn linear<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    seconds: f64,
    top: f64,
) -> Result<Linear<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Draws `s` into `path`.
pub fn draw(path: &Path, s: &Series<'_>) -> Result<(), String> {
    // Registering twice (two plots in one process) keeps the first: fine.
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let root = SVGBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&s.title, ("sans-serif", 22)).map_err(err)?;
    let panels = root.split_evenly((3, 1));
    let seconds = s
        .produced
        .len()
        .max(s.consumed.map_or(0, <[u64]>::len))
        .max(s.backlog.last().map_or(0, |b| b.0.ceil() as usize))
        .max(1) as f64;
    let at = |i: usize| i as f64 + 0.5;

    // Throughput.
    let top = s
        .produced
        .iter()
        .chain(s.consumed.unwrap_or(&[]))
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = linear(&panels[0], "throughput (records/s)", seconds, top)?;
    let line = |data: &[u64]| -> Vec<(f64, f64)> {
        data.iter()
            .enumerate()
            .map(|(i, &v)| (at(i), v as f64))
            .collect()
    };
    chart
        .draw_series(LineSeries::new(line(s.produced), BLUE.stroke_width(2)).point_size(3))
        .map_err(err)?
        .label("produced (acknowledged)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if let Some(consumed) = s.consumed {
        chart
            .draw_series(LineSeries::new(line(consumed), GREEN.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label("consumed")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // Backlog.
    let top = s.backlog.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 1.1;
    let caption = match s.consumed {
        Some(_) => "backlog (records stored, not consumed)",
        None => "backlog: no consumer in this scenario",
    };
    let mut chart = linear(&panels[1], caption, seconds, top)?;
    chart
        .draw_series(LineSeries::new(
            s.backlog.iter().map(|&(t, b)| (t, b as f64)),
            RED.stroke_width(2),
        ))
        .map_err(err)?;

    // Latency, log scale.
    let top = s.max_us.iter().copied().max().unwrap_or(1).max(10) as f64 * 2.0;
    let bottom = (s
        .p50_us
        .iter()
        .copied()
        .filter(|&v| v > 0)
        .min()
        .unwrap_or(1) as f64
        / 2.0)
        .max(1.0)
        .min(top / 10.0);
    let mut chart = ChartBuilder::on(&panels[2])
        .caption("ack latency per second (µs, log scale)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds, (bottom..top).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    let positive = |data: &[u64]| -> Vec<(f64, f64)> {
        data.iter()
            .enumerate()
            .filter(|(_, v)| **v > 0)
            .map(|(i, &v)| (at(i), v as f64))
            .collect()
    };
    for (data, label, color) in [
        (s.p50_us, "p50", BLUE),
        (s.p99_us, "p99", MAGENTA),
        (s.max_us, "max", RED),
    ] {
        chart
            .draw_series(LineSeries::new(positive(data), color.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
