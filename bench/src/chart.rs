//! PNG charts of a run's per-second series (throughput, latency, memory over time), written
//! beside the `--json` file. Text is drawn with DejaVu Sans compiled into the binary, so the
//! chart needs no system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

/// One line of a panel: label, colour, points `(t seconds, y)`.
pub(crate) type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One stacked panel: a y-axis label and its lines.
pub(crate) struct Panel<'a> {
    pub y_label: &'a str,
    pub lines: Vec<Line<'a>>,
}

/// A vertical marker across every panel (warm-up end, outage start/end).
pub(crate) struct Mark<'a> {
    pub t: f64,
    pub label: &'a str,
}

pub(crate) const BLUE_: RGBColor = RGBColor(31, 119, 180);
pub(crate) const ORANGE_: RGBColor = RGBColor(255, 127, 14);
pub(crate) const GREEN_: RGBColor = RGBColor(44, 160, 44);
pub(crate) const RED_: RGBColor = RGBColor(214, 39, 40);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A valid TrueType file compiled in: registration cannot fail unless the crate is broken.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes `panels` stacked vertically as a PNG of 1200 × 360·n pixels.
pub(crate) fn write_png(path: &Path, caption: &str, panels: &[Panel<'_>], marks: &[Mark<'_>]) -> anyhow::Result<()> {
    register_font();
    let height = 60 + 340 * panels.len() as u32;
    let root = BitMapBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root.titled(caption, ("sans-serif", 24)).map_err(draw_error)?;
    let areas = root.split_evenly((panels.len(), 1));
    let t_max = panels.iter().flat_map(|p| p.lines.iter().flat_map(|l| l.2.iter().map(|p| p.0))).fold(1.0f64, f64::max);
    for (panel, area) in panels.iter().zip(&areas) {
        let y_max = panel.lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)).fold(0.0f64, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(panel.y_label)
            .y_label_formatter(&|v| human(*v))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(draw_error)?;
        for (label, colour, points) in &panel.lines {
            let colour = *colour;
            chart
                .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
                .map_err(draw_error)?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        for m in marks {
            chart.draw_series(LineSeries::new([(m.t, 0.0), (m.t, y_max)], BLACK.mix(0.4))).map_err(draw_error)?;
            chart
                .draw_series([Text::new(m.label.to_string(), (m.t, y_max * 0.97), ("sans-serif", 13))])
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// 1234567 → "1.2M", 45000 → "45k", 12.5 → "12.5".
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The path of the chart written beside a JSON results file: `r.json` → `r.png`.
pub(crate) fn beside(json: &Path) -> std::path::PathBuf {
    json.with_extension("png")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_of_the_expected_size_with_text_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.png");
        let ramp: Vec<(f64, f64)> = (0..30).map(|t| (f64::from(t), f64::from(t) * 10_000.0)).collect();
        let panels = [
            Panel { y_label: "events/s", lines: vec![("accepted", BLUE_, ramp.clone())] },
            Panel { y_label: "p99 ms", lines: vec![("p99", RED_, ramp.iter().map(|p| (p.0, p.1 / 1e4)).collect())] },
        ];
        write_png(&path, "test run", &panels, &[Mark { t: 5.0, label: "warm-up end" }]).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) =
            (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!((w, h), (1200, 60 + 2 * 340));
        assert!(png.len() > 10_000, "a chart with axes, labels and lines, not a blank image: {} bytes", png.len());
        assert_eq!(beside(Path::new("out/r.json")), Path::new("out/r.png"));
        assert_eq!((human(1_234_567.0), human(45_000.0), human(12.5)), ("1.2M".into(), "45k".into(), "12.5".into()));
    }
}
