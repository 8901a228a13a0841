//! Image ops (torchvision-style) on decoded 8-bit RGB images.
//!
//! A record's image is decoded once (PNG, JPEG or WebP, detected from the bytes; alpha is
//! dropped, grey is expanded to RGB) and every view starts from that decoded image. Resizing
//! (random resized crop, resize, `to_tensor`) goes through `fast_image_resize` with a bilinear,
//! anti-aliased convolution, cropping inside the resize so no crop copy is made. The output is
//! either re-encoded bytes (`encode`, PNG by default) or a float tensor (`to_tensor`).

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::ExtendedColorType;
use image::ImageEncoder;

use super::config::{AugmentOp, ImageEncoding, TensorLayout};
use super::rng::OpRng;

/// A decoded 8-bit RGB image, rows top to bottom, pixels `[r, g, b]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Img {
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
    /// `w · h · 3` bytes.
    pub data: Vec<u8>,
}

impl Img {
    /// Decodes PNG, JPEG or WebP bytes (format detected from the content) to RGB.
    ///
    /// # Errors
    /// A message saying why the bytes are not a decodable image.
    pub fn decode(bytes: &[u8]) -> Result<Img, String> {
        let img =
            image::load_from_memory(bytes).map_err(|e| format!("cannot decode image: {e}"))?;
        let rgb = img.into_rgb8();
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err("image has no pixels".into());
        }
        Ok(Img {
            w,
            h,
            data: rgb.into_raw(),
        })
    }

    /// Encodes as `format` (`quality` for JPEG) into `out` (cleared first).
    ///
    /// # Errors
    /// When the encoder fails (it does not for valid images).
    pub fn encode(
        &self,
        format: ImageEncoding,
        quality: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        out.clear();
        let r = match format {
            ImageEncoding::Png => image::codecs::png::PngEncoder::new_with_quality(
                &mut *out,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            )
            .write_image(&self.data, self.w, self.h, ExtendedColorType::Rgb8),
            ImageEncoding::Jpeg => return self.encode_jpeg(quality, out),
            ImageEncoding::Webp => image::codecs::webp::WebPEncoder::new_lossless(&mut *out)
                .write_image(&self.data, self.w, self.h, ExtendedColorType::Rgb8),
        };
        r.map_err(|e| format!("cannot encode image: {e}"))
    }

    /// Baseline JPEG at `quality` with 4:2:0 chroma subsampling (libjpeg's and so PIL's default
    /// for `save(..., quality=q)`), standard Huffman tables. Uses the encoder's AVX2 path when
    /// the CPU has it.
    fn encode_jpeg(&self, quality: u8, out: &mut Vec<u8>) -> Result<(), String> {
        let (w, h) = match (u16::try_from(self.w), u16::try_from(self.h)) {
            (Ok(w), Ok(h)) => (w, h),
            _ => {
                return Err(format!(
                    "cannot encode image: {}x{} is larger than JPEG allows (65,535 a side)",
                    self.w, self.h
                ));
            }
        };
        let mut enc = jpeg_encoder::Encoder::new(&mut *out, quality.clamp(1, 100));
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        enc.encode(&self.data, w, h, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| format!("cannot encode image: {e}"))
    }

    #[cfg(test)]
    fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.w + x) * 3) as usize;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

#[derive(Debug, Clone)]
enum ImgOp {
    RandomResizedCrop {
        size: [u32; 2],
        scale: [f64; 2],
        ratio: [f64; 2],
    },
    HorizontalFlip,
    VerticalFlip,
    Rotation {
        degrees: [f64; 2],
        fill: [u8; 3],
    },
    ColorJitter {
        brightness: f64,
        contrast: f64,
        saturation: f64,
        hue: f64,
    },
    Grayscale,
    GaussianBlur {
        sigma: [f64; 2],
        kernel_size: Option<u32>,
    },
    Resize {
        size: [u32; 2],
    },
}

/// What an image column becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ImageOutput {
    /// Encoded bytes.
    Encode {
        /// Format.
        format: ImageEncoding,
        /// JPEG quality.
        quality: u8,
    },
    /// A float tensor of `3 · size[0] · size[1]` values.
    Tensor {
        /// `[height, width]`.
        size: [u32; 2],
        /// Per-channel mean.
        mean: [f32; 3],
        /// Per-channel std.
        std: [f32; 3],
        /// Element order.
        layout: TensorLayout,
    },
}

impl ImageOutput {
    /// Values per row of a tensor output.
    pub fn tensor_len(&self) -> Option<usize> {
        match self {
            ImageOutput::Tensor { size, .. } => Some(3 * size[0] as usize * size[1] as usize),
            ImageOutput::Encode { .. } => None,
        }
    }
}

/// The ordered image ops of one column and its output form.
#[derive(Debug, Clone)]
pub struct ImagePipeline {
    ops: Vec<(ImgOp, f64)>,
    /// The column's output form.
    pub output: ImageOutput,
}

/// Per-worker buffers.
#[derive(Default)]
pub struct ImageScratch {
    resizer: Resizer,
    work: Img,
    spare: Vec<u8>,
    floats: Vec<f32>,
    /// The encoded output of the last [`ImagePipeline::apply`] with an `Encode` output.
    pub encoded: Vec<u8>,
}

