//! The middle of the pipeline on real encoder output: every keyframe of
//! every fixture becomes a JPEG that matches ffmpeg's reference decode.

mod common;

use common::*;
use rtsnap::decode::DecoderPool;
use rtsnap::keyframe::inspect;
use rtsnap::pipeline::keyframe_to_jpeg;

#[test]
fn every_keyframe_matches_the_reference_decode() {
    // One decoder for all three sizes: the pool must cope with a decoder
    // switching between streams.
    let pool = DecoderPool::new(1);
    for name in [FULLHD, HD_BFRAMES, SUB] {
        let stream = load(name);
        let refs = references(name);
        let keyframes: Vec<usize> = stream.keyframe_indices().collect();
        assert_eq!(
            keyframes.len(),
            refs.len(),
            "{name}: one reference per keyframe"
        );
        for (k, (ref_path, reference)) in keyframes.iter().zip(&refs) {
            let au = &stream.access_units()[*k];
            let info = inspect(&au.data).unwrap();
            assert!(!info.interlaced && !info.full_range);
            let still = keyframe_to_jpeg(&pool, &au.data, 80).unwrap();
            assert_eq!((still.width, still.height), reference.dimensions());
            let img = image::load_from_memory(&still.jpeg).unwrap().into_rgb8();
            let m = compare(&img, reference);
            assert!(
                m.good(),
                "{name} frame {k}: {m:?} against {}",
                ref_path.display()
            );
        }
    }
    assert_eq!(pool.decoders(), 1);
}

/// The pure-Rust encoder (what a build without the `turbojpeg` feature
/// uses) makes stills as good as libjpeg-turbo's, whichever this build has.
#[test]
fn jpeg_encoder_fallback_matches_the_reference_decode() {
    let pool = DecoderPool::new(1);
    for name in [FULLHD, SUB] {
        let stream = load(name);
        let k = stream.keyframe_indices().nth(1).unwrap();
        let au = &stream.access_units()[k];
        let (ref_path, reference) = references(name).remove(1);
        let info = inspect(&au.data).unwrap();
        let jpeg = pool
            .decode(&au.data, None, info.full_range, |pic| {
                rtsnap::encode::encode_jpeg_rust(&pic, 80).unwrap()
            })
            .unwrap();
        let img = image::load_from_memory(&jpeg).unwrap().into_rgb8();
        let m = compare(&img, &reference);
        assert!(m.good(), "{name}: {m:?} against {}", ref_path.display());
    }
}

/// The PSNR check is sharp enough to catch the classic bug: copying
/// limited-range samples into a JPEG unchanged (washed-out stills).
#[test]
fn psnr_check_catches_unexpanded_range() {
    let stream = load(FULLHD);
    let k = stream.keyframe_indices().next().unwrap();
    let (_, reference) = references(FULLHD).remove(0);
    let pool = DecoderPool::new(1);
    let jpeg = pool
        .decode(&stream.access_units()[k].data, None, true, |pic| {
            rtsnap::encode::encode_jpeg(&pic, 80).unwrap()
        })
        .unwrap();
    let img = image::load_from_memory(&jpeg).unwrap().into_rgb8();
    let m = compare(&img, &reference);
    assert!(!m.good() && m.luma < 30.0, "washed-out still scored {m:?}");
}

#[test]
fn corrupt_keyframe_is_an_error_and_the_decoder_recovers() {
    let pool = DecoderPool::new(1);
    let stream = load(SUB);
    let k = stream.keyframe_indices().next().unwrap();
    let good = &stream.access_units()[k].data;
    // Keep SPS/PPS and the slice header, scramble the slice data.
    let mut bad = good.to_vec();
    let n = bad.len();
    for (i, b) in bad[n / 3..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0x5a;
    }
    // Either the decoder refuses it or it yields a picture; it must not panic.
    let _ = keyframe_to_jpeg(&pool, &bad, 80);
    let truncated = &good[..good.len() / 2];
    let _ = keyframe_to_jpeg(&pool, truncated, 80);
    let still = keyframe_to_jpeg(&pool, good, 80).expect("decoder recovers at the next IDR");
    let img = image::load_from_memory(&still.jpeg).unwrap().into_rgb8();
    assert!(compare(&img, &references(SUB)[0].1).good());
}
