//! SVG charts for the HTML report, drawn with plotters.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// A histogram of `values` (finite ones) with `bins` bins, as SVG text.
pub fn histogram(title: &str, values: &[f64], bins: usize) -> Option<String> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0usize; bins];
    for x in &v {
        let b = (((x - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1) as f64;
    chart(
        title,
        lo..lo + width * bins as f64,
        0.0..top * 1.1,
        |chart| {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_desc("images")
                .x_labels(5)
                .y_labels(5)
                .draw()
                .ok()?;
            chart
                .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                    let x0 = lo + width * i as f64;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
                }))
                .ok()?;
            Some(())
        },
    )
}

/// A line chart of `(x, y)` series, as SVG text.
pub fn lines(title: &str, x_desc: &str, series: &[(String, Vec<(f64, f64)>)]) -> Option<String> {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        return None;
    }
    let (x0, x1, y0, y1) = pts.iter().fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let pad = |a: f64, b: f64| if b > a { (a, b) } else { (a - 0.5, a + 0.5) };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0.min(0.0), y1));
    chart(title, x0..x1, y0..y1 * 1.05, |chart| {
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .x_labels(5)
            .y_labels(5)
            .draw()
            .ok()?;
        for (i, (name, s)) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(s.iter().copied(), colour.stroke_width(2)))
                .ok()?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .ok()?;
        }
        Some(())
    })
}

/// The chart area of every figure.
type Chart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A 420×260 SVG chart titled `title` over `x × y`, its contents drawn by `draw`.
fn chart(
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    draw: impl FnOnce(&mut Chart<'_>) -> Option<()>,
) -> Option<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 260)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(x, y)
            .ok()?;
        draw(&mut chart)?;
        root.present().ok()?;
    }
    Some(svg)
}
