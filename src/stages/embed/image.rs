//! Turning encoded images (PNG, JPEG, WebP bytes) into model input tensors.
//!
//! The preprocessing is the one CLIP-style and torchvision-style image encoders expect: decode
//! to RGB, resize so the shorter side is `resize` pixels (bilinear, antialiased), take the
//! centre `height × width` crop, scale to `[0, 1]`, subtract `mean` and divide by `std` per
//! channel. Resize and crop happen in one pass (the crop box is mapped back to the source).

use fast_image_resize as fr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Preprocessing of encoded images (binary columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageOptions {
    /// Shorter side after resizing, in pixels, before the centre crop; default: the crop's
    /// larger side (resize then crop the centre, as CLIP does).
    #[serde(default)]
    pub resize: Option<u32>,
    /// Per-channel mean subtracted after scaling pixels to `[0, 1]` (RGB order); default:
    /// ImageNet's `[0.485, 0.456, 0.406]`.
    #[serde(default = "imagenet_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by (RGB order); default: ImageNet's
    /// `[0.229, 0.224, 0.225]`.
    #[serde(default = "imagenet_std")]
    pub std: [f32; 3],
}

fn imagenet_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}

fn imagenet_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            resize: None,
            mean: imagenet_mean(),
            std: imagenet_std(),
        }
    }
}

/// Channel order of the model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, 3, height, width]`.
    Nchw,
    /// `[batch, height, width, 3]`.
    Nhwc,
}

/// Decodes `bytes` and writes the normalised `height × width` RGB crop into `out`
/// (`3 · height · width` floats, in `layout` order without the batch axis).
///
/// # Errors
/// A message saying why the bytes could not be decoded or resized.
///
/// # Panics
/// When `out` has the wrong length.
pub fn preprocess(
    bytes: &[u8],
    opts: &ImageOptions,
    height: u32,
    width: u32,
    layout: Layout,
    out: &mut [f32],
) -> Result<(), String> {
    assert_eq!(out.len(), 3 * height as usize * width as usize);
    let img = ::image::load_from_memory(bytes)
        .map_err(|e| format!("cannot decode the image ({} bytes): {e}", bytes.len()))?
        .to_rgb8();
    let (sw, sh) = img.dimensions();
    if sw == 0 || sh == 0 {
        return Err("the image is empty (0 pixels)".into());
    }
    let resize = opts.resize.unwrap_or(height.max(width)) as f64;
    // Scale so the shorter side becomes `resize`, then map the centred crop back to source pixels.
    let scale = resize / (sw.min(sh) as f64);
    let crop_w = (width as f64 / scale).min(sw as f64);
    let crop_h = (height as f64 / scale).min(sh as f64);
    let left = (sw as f64 - crop_w) / 2.0;
    let top = (sh as f64 - crop_h) / 2.0;
    let src = fr::images::Image::from_vec_u8(sw, sh, img.into_raw(), fr::PixelType::U8x3)
        .map_err(|e| format!("image buffer: {e}"))?;
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(left, top, crop_w, crop_h);
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| format!("resizing the image: {e}"))?;
    let px = dst.buffer();
    let plane = (height * width) as usize;
    let inv_std = opts.std.map(|s| 1.0 / s);
    for i in 0..plane {
        for c in 0..3 {
            let v = (px[i * 3 + c] as f32 / 255.0 - opts.mean[c]) * inv_std[c];
            match layout {
                Layout::Nchw => out[c * plane + i] = v,
                Layout::Nhwc => out[i * 3 + c] = v,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb(f(x, y)));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ::image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn uniform_image_normalises_to_known_values_in_both_layouts() {
        let bytes = png(40, 20, |_, _| [255, 0, 51]);
        let opts = ImageOptions {
            resize: None,
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.25, 0.1],
        };
        let mut chw = vec![0.0; 3 * 8 * 8];
        preprocess(&bytes, &opts, 8, 8, Layout::Nchw, &mut chw).unwrap();
        let want = [1.0, -2.0, (0.2 - 0.5) / 0.1];
        for c in 0..3 {
            for v in &chw[c * 64..(c + 1) * 64] {
                assert!((v - want[c]).abs() < 1e-5, "channel {c}: {v}");
            }
        }
        let mut hwc = vec![0.0; 3 * 8 * 8];
        preprocess(&bytes, &opts, 8, 8, Layout::Nhwc, &mut hwc).unwrap();
        for (i, v) in hwc.iter().enumerate() {
            assert!((v - want[i % 3]).abs() < 1e-5);
        }
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        // 90 × 10: left third red, middle green, right blue; resize shorter side to 4 then crop
        // 4 × 4 from the centre: source columns 40..50, all green even with the filter's reach.
        let bytes = png(90, 10, |x, _| match x / 30 {
            0 => [255, 0, 0],
            1 => [0, 255, 0],
            _ => [0, 0, 255],
        });
        let opts = ImageOptions {
            resize: Some(4),
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let mut out = vec![0.0; 3 * 4 * 4];
        preprocess(&bytes, &opts, 4, 4, Layout::Nchw, &mut out).unwrap();
        assert!(out[..16].iter().all(|v| *v < 0.05), "red: {:?}", &out[..16]);
        assert!(out[16..32].iter().all(|v| *v > 0.95));
        assert!(out[32..].iter().all(|v| *v < 0.05));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = vec![0.0; 3 * 4 * 4];
        let e = preprocess(
            b"not an image",
            &ImageOptions::default(),
            4,
            4,
            Layout::Nchw,
            &mut out,
        )
        .unwrap_err();
        assert!(e.contains("cannot decode"), "{e}");
    }
}