impl std::fmt::Debug for ImageScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageScratch").finish_non_exhaustive()
    }
}

impl ImagePipeline {
    /// Compiles `ops` (all image ops; `encode`/`to_tensor` only last).
    ///
    /// # Panics
    /// When an op is not an image op (validation prevents it).
    pub fn new(ops: &[AugmentOp]) -> ImagePipeline {
        let mut output = ImageOutput::Encode {
            format: ImageEncoding::Png,
            quality: 90,
        };
        let mut compiled = Vec::new();
        for op in ops {
            let c = match op {
                AugmentOp::RandomResizedCrop {
                    size, scale, ratio, ..
                } => ImgOp::RandomResizedCrop {
                    size: *size,
                    scale: *scale,
                    ratio: *ratio,
                },
                AugmentOp::HorizontalFlip { .. } => ImgOp::HorizontalFlip,
                AugmentOp::VerticalFlip { .. } => ImgOp::VerticalFlip,
                AugmentOp::Rotation { degrees, fill, .. } => ImgOp::Rotation {
                    degrees: *degrees,
                    fill: *fill,
                },
                AugmentOp::ColorJitter {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                    ..
                } => ImgOp::ColorJitter {
                    brightness: *brightness,
                    contrast: *contrast,
                    saturation: *saturation,
                    hue: *hue,
                },
                AugmentOp::Grayscale { .. } => ImgOp::Grayscale,
                AugmentOp::GaussianBlur {
                    sigma, kernel_size, ..
                } => ImgOp::GaussianBlur {
                    sigma: *sigma,
                    kernel_size: *kernel_size,
                },
                AugmentOp::Resize { size, .. } => ImgOp::Resize { size: *size },
                AugmentOp::Encode { format, quality } => {
                    output = ImageOutput::Encode {
                        format: *format,
                        quality: *quality,
                    };
                    continue;
                }
                AugmentOp::ToTensor {
                    size,
                    mean,
                    std,
                    layout,
                } => {
                    output = ImageOutput::Tensor {
                        size: *size,
                        mean: *mean,
                        std: *std,
                        layout: *layout,
                    };
                    continue;
                }
                other => panic!("`{}` is not an image op", other.name()),
            };
            compiled.push((c, op.p()));
        }
        ImagePipeline {
            ops: compiled,
            output,
        }
    }

    /// Applies the ops to `src` for the record key `key` and produces the output: encoded bytes
    /// in `s.encoded`, or tensor values appended to `tensor`.
    ///
    /// # Errors
    /// When encoding fails.
    pub fn apply(
        &self,
        src: &Img,
        key: u64,
        s: &mut ImageScratch,
        tensor: &mut Vec<f32>,
    ) -> Result<(), String> {
        // `own` is false while the image is still `src` untouched (saves a copy when the first
        // op resizes).
        let mut own = false;
        for (i, (op, p)) in self.ops.iter().enumerate() {
            let mut rng = OpRng::new(key, i);
            if !rng.chance(*p) {
                continue;
            }
            let cur: &Img = if own { &s.work } else { src };
            match op {
                ImgOp::RandomResizedCrop { size, scale, ratio } => {
                    let (x, y, w, h) = crop_box(cur.w, cur.h, *scale, *ratio, &mut rng);
                    let out = resize_into(
                        &mut s.resizer,
                        cur,
                        (x, y, w, h),
                        *size,
                        std::mem::take(&mut s.spare),
                    );
                    s.spare = std::mem::replace(&mut s.work, out).data;
                    own = true;
                }
                ImgOp::Resize { size } => {
                    let out = resize_into(
                        &mut s.resizer,
                        cur,
                        (0, 0, cur.w, cur.h),
                        *size,
                        std::mem::take(&mut s.spare),
                    );
                    s.spare = std::mem::replace(&mut s.work, out).data;
                    own = true;
                }
                _ => {
                    if !own {
                        s.work.w = src.w;
                        s.work.h = src.h;
                        s.work.data.clear();
                        s.work.data.extend_from_slice(&src.data);
                        own = true;
                    }
                    match op {
                        ImgOp::HorizontalFlip => hflip(&mut s.work),
                        ImgOp::VerticalFlip => vflip(&mut s.work),
                        ImgOp::Rotation { degrees, fill } => {
                            let angle = rng.uniform(degrees[0], degrees[1]);
                            rotate(&mut s.work, angle, *fill, &mut s.spare);
                        }
                        ImgOp::ColorJitter {
                            brightness,
                            contrast,
                            saturation,
                            hue,
                        } => {
                            let j =
                                Jitter::draw(*brightness, *contrast, *saturation, *hue, &mut rng);
                            j.apply(&mut s.work);
                        }
                        ImgOp::Grayscale => grayscale(&mut s.work),
                        ImgOp::GaussianBlur { sigma, kernel_size } => {
                            let sg = rng.uniform(sigma[0], sigma[1]);
                            gaussian_blur(&mut s.work, sg, *kernel_size, &mut s.floats);
                        }
                        ImgOp::RandomResizedCrop { .. } | ImgOp::Resize { .. } => unreachable!(),
                    }
                }
            }
        }
        let cur: &Img = if own { &s.work } else { src };
        match self.output {
            ImageOutput::Encode { format, quality } => cur.encode(format, quality, &mut s.encoded),
            ImageOutput::Tensor { .. } => {
                self.tensor_of(cur, &mut s.resizer, &mut s.spare, tensor);
                Ok(())
            }
        }
    }

