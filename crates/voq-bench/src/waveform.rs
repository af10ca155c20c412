//! Waveforms for the demo report, drawn with plotters' SVG backend: one lane per track (its
//! min/max envelope per pixel column), stalls shaded and the barge-in marked. Text stays in the
//! HTML around the picture, so no font is needed.

use plotters::prelude::*;

/// One lane of a picture.
#[derive(Debug, Clone, Copy)]
pub struct Track<'a> {
    /// The samples (24 kHz).
    pub samples: &'a [i16],
    /// The lane's colour (RGB).
    pub color: (u8, u8, u8),
}

/// What to mark on the last lane.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// Sample ranges where playback stalled (silence the device rendered while it waited).
    pub stalls: Vec<(usize, usize)>,
    /// The sample where the user barged in.
    pub barge_in: Option<usize>,
}

const WIDTH: u32 = 900;
const LANE: u32 = 70;

/// An SVG of `tracks`, stacked, on one time axis (the longest track's length).
pub fn svg(tracks: &[Track<'_>], marks: &Marks) -> String {
    let mut out = String::new();
    let height = LANE * tracks.len().max(1) as u32;
    let len = tracks
        .iter()
        .map(|t| t.samples.len())
        .max()
        .unwrap_or(0)
        .max(1);
    {
        let area = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        // Drawing into a String cannot fail for lack of space; errors would be our own bugs in
        // the coordinates, and a report without a picture is better than no report.
        let _ = area.fill(&WHITE);
        let lanes = area.split_evenly((tracks.len().max(1), 1));
        let x_of = |sample: usize| (sample as f64 / len as f64 * f64::from(WIDTH)) as i32;
        for (i, (track, lane)) in tracks.iter().zip(&lanes).enumerate() {
            let mid = (LANE / 2) as i32;
            let scale = f64::from(LANE / 2 - 4) / 32768.0;
            let _ = lane.draw(&PathElement::new(
                vec![(0, mid), (WIDTH as i32, mid)],
                RGBColor(220, 220, 220),
            ));
            if i + 1 == tracks.len() {
                for &(from, to) in &marks.stalls {
                    let _ = lane.draw(&Rectangle::new(
                        [(x_of(from), 0), (x_of(to).max(x_of(from) + 1), LANE as i32)],
                        RGBColor(255, 200, 200).filled(),
                    ));
                }
            }
            let color = RGBColor(track.color.0, track.color.1, track.color.2);
            for (x, (lo, hi)) in envelope(track.samples, len, WIDTH as usize)
                .into_iter()
                .enumerate()
            {
                let y = |v: i16| mid - (f64::from(v) * scale) as i32;
                let _ = lane.draw(&PathElement::new(
                    vec![(x as i32, y(hi)), (x as i32, y(lo) + 1)],
                    color,
                ));
            }
            if let (true, Some(at)) = (i + 1 == tracks.len(), marks.barge_in) {
                let _ = lane.draw(&PathElement::new(
                    vec![(x_of(at), 0), (x_of(at), LANE as i32)],
                    RGBColor(200, 0, 0).stroke_width(2),
                ));
            }
        }
        let _ = area.present();
    }
    out
}

/// Min and max of the samples falling in each of `columns` columns of a timeline `len` long
/// (columns past the end of `samples` stay flat).
fn envelope(samples: &[i16], len: usize, columns: usize) -> Vec<(i16, i16)> {
    (0..columns)
        .map(|c| {
            let from = c * len / columns;
            let to = ((c + 1) * len / columns).max(from + 1);
            let slice = samples.get(from..to.min(samples.len())).unwrap_or(&[]);
            let lo = slice.iter().copied().min().unwrap_or(0);
            let hi = slice.iter().copied().max().unwrap_or(0);
            (lo, hi)
        })
        .collect()
}

/// Runs of exact digital silence of at least `min` samples after the first sound: what a
/// device renders while playback waits for audio (speech itself is never exactly zero for long).
pub fn silent_runs(samples: &[i16], min: usize) -> Vec<(usize, usize)> {
    let Some(first) = samples.iter().position(|&s| s != 0) else {
        return Vec::new();
    };
    let last = samples.iter().rposition(|&s| s != 0).unwrap_or(first);
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &s) in samples.iter().enumerate().take(last + 1).skip(first) {
        match (s == 0, start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                if i - from >= min {
                    runs.push((from, i));
                }
                start = None;
            }
            _ => {}
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_covers_each_column() {
        let samples: Vec<i16> = (0..100)
            .map(|i| if i % 2 == 0 { 100 } else { -100 })
            .collect();
        let e = envelope(&samples, 100, 10);
        assert_eq!(e.len(), 10);
        assert!(e.iter().all(|&(lo, hi)| lo == -100 && hi == 100));
    }

    #[test]
    fn stalls_are_long_zero_runs_inside_the_sound() {
        let mut s = vec![0i16; 10];
        s.extend([5; 10]);
        s.extend([0; 300]);
        s.extend([5; 10]);
        s.extend([0; 3]);
        s.extend([5; 10]);
        assert_eq!(silent_runs(&s, 240), vec![(20, 320)]);
    }

    #[test]
    fn the_picture_is_an_svg_with_a_lane_per_track() {
        let a = vec![1000i16; 2400];
        let svg = svg(
            &[
                Track {
                    samples: &a,
                    color: (0, 0, 200),
                },
                Track {
                    samples: &a,
                    color: (0, 150, 0),
                },
            ],
            &Marks {
                stalls: vec![(100, 200)],
                barge_in: Some(1200),
            },
        );
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("height=\"140\""));
    }
}
