//! The SVG chart: p99 ÷ ideal p99 per picker, grouped by scenario.

use std::error::Error;
use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::ratio;

/// One group of bars: (picker, p99 ÷ ideal p99).
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) label: String,
    pub(crate) bars: Vec<(&'static str, f64)>,
}

const COLORS: [RGBColor; 15] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x2f, 0x4b, 0x7c),
    RGBColor(0xba, 0xb0, 0xac),
    RGBColor(0x6a, 0x3d, 0x9a),
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x17, 0xbe, 0xcf),
];

const TARGET_RED: RGBColor = RGBColor(0xc0, 0x20, 0x20);

/// The bottom of the logarithmic axis, a little below the ideal's 1×.
const FLOOR: f64 = 0.8;

/// Draws a grouped bar chart of `groups` to `path`, one colour a picker in
/// the order of `pickers`, with the legend to the right.
pub(crate) fn draw(path: &Path, groups: &[Group], pickers: &[&str]) -> Result<(), Box<dyn Error>> {
    // `canvas` is in backend pixels, where `backend_coord` places points.
    let canvas = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    canvas.fill(&WHITE)?;
    let root = canvas.titled(
        "p99 latency ÷ ideal p99, per picker and scenario (lower is better)",
        ("sans-serif", 22),
    )?;
    let (plot, legend) = root.split_horizontally(860);
    let color = |picker: &str| {
        let p = pickers.iter().position(|&name| name == picker).unwrap_or(0);
        COLORS[p % COLORS.len()]
    };

    let highest = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|&(_, r)| r))
        .fold(2.0, f64::max);
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        // Room above the tallest bar for its value.
        .build_cartesian_2d(
            0f64..groups.len() as f64,
            (FLOOR..highest * 8.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_desc("p99 ÷ ideal p99 (log scale)")
        .y_label_formatter(&|v| format!("{v:.0}×"))
        .draw()?;

    // Bars of a group sit side by side in 80% of its width; the rest
    // separates groups.
    let most = groups
        .iter()
        .map(|g| g.bars.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let width = 0.8 / most as f64;
    let value = ("sans-serif", 11)
        .into_font()
        .transform(FontTransform::Rotate270)
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (g, group) in groups.iter().enumerate() {
        let left = g as f64 + 0.5 - width * group.bars.len() as f64 / 2.0;
        for (b, &(picker, r)) in group.bars.iter().enumerate() {
            let x = left + b as f64 * width;
            let bar = [(x, FLOOR), (x + width * 0.85, r)];
            chart.draw_series([Rectangle::new(bar, color(picker).filled())])?;
            let (px, py) = chart.backend_coord(&(x + width * 0.425, r));
            canvas.draw(&Text::new(ratio(r), (px, py - 4), value.clone()))?;
        }
    }

    let across = |y: f64| [(0.0, y), (groups.len() as f64, y)];
    chart.draw_series([PathElement::new(across(1.0), BLACK.stroke_width(2))])?;
    let dashed = DashedPathElement::new(across(1.5), 6, 4, TARGET_RED.stroke_width(1));
    chart.draw_series([dashed])?;

    // Group names under their groups, in pixels: the x axis has no ticks.
    let name = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (g, group) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, FLOOR));
        canvas.draw(&Text::new(group.label.as_str(), (x, y + 8), name.clone()))?;
    }

    let label = ("sans-serif", 13).into_font().color(&BLACK);
    let mut y = 40;
    for &picker in pickers {
        legend.draw(&Rectangle::new(
            [(8, y - 6), (20, y + 6)],
            color(picker).filled(),
        ))?;
        legend.draw(&Text::new(picker, (28, y - 7), label.clone()))?;
        y += 22;
    }
    legend.draw(&PathElement::new([(8, y), (20, y)], BLACK.stroke_width(2)))?;
    legend.draw(&Text::new("ideal (1×)", (28, y - 7), label.clone()))?;
    y += 22;
    legend.draw(&PathElement::new(
        [(8, y), (20, y)],
        TARGET_RED.stroke_width(1),
    ))?;
    legend.draw(&Text::new("target (1.5×)", (28, y - 7), label))?;
    // A bar in the thousands is an endpoint sent more than it can serve: its
    // queue grows for the whole run, so the bar grows with --requests.
    let note = ("sans-serif", 11).into_font().color(&BLACK);
    for (k, line) in [
        "Bars in the thousands: an endpoint",
        "gets more than it can serve, so its",
        "queue grows all run long and the bar",
        "with the number of requests.",
    ]
    .iter()
    .enumerate()
    {
        legend.draw(&Text::new(*line, (8, y + 30 + 15 * k as i32), note.clone()))?;
    }
    canvas.present()?;
    Ok(())
}