    /// Appends the tensor of `img` (resized to the tensor size when needed) to `out`.
    ///
    /// # Panics
    /// When the output is not a tensor.
    pub fn tensor_of(
        &self,
        img: &Img,
        resizer: &mut Resizer,
        spare: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) {
        let ImageOutput::Tensor {
            size,
            mean,
            std,
            layout,
        } = self.output
        else {
            panic!("not a tensor output");
        };
        let resized;
        let img = if img.h == size[0] && img.w == size[1] {
            img
        } else {
            resized = resize_into(
                resizer,
                img,
                (0, 0, img.w, img.h),
                size,
                std::mem::take(spare),
            );
            &resized
        };
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| mean[c] / std[c]);
        match layout {
            TensorLayout::Nhwc => out.extend(
                img.data
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * scale[i % 3] - shift[i % 3]),
            ),
            TensorLayout::Nchw => {
                for (c, (sc, sh)) in scale.into_iter().zip(shift).enumerate() {
                    out.extend(
                        img.data
                            .iter()
                            .skip(c)
                            .step_by(3)
                            .map(|&v| v as f32 * sc - sh),
                    );
                }
            }
        }
    }

    /// The untouched form of a record for `keep_original` with a tensor output.
    pub fn original_tensor(&self, src: &Img, s: &mut ImageScratch, out: &mut Vec<f32>) {
        self.tensor_of(src, &mut s.resizer, &mut s.spare, out);
    }
}

/// torchvision's `RandomResizedCrop.get_params`: `(left, top, width, height)`.
pub fn crop_box(
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut OpRng,
) -> (u32, u32, u32, u32) {
    let area = width as f64 * height as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale[0], scale[1]);
        let aspect = rng.uniform(lr0, lr1).exp();
        let w = (target * aspect).sqrt().round() as i64;
        let h = (target / aspect).sqrt().round() as i64;
        if w > 0 && h > 0 && w <= width as i64 && h <= height as i64 {
            let top = rng.below((height as i64 - h + 1) as usize) as u32;
            let left = rng.below((width as i64 - w + 1) as usize) as u32;
            return (left, top, w as u32, h as u32);
        }
    }
    // Fallback: the largest centred crop whose ratio is within range.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (
            width,
            ((width as f64 / ratio[0]).round() as u32).clamp(1, height),
        )
    } else if in_ratio > ratio[1] {
        (
            ((height as f64 * ratio[1]).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Resizes the `(left, top, width, height)` box of `src` to `size` (`[height, width]`), using
/// `buf` as the output's storage.
fn resize_into(
    resizer: &mut Resizer,
    src: &Img,
    (x, y, w, h): (u32, u32, u32, u32),
    size: [u32; 2],
    mut buf: Vec<u8>,
) -> Img {
    let (dw, dh) = (size[1], size[0]);
    if (x, y, w, h) == (0, 0, src.w, src.h) && (dw, dh) == (src.w, src.h) {
        buf.clear();
        buf.extend_from_slice(&src.data);
        return Img {
            w: dw,
            h: dh,
            data: buf,
        };
    }
    buf.clear();
    buf.resize(dw as usize * dh as usize * 3, 0);
    let src_ref = ImageRef::new(src.w, src.h, &src.data, PixelType::U8x3).expect("valid RGB image");
    let mut dst = FirImage::from_vec_u8(dw, dh, buf, PixelType::U8x3).expect("sized buffer");
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(x as f64, y as f64, w as f64, h as f64);
    resizer
        .resize(&src_ref, &mut dst, &opts)
        .expect("same pixel types, crop inside the image");
    Img {
        w: dw,
        h: dh,
        data: dst.into_vec(),
    }
}

/// Mirrors left–right in place.
pub fn hflip(img: &mut Img) {
    let row = img.w as usize * 3;
    for r in img.data.chunks_exact_mut(row) {
        let (mut a, mut b) = (0usize, img.w as usize - 1);
        while a < b {
            for c in 0..3 {
                r.swap(a * 3 + c, b * 3 + c);
            }
            a += 1;
            b -= 1;
        }
    }
}

/// Mirrors top–bottom in place.
pub fn vflip(img: &mut Img) {
    let row = img.w as usize * 3;
    let h = img.h as usize;
    for y in 0..h / 2 {
        let (top, bottom) = img.data.split_at_mut((h - 1 - y) * row);
        top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
    }
}

/// Rotates counter-clockwise by `degrees` about the centre (nearest neighbour, same size).
pub fn rotate(img: &mut Img, degrees: f64, fill: [u8; 3], spare: &mut Vec<u8>) {
    if degrees == 0.0 {
        return;
    }
    let (w, h) = (img.w as usize, img.h as usize);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f64 * 0.5, h as f64 * 0.5);
    spare.clear();
    spare.reserve(w * h * 3);
    for y in 0..h {
        let dy = y as f64 + 0.5 - cy;
        for x in 0..w {
            let dx = x as f64 + 0.5 - cx;
            let sx = (cos * dx - sin * dy + cx).floor();
            let sy = (sin * dx + cos * dy + cy).floor();
            if sx >= 0.0 && sy >= 0.0 && (sx as usize) < w && (sy as usize) < h {
                let i = (sy as usize * w + sx as usize) * 3;
                spare.extend_from_slice(&img.data[i..i + 3]);
            } else {
                spare.extend_from_slice(&fill);
            }
        }
    }
    std::mem::swap(&mut img.data, spare);
}

/// ITU-R 601-2 luma, as PIL's `convert("L")`.
#[inline]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Converts to grey in place (three equal channels).
pub fn grayscale(img: &mut Img) {
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p[0], p[1], p[2]);
        p.fill(l);
    }
}

