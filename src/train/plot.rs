//! The PNG of a run's curves: training loss (raw and smoothed) and validation Dice.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::ValidationResult;
use crate::fsutil::AtomicFile;

/// DejaVu Sans (its licence is beside it in `assets/fonts`), so plots need no system fonts.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

pub(crate) fn register_font() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws loss and Dice curves into `path` (atomically).
pub fn curves(
    path: &Path,
    losses: &[(usize, f32)],
    dice: &[ValidationResult],
) -> Result<(), Box<dyn std::error::Error>> {
    register_font();
    let (width, height) = (1200u32, 500u32);
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(width / 2);

        let max_iter = losses.last().map_or(1, |l| l.0 + 1).max(1);
        let max_loss = losses.iter().map(|l| l.1).fold(0.1f32, f32::max);
        let mut chart = ChartBuilder::on(&left)
            .caption("training loss (Dice + CE)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0..max_iter, 0f32..max_loss * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("loss")
            .draw()?;
        chart.draw_series(LineSeries::new(
            losses.iter().map(|&(i, l)| (i, l)),
            RGBColor(180, 180, 220),
        ))?;
        let window = (losses.len() / 50).max(1);
        let smoothed: Vec<(usize, f32)> = losses
            .windows(window)
            .map(|w| {
                (
                    w[w.len() - 1].0,
                    w.iter().map(|x| x.1).sum::<f32>() / w.len() as f32,
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(smoothed, BLUE.stroke_width(2)))?
            .label(format!("moving mean of {window}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;

        let mut chart = ChartBuilder::on(&right)
            .caption("validation Dice", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0..max_iter, 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("iteration")
            .y_desc("Dice")
            .draw()?;
        let mut series: BTreeMap<String, Vec<(usize, f64)>> = BTreeMap::new();
        for r in dice {
            series
                .entry(format!("{} {} {}", r.class, r.arch, r.mode))
                .or_default()
                .push((r.iteration, r.dice));
        }
        for (n, (name, points)) in series.into_iter().enumerate() {
            let colour = Palette99::pick(n).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    let mut file = AtomicFile::create(path)?;
    let encoder = encode_png(width, height, &pixels, png::ColorType::Rgb)?;
    std::io::Write::write_all(&mut file, &encoder)?;
    file.commit()?;
    Ok(())
}

/// Encodes 8-bit pixels (`color` says how many channels) as PNG.
pub(crate) fn encode_png(
    width: u32,
    height: u32,
    pixels: &[u8],
    color: png::ColorType,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(pixels)?;
    }
    Ok(out)
}
