//! Micro-benchmarks of the CPU-heavy middle of rtsnap, one stage at a time.
//!
//! `cargo bench --bench pipeline` (about two minutes). Each input is the 2nd
//! keyframe of a committed fixture (the 1st is small: x264's rate control is
//! still ramping up), so the numbers are for a typical camera IDR:
//!
//! - `decode/*`: openh264 through `DecoderPool`, the closure does nothing;
//! - `encode_jpeg/1080p`: the decoded 1080p planes (copied once) to JPEG q80;
//! - `keyframe_to_jpeg/*`: the whole still path (SPS check, decode, encode);
//! - `resize/*`: 1080p RGB to 640x360 with `image`, for a possible thumbnail.
//!
//! Criterion keeps its results in `<target>/criterion/`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use image::imageops::{self, FilterType};
use rtsnap::decode::{DecoderPool, Yuv420};
use rtsnap::fixture::FixtureStream;

/// (label, fixture file stem). "1080p" is the camera-like stream the
/// performance targets are stated for (IDRs ~90 KB); "1080p-noisy" the
/// heavy one (IDRs ~160-190 KB, night-like sensor noise).
const FIXTURES: [(&str, &str); 4] = [
    ("1080p", "cam1080p-day"),
    ("1080p-noisy", "cam1080p-high"),
    ("720p", "cam720p-main-bframes"),
    ("360p", "sub360p-baseline"),
];

/// The 2nd IDR access unit of a fixture, Annex B with SPS/PPS.
fn second_keyframe(stem: &str) -> Vec<u8> {
    let path = rtsnap::fixture::default_dir().join(format!("{stem}.h264"));
    let stream = FixtureStream::load(&path)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    let index = stream
        .keyframe_indices()
        .nth(1)
        .unwrap_or_else(|| panic!("{stem} has fewer than 2 keyframes"));
    stream.access_units()[index].data.to_vec()
}

/// A decoded picture with planes of its own, so it outlives the decoder.
struct OwnedYuv {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    y_stride: usize,
    uv_stride: usize,
    full_range: bool,
}

impl OwnedYuv {
    fn decode(pool: &DecoderPool, annexb: &[u8]) -> OwnedYuv {
        let info = rtsnap::keyframe::inspect(annexb).expect("fixture keyframe is valid");
        let dims = (info.width as usize, info.height as usize);
        pool.decode(annexb, Some(dims), info.full_range, |p| OwnedYuv {
            width: p.width,
            height: p.height,
            y: p.y.to_vec(),
            u: p.u.to_vec(),
            v: p.v.to_vec(),
            y_stride: p.y_stride,
            uv_stride: p.uv_stride,
            full_range: p.full_range,
        })
        .expect("fixture keyframe decodes")
    }

    fn view(&self) -> Yuv420<'_> {
        Yuv420 {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.y_stride,
            uv_stride: self.uv_stride,
            full_range: self.full_range,
        }
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (label, stem) in FIXTURES {
        let data = second_keyframe(stem);
        let info = rtsnap::keyframe::inspect(&data).expect("fixture keyframe is valid");
        let dims = (info.width as usize, info.height as usize);
        let pool = DecoderPool::new(1);
        g.bench_function(label, |b| {
            b.iter(|| {
                pool.decode(black_box(&data), Some(dims), info.full_range, |pic| {
                    black_box(pic.width);
                })
                .expect("decodes")
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let pool = DecoderPool::new(1);
    let owned = OwnedYuv::decode(&pool, &second_keyframe("cam1080p-day"));
    let pic = owned.view();
    let mut g = c.benchmark_group("encode_jpeg");
    g.bench_function("1080p", |b| {
        b.iter(|| rtsnap::encode::encode_jpeg(black_box(&pic), 80).expect("encodes"))
    });
    g.finish();
}

fn keyframe_to_jpeg(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyframe_to_jpeg");
    for (label, stem) in FIXTURES {
        let data = second_keyframe(stem);
        let pool = DecoderPool::new(1);
        g.bench_function(label, |b| {
            b.iter(|| {
                rtsnap::pipeline::keyframe_to_jpeg(&pool, black_box(&data), 80).expect("still")
            })
        });
    }
    g.finish();
}

fn resize(c: &mut Criterion) {
    // The decoded 1080p picture as RGB: the still rtsnap makes, decoded again
    // (at q80 close enough to the decoder's output for timing a resize).
    let pool = DecoderPool::new(1);
    let still = rtsnap::pipeline::keyframe_to_jpeg(&pool, &second_keyframe("cam1080p-day"), 80)
        .expect("still");
    let rgb = image::load_from_memory(&still.jpeg)
        .expect("rtsnap's JPEG decodes")
        .into_rgb8();
    assert_eq!(rgb.dimensions(), (1920, 1080));
    let mut g = c.benchmark_group("resize_1080p_to_640x360");
    g.bench_function("thumbnail", |b| {
        b.iter(|| imageops::thumbnail(black_box(&rgb), 640, 360))
    });
    g.bench_function("triangle", |b| {
        b.iter(|| imageops::resize(black_box(&rgb), 640, 360, FilterType::Triangle))
    });
    g.finish();
}

fn config() -> Criterion {
    // Eleven benchmarks of 1-40 ms each: short runs keep the whole bench near
    // two minutes; raise these for publication numbers on a quiet machine.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode, keyframe_to_jpeg, resize
}
criterion_main!(benches);