/// Drawn colour-jitter factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// Adjustment order: 0 brightness, 1 contrast, 2 saturation, 3 hue.
    pub order: [u8; 4],
    /// Brightness factor (1 = unchanged).
    pub brightness: f64,
    /// Contrast factor (1 = unchanged).
    pub contrast: f64,
    /// Saturation factor (1 = unchanged).
    pub saturation: f64,
    /// Hue shift in turns (0 = unchanged).
    pub hue: f64,
}

impl Jitter {
    /// Draws the order and factors, as torchvision's `ColorJitter.get_params`.
    pub fn draw(b: f64, c: f64, s: f64, h: f64, rng: &mut OpRng) -> Jitter {
        let mut order = [0u8, 1, 2, 3];
        for i in (1..4).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        let mut factor = |x: f64| {
            if x > 0.0 {
                rng.uniform((1.0 - x).max(0.0), 1.0 + x)
            } else {
                1.0
            }
        };
        let brightness = factor(b);
        let contrast = factor(c);
        let saturation = factor(s);
        let hue = if h > 0.0 { rng.uniform(-h, h) } else { 0.0 };
        Jitter {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }

    /// Applies the adjustments in order; a factor of exactly 1 (shift 0) leaves the image alone.
    ///
    /// Every step rounds to whole byte values, as an 8-bit image would between steps. The
    /// steps run fused over blocks of pixels held as float planes (one pass over the image, two
    /// when contrast follows another step, since contrast needs the mean luma of the image it
    /// is applied to), on AVX2 when the CPU has it.
    pub fn apply(&self, img: &mut Img) {
        let steps = self.steps();
        if steps.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { jitter_avx2(&mut img.data, &steps) };
            return;
        }
        jitter_kernel(&mut img.data, &steps);
    }

    /// The adjustments that change something, in order.
    fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::with_capacity(4);
        for step in self.order {
            match step {
                0 if self.brightness != 1.0 => steps.push(Step::Brightness(self.brightness as f32)),
                1 if self.contrast != 1.0 => steps.push(Step::Contrast(self.contrast as f32)),
                2 if self.saturation != 1.0 => steps.push(Step::Saturation(self.saturation as f32)),
                3 if self.hue != 0.0 => steps.push(Step::Hue(self.hue as f32)),
                _ => {}
            }
        }
        steps
    }
}

/// One colour-jitter adjustment with its factor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// `x · f`.
    Brightness(f32),
    /// `m + f · (x − m)`, `m` the image's mean luma.
    Contrast(f32),
    /// `l + f · (x − l)`, `l` the pixel's luma.
    Saturation(f32),
    /// Hue rotation by this many turns.
    Hue(f32),
}

/// Pixels per block of the colour-jitter kernel: the three planes of a block stay in L1 and
/// the loops over them are whole vector widths.
const BLOCK: usize = 64;

/// One block of pixels as float planes; between steps every value is a whole number in
/// `0..=255`.
struct Planes {
    r: [f32; BLOCK],
    g: [f32; BLOCK],
    b: [f32; BLOCK],
}

impl Planes {
    /// Loads up to [`BLOCK`] interleaved RGB pixels (`px.len() / 3` of them).
    #[inline(always)]
    fn load(&mut self, px: &[u8]) {
        let planes = self.r.iter_mut().zip(&mut self.g).zip(&mut self.b);
        for (p, ((r, g), b)) in px.chunks_exact(3).zip(planes) {
            (*r, *g, *b) = (p[0] as f32, p[1] as f32, p[2] as f32);
        }
    }

    /// Stores the first `px.len() / 3` pixels back (values are already whole bytes).
    #[inline(always)]
    fn store(&self, px: &mut [u8]) {
        let planes = self.r.iter().zip(&self.g).zip(&self.b);
        for (p, ((r, g), b)) in px.chunks_exact_mut(3).zip(planes) {
            p.copy_from_slice(&[*r as u8, *g as u8, *b as u8]);
        }
    }

    /// Sum of the integer luma of the first `n` pixels.
    #[inline(always)]
    fn luma_sum(&self, n: usize) -> u64 {
        // Eight running sums, one per lane (each stays a whole number far below 2²⁴, so the
        // float sums are exact).
        let mut acc = [0f32; 8];
        for i in 0..BLOCK {
            let l = luma_f(self.r[i], self.g[i], self.b[i]);
            acc[i % 8] += if i < n { l } else { 0.0 };
        }
        acc.iter().map(|&a| a as u64).sum()
    }

    /// Applies `steps` in order (`mean`: the mean luma a contrast step blends with).
    #[inline(always)]
    fn run(&mut self, steps: &[Step], mean: f32) {
        for &step in steps {
            match step {
                Step::Brightness(f) => {
                    for plane in [&mut self.r, &mut self.g, &mut self.b] {
                        for x in plane.iter_mut() {
                            *x = round_byte(*x * f);
                        }
                    }
                }
                Step::Contrast(f) => {
                    for plane in [&mut self.r, &mut self.g, &mut self.b] {
                        for x in plane.iter_mut() {
                            *x = round_byte(mean + f * (*x - mean));
                        }
                    }
                }
                Step::Saturation(f) => {
                    for i in 0..BLOCK {
                        let (r, g, b) = (self.r[i], self.g[i], self.b[i]);
                        let l = luma_f(r, g, b);
                        self.r[i] = round_byte(l + f * (r - l));
                        self.g[i] = round_byte(l + f * (g - l));
                        self.b[i] = round_byte(l + f * (b - l));
                    }
                }
                Step::Hue(shift) => {
                    for i in 0..BLOCK {
                        let [r, g, b] = hue_px([self.r[i], self.g[i], self.b[i]], shift);
                        self.r[i] = r;
                        self.g[i] = g;
                        self.b[i] = b;
                    }
                }
            }
        }
    }
}

/// [`jitter_kernel`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn jitter_avx2(data: &mut [u8], steps: &[Step]) {
    jitter_kernel(data, steps);
}

/// Applies `steps` in order to interleaved RGB `data`, block by block.
#[inline(always)]
fn jitter_kernel(data: &mut [u8], steps: &[Step]) {
    let mut p = Planes {
        r: [0.0; BLOCK],
        g: [0.0; BLOCK],
        b: [0.0; BLOCK],
    };
    // Steps before a contrast step run in a first pass that also sums the luma contrast needs.
    let (rest, mean) = match steps.iter().position(|s| matches!(s, Step::Contrast(_))) {
        Some(k) => {
            let mut sum = 0u64;
            for px in data.chunks_mut(BLOCK * 3) {
                p.load(px);
                if k > 0 {
                    p.run(&steps[..k], 0.0);
                    p.store(px);
                }
                sum += p.luma_sum(px.len() / 3);
            }
            let mean = (sum as f64 / (data.len() / 3) as f64) as f32;
            (&steps[k..], mean)
        }
        None => (steps, 0.0),
    };
    for px in data.chunks_mut(BLOCK * 3) {
        p.load(px);
        p.run(rest, mean);
        p.store(px);
    }
}

/// Rounds half up to a whole byte value, as a float (`clamp_u8` without leaving floats; one
/// `vroundps` where SSE4.1 is enabled, as in the AVX2 kernel).
#[inline(always)]
fn round_byte(v: f32) -> f32 {
    (v.clamp(0.0, 255.0) + 0.5).floor()
}

/// [`luma`] on whole-number floats, exactly: every product and partial sum is a whole number
/// below 2²⁴, so the float arithmetic is the integer arithmetic.
#[inline(always)]
fn luma_f(r: f32, g: f32, b: f32) -> f32 {
    ((r * 19595.0 + g * 38470.0 + b * 7471.0 + 32768.0) * (1.0 / 65536.0)).floor()
}

/// Rotates the hue of one pixel (whole-number channel values) by `shift` turns, HSV round
/// trip, rounded to whole byte values. Written without branches (selects only) so that the
/// loop over a block vectorises; grey pixels (no hue) come back unchanged.
#[inline(always)]
fn hue_px([r, g, b]: [f32; 3], shift: f32) -> [f32; 3] {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let (num, base) = if max == r {
        (g - b, 0.0)
    } else if max == g {
        (b - r, 2.0)
    } else {
        (r - g, 4.0)
    };
    // For grey pixels this divides by zero; the result is discarded below.
    let mut sector = num / delta + base;
    if sector < 0.0 {
        sector += 6.0;
    }
    let mut h = sector / 6.0 + shift;
    if h >= 1.0 {
        h -= 1.0;
    }
    if h < 0.0 {
        h += 1.0;
    }
    let s = delta / max;
    let v = max;
    let h6 = h * 6.0;
    let i = h6.floor().min(5.0);
    let f = h6 - i;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    let nr = if i == 0.0 || i == 5.0 {
        v
    } else if i == 1.0 {
        q
    } else if i == 4.0 {
        t
    } else {
        p
    };
    let ng = if i == 0.0 {
        t
    } else if i <= 2.0 {
        v
    } else if i == 3.0 {
        q
    } else {
        p
    };
    let nb = if i <= 1.0 {
        p
    } else if i == 2.0 {
        t
    } else if i == 5.0 {
        q
    } else {
        v
    };
    if delta == 0.0 {
        [r, g, b]
    } else {
        [round_byte(nr), round_byte(ng), round_byte(nb)]
    }
}

/// Rounds half up to the nearest byte value (the same as `round` for the non-negative values
/// kept); avoids the `roundf` library call on CPUs without SSE4.1.
#[inline]
fn clamp_u8(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

/// Reflects index `i` into `0..n` (edge pixel not repeated), as torchvision's padding.
#[inline]
fn reflect(mut i: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    i = i.rem_euclid(period);
    (if i >= n { period - i } else { i }) as usize
}

/// Separable gaussian blur with reflected borders.
pub fn gaussian_blur(img: &mut Img, sigma: f64, kernel_size: Option<u32>, tmp: &mut Vec<f32>) {
    let k = kernel_size.unwrap_or_else(|| (2 * (3.0 * sigma).ceil() as u32 + 1).min(255)) as i64;
    let half = k / 2;
    let mut weights: Vec<f32> = (-half..=half)
        .map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    let (w, h) = (img.w as i64, img.h as i64);
    tmp.clear();
    tmp.resize(img.data.len(), 0.0);
    // Horizontal pass into floats.
    for y in 0..h {
        let row = (y * w * 3) as usize;
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (t, wt) in weights.iter().enumerate() {
                let sx = reflect(x + t as i64 - half, w);
                let i = row + sx * 3;
                acc[0] += wt * img.data[i] as f32;
                acc[1] += wt * img.data[i + 1] as f32;
                acc[2] += wt * img.data[i + 2] as f32;
            }
            let o = row + (x * 3) as usize;
            tmp[o..o + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass back to bytes.
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (t, wt) in weights.iter().enumerate() {
                let sy = reflect(y + t as i64 - half, h);
                let i = (sy * w as usize + x as usize) * 3;
                acc[0] += wt * tmp[i];
                acc[1] += wt * tmp[i + 1];
                acc[2] += wt * tmp[i + 2];
            }
            let o = ((y * w + x) * 3) as usize;
            for (d, a) in img.data[o..o + 3].iter_mut().zip(acc) {
                *d = clamp_u8(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic test image with distinct pixels.
    fn pattern(w: u32, h: u32) -> Img {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 7 + y) as u8, (y * 5 + 3) as u8, (x * y) as u8]);
            }
        }
        Img { w, h, data }
    }

    #[test]
    fn flips_twice_are_identity_and_flip_moves_pixels() {
        let orig = pattern(7, 5);
        let mut img = orig.clone();
        hflip(&mut img);
        assert_eq!(img.px(0, 2), orig.px(6, 2));
        assert_eq!(img.px(3, 1), orig.px(3, 1));
        hflip(&mut img);
        assert_eq!(img, orig);
        vflip(&mut img);
        assert_eq!(img.px(2, 0), orig.px(2, 4));
        vflip(&mut img);
        assert_eq!(img, orig);
    }

    #[test]
    fn crop_box_stays_in_bounds_and_respects_scale() {
        for key in 0..2000u64 {
            let mut rng = OpRng::new(key, 0);
            let (w, h) = (50 + (key % 300) as u32, 40 + (key % 170) as u32);
            let (x, y, cw, ch) = crop_box(w, h, [0.2, 0.6], [0.75, 4.0 / 3.0], &mut rng);
            assert!(cw > 0 && ch > 0 && x + cw <= w && y + ch <= h, "{key}");
        }
        // Scale [1, 1] with the image's own ratio: the whole image.
        let mut rng = OpRng::new(1, 0);
        assert_eq!(
            crop_box(40, 30, [1.0, 1.0], [4.0 / 3.0, 4.0 / 3.0], &mut rng),
            (0, 0, 40, 30)
        );
    }

    /// The straightforward jitter (per-value lookup tables for brightness and contrast, per-pixel
    /// saturation and hue), kept as the reference the fused kernel is checked against.
    fn reference_apply(j: &Jitter, img: &mut Img) {
        for step in j.order {
            match step {
                0 if j.brightness != 1.0 => {
                    let f = j.brightness as f32;
                    let lut: [u8; 256] = std::array::from_fn(|v| clamp_u8(v as f32 * f));
                    img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
                }
                1 if j.contrast != 1.0 => {
                    let n = (img.data.len() / 3) as f64;
                    let sum: u64 = img
                        .data
                        .chunks_exact(3)
                        .map(|p| luma(p[0], p[1], p[2]) as u64)
                        .sum();
                    let mean = (sum as f64 / n) as f32;
                    let f = j.contrast as f32;
                    let lut: [u8; 256] =
                        std::array::from_fn(|v| clamp_u8(mean + f * (v as f32 - mean)));
                    img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
                }
                2 if j.saturation != 1.0 => {
                    let f = j.saturation as f32;
                    for p in img.data.chunks_exact_mut(3) {
                        let l = luma(p[0], p[1], p[2]) as f32;
                        for v in p.iter_mut() {
                            *v = clamp_u8(l + f * (*v as f32 - l));
                        }
                    }
                }
                3 if j.hue != 0.0 => {
                    let shift = j.hue as f32;
                    for p in img.data.chunks_exact_mut(3) {
                        let out = shift_hue([p[0], p[1], p[2]], shift);
                        p.copy_from_slice(&out);
                    }
                }
                _ => {}
            }
        }
    }

    /// The reference per-pixel hue rotation (HSV round trip with branches).
    fn shift_hue(p: [u8; 3], shift: f32) -> [u8; 3] {
        let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        if delta == 0.0 {
            return p;
        }
        // Branches instead of `rem_euclid`/`floor` (library calls in this hot loop).
        let sector = if max == r {
            let x = (g - b) / delta;
            if x < 0.0 { x + 6.0 } else { x }
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        };
        let mut h = sector / 6.0 + shift;
        if h >= 1.0 {
            h -= 1.0;
        }
        if h < 0.0 {
            h += 1.0;
        }
        let s = delta / max;
        let v = max;
        let h6 = h * 6.0;
        // h6 >= 0, so truncation is floor.
        let i = (h6 as i32).min(5);
        let f = h6 - i as f32;
        let pp = v * (1.0 - s);
        let q = v * (1.0 - s * f);
        let t = v * (1.0 - s * (1.0 - f));
        let (r, g, b) = match i {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        [clamp_u8(r), clamp_u8(g), clamp_u8(b)]
    }

    #[test]
    fn zero_jitter_is_identity() {
        let orig = pattern(9, 9);
        let mut rng = OpRng::new(3, 0);
        let j = Jitter::draw(0.0, 0.0, 0.0, 0.0, &mut rng);
        let mut img = orig.clone();
        j.apply(&mut img);
        assert_eq!(img, orig);
    }

    #[test]
    fn jitter_factors_are_in_range_and_brightness_scales() {
        for key in 0..500 {
            let mut rng = OpRng::new(key, 0);
            let j = Jitter::draw(0.4, 0.3, 0.2, 0.1, &mut rng);
            assert!((0.6..=1.4).contains(&j.brightness));
            assert!((0.7..=1.3).contains(&j.contrast));
            assert!((0.8..=1.2).contains(&j.saturation));
            assert!((-0.1..=0.1).contains(&j.hue));
            let mut o = j.order;
            o.sort();
            assert_eq!(o, [0, 1, 2, 3]);
        }
        let mut img = Img {
            w: 1,
            h: 1,
            data: vec![100, 50, 200],
        };
        Jitter {
            order: [0, 1, 2, 3],
            brightness: 0.5,
            contrast: 1.0,
            saturation: 1.0,
            hue: 0.0,
        }
        .apply(&mut img);
        assert_eq!(img.data, vec![50, 25, 100]);
    }

    /// `hue_px` on bytes.
    fn hue_bytes(p: [u8; 3], shift: f32) -> [u8; 3] {
        hue_px(p.map(|v| v as f32), shift).map(|v| v as u8)
    }

    #[test]
    fn full_turn_hue_shift_is_identity_and_third_turn_rotates_channels() {
        for p in [[200u8, 30, 90], [10, 250, 40], [0, 0, 255], [7, 7, 7]] {
            assert_eq!(hue_bytes(p, 1.0), p);
            assert_eq!(shift_hue(p, 1.0), p);
        }
        // Red rotated by a third of the circle is green, by two thirds blue.
        assert_eq!(hue_bytes([255, 0, 0], 1.0 / 3.0), [0, 255, 0]);
        assert_eq!(hue_bytes([255, 0, 0], -1.0 / 3.0), [0, 0, 255]);
    }

    #[test]
    fn half_turn_hue_shift_wraps_the_same_way_in_both_directions() {
        // Complementary colours: red ↔ cyan, yellow ↔ blue, green ↔ magenta.
        for (p, q) in [
            ([255u8, 0, 0], [0u8, 255, 255]),
            ([255, 255, 0], [0, 0, 255]),
            ([0, 255, 0], [255, 0, 255]),
        ] {
            assert_eq!(hue_bytes(p, 0.5), q);
            assert_eq!(hue_bytes(p, -0.5), q);
            assert_eq!(hue_bytes(q, 0.5), p);
        }
        // Any colour: +½ and −½ turn land on the same hue. The two wrap in different orders
        // ((h + ½) − 1 against (h − ½) + 1), which can differ in the last bit of the hue and so
        // move a channel that lies on a rounding boundary by one; never by more.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let [r, g, b, ..] = (state >> 16).to_le_bytes();
            let (a, c) = (hue_bytes([r, g, b], 0.5), hue_bytes([r, g, b], -0.5));
            for k in 0..3 {
                assert!(a[k].abs_diff(c[k]) <= 1, "{:?}: {a:?} vs {c:?}", [r, g, b]);
            }
            // Max and min channel values (V and V·(1 − S)) are kept by any rotation.
            assert_eq!(a.iter().max(), [r, g, b].iter().max());
            assert_eq!(a.iter().min(), [r, g, b].iter().min());
        }
    }

    /// Random pixels, with some grey and some saturated ones, `w × h`.
    fn noise(w: u32, h: u32, seed: u64) -> Img {
        let mut state = seed;
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for i in 0..w * h {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1442695040888963407);
            let [r, g, b, ..] = (state >> 24).to_le_bytes();
            data.extend_from_slice(&match i % 7 {
                0 => [r, r, r],
                1 => [255, g, 0],
                _ => [r, g, b],
            });
        }
        Img { w, h, data }
    }

    #[test]
    fn fused_jitter_equals_the_reference_exactly() {
        // The kernel does the reference's float operations in the same order (the luma in
        // floats is exact, see `luma_f`; Rust does not contract a·b + c into FMA), so the bytes
        // must match exactly, for every order of the four steps, on images whose pixel count is
        // and is not a multiple of the block size.
        for (w, h) in [(1, 1), (37, 23), (64, 1), (65, 3), (224, 224)] {
            let orig = noise(w, h, w as u64 * 1000 + h as u64);
            for key in 0..120u64 {
                let mut rng = OpRng::new(key, 2);
                let (b, c, s, hu) = if key % 2 == 0 {
                    (0.4, 0.4, 0.4, 0.1)
                } else {
                    (0.9, 0.9, 0.9, 0.5)
                };
                let j = Jitter::draw(b, c, s, hu, &mut rng);
                let mut want = orig.clone();
                reference_apply(&j, &mut want);
                let mut got = orig.clone();
                j.apply(&mut got);
                assert_eq!(got, want, "{w}x{h} key {key} {j:?}");
                // The portable kernel (what a CPU without AVX2 runs) agrees too.
                let mut portable = orig.clone();
                jitter_kernel(&mut portable.data, &j.steps());
                assert_eq!(portable, want, "{w}x{h} key {key} {j:?}");
            }
        }
    }

    #[test]
    fn contrast_after_other_steps_uses_the_mean_of_the_adjusted_image() {
        // Brightness 0.5 then contrast 0: every value becomes the mean luma of the darkened
        // image, not of the original.
        let mut img = Img {
            w: 2,
            h: 1,
            data: vec![200, 200, 200, 100, 100, 100],
        };
        Jitter {
            order: [0, 1, 2, 3],
            brightness: 0.5,
            contrast: 0.0,
            saturation: 1.0,
            hue: 0.0,
        }
        .apply(&mut img);
        // Darkened lumas 100 and 50, mean 75.
        assert_eq!(img.data, vec![75; 6]);
    }

    #[test]
    fn grayscale_makes_equal_channels_with_pil_luma() {
        let mut img = Img {
            w: 2,
            h: 1,
            data: vec![255, 0, 0, 10, 200, 30],
        };
        grayscale(&mut img);
        // PIL: L = R·299/1000 + G·587/1000 + B·114/1000 (rounded).
        assert_eq!(img.data, vec![76, 76, 76, 124, 124, 124]);
    }

    #[test]
    fn rotation_by_zero_is_identity_and_90_moves_corners() {
        let orig = pattern(6, 6);
        let mut img = orig.clone();
        let mut spare = Vec::new();
        rotate(&mut img, 0.0, [0, 0, 0], &mut spare);
        assert_eq!(img, orig);
        rotate(&mut img, 90.0, [0, 0, 0], &mut spare);
        // Counter-clockwise: the top-right corner goes to the top-left.
        assert_eq!(img.px(0, 0), orig.px(5, 0));
        assert_eq!(img.px(0, 5), orig.px(0, 0));
        for _ in 0..3 {
            rotate(&mut img, 90.0, [0, 0, 0], &mut spare);
        }
        assert_eq!(img, orig);
    }

    #[test]
    fn blur_keeps_a_flat_image_flat_and_smooths_an_edge() {
        let mut flat = Img {
            w: 8,
            h: 8,
            data: vec![77; 8 * 8 * 3],
        };
        let mut tmp = Vec::new();
        gaussian_blur(&mut flat, 1.5, None, &mut tmp);
        assert!(flat.data.iter().all(|&v| v == 77));
        let mut edge = Img {
            w: 8,
            h: 1,
            data: (0..8)
                .flat_map(|x| if x < 4 { [0u8; 3] } else { [255u8; 3] })
                .collect(),
        };
        gaussian_blur(&mut edge, 1.0, Some(5), &mut tmp);
        assert!(edge.px(3, 0)[0] > 0 && edge.px(4, 0)[0] < 255);
        assert_eq!(edge.px(0, 0)[0], 0);
    }

    #[test]
    fn pipeline_output_sizes_are_as_configured() {
        let ops = vec![
            AugmentOp::RandomResizedCrop {
                size: [20, 30],
                scale: [0.3, 1.0],
                ratio: [0.75, 1.33],
                p: 1.0,
            },
            AugmentOp::HorizontalFlip { p: 0.5 },
            AugmentOp::Encode {
                format: ImageEncoding::Png,
                quality: 90,
            },
        ];
        let pipe = ImagePipeline::new(&ops);
        let src = pattern(64, 48);
        let mut s = ImageScratch::default();
        let mut t = Vec::new();
        pipe.apply(&src, 5, &mut s, &mut t).unwrap();
        let back = Img::decode(&s.encoded).unwrap();
        assert_eq!((back.w, back.h), (30, 20));

        let ops = vec![AugmentOp::ToTensor {
            size: [4, 5],
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.5, 0.5],
            layout: TensorLayout::Nchw,
        }];
        let pipe = ImagePipeline::new(&ops);
        let src = pattern(5, 4);
        pipe.apply(&src, 1, &mut s, &mut t).unwrap();
        assert_eq!(t.len(), 60);
        // Channel 0 of pixel (1, 0) in NCHW; value 7 → (7/255 − 0.5)/0.5.
        assert!((t[1] - (7.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        // Channel 1 plane starts at 20.
        assert!((t[20] - (3.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    }
}
