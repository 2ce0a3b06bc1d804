//! Fashion-MNIST in gzip-compressed IDX format.
//!
//! The IDX format (used by MNIST and Fashion-MNIST) is a big-endian header followed by raw
//! `u8` data. Parsing it by hand takes a few lines, and validating every field (magic number,
//! dimensions, exact payload length, label range) turns a corrupt or truncated file into a
//! clear error instead of a panic or silently wrong training data. Images come back as `f32`
//! in `[0, 1]`, ready to be copied into a tensor.
//!
//! The bundled subset (`data/fashion-mnist/`) has 8,000 training and 2,000 test images,
//! balanced over the 10 classes; see its README for the origin and licence (MIT, Zalando SE).

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Number of classes in (Fashion-)MNIST.
pub const NUM_CLASSES: usize = 10;
/// Fashion-MNIST class names, indexed by label.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Upper bound on the decompressed size of one IDX file, to refuse absurd headers early.
const MAX_IDX_BYTES: u64 = 1 << 30;

/// A set of labelled grayscale images.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, `len() * rows * cols` values in `[0, 1]`, image after image, each row-major.
    pub images: Vec<f32>,
    /// One label per image, each in `0..NUM_CLASSES`.
    pub labels: Vec<u8>,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image (`rows * cols`).
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`, or `None` if `i` is out of range.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let p = self.pixels_per_image();
        self.images.get(i * p..(i + 1) * p)
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// A new set made of the images at `indices` (in that order). Fails on an out-of-range
    /// index.
    pub fn subset(&self, indices: &[usize]) -> Result<ImageSet> {
        let p = self.pixels_per_image();
        let mut images = Vec::with_capacity(indices.len() * p);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let img = self
                .image(i)
                .ok_or_else(|| Error::invalid(format!("image index {i} out of range (len {})", self.len())))?;
            images.extend_from_slice(img);
            labels.push(self.labels[i]);
        }
        Ok(ImageSet {
            images,
            labels,
            rows: self.rows,
            cols: self.cols,
        })
    }

    /// Balanced hold-out split: the last `per_class` images of every class (in file order) go
    /// to the second set, the rest to the first. Relative order is kept in both.
    ///
    /// With `per_class = 100` on the bundled training set (800 images per class) this gives
    /// 7,000 images for training and 1,000 for validation; `per_class = 80` gives the 7,200 /
    /// 800 split quoted in the data README. Fails if a class has fewer than `per_class`
    /// images.
    pub fn split_per_class_tail(&self, per_class: usize) -> Result<(ImageSet, ImageSet)> {
        let counts = self.class_counts();
        if let Some((class, &n)) = counts.iter().enumerate().find(|(_, &n)| n < per_class) {
            return Err(Error::invalid(format!(
                "class {class} has {n} images, fewer than per_class = {per_class}"
            )));
        }
        let mut seen = [0usize; NUM_CLASSES];
        let mut keep = Vec::new();
        let mut held = Vec::new();
        for (i, &l) in self.labels.iter().enumerate() {
            let c = l as usize;
            seen[c] += 1;
            if seen[c] > counts[c] - per_class {
                held.push(i);
            } else {
                keep.push(i);
            }
        }
        Ok((self.subset(&keep)?, self.subset(&held)?))
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parses an uncompressed IDX image file: returns `(pixels, count, rows, cols)` with the raw
/// `u8` pixels. `context` names the source in error messages.
pub fn parse_idx_images(bytes: &[u8], context: &str) -> Result<(Vec<u8>, usize, usize, usize)> {
    if bytes.len() < 16 {
        return Err(Error::format(
            context,
            format!("IDX image header needs 16 bytes, file has {}", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != IMAGES_MAGIC {
        return Err(Error::format(
            context,
            format!("bad magic number {magic:#010x}, expected {IMAGES_MAGIC:#010x} (images)"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    let rows = be_u32(bytes, 8) as usize;
    let cols = be_u32(bytes, 12) as usize;
    if rows == 0 || cols == 0 {
        return Err(Error::format(context, format!("invalid image size {rows}x{cols}")));
    }
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .and_then(|v| v.checked_add(16))
        .ok_or_else(|| Error::format(context, "header dimensions overflow"))?;
    if bytes.len() != expected {
        return Err(Error::format(
            context,
            format!(
                "header says {n} images of {rows}x{cols} ({expected} bytes), file has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok((bytes[16..].to_vec(), n, rows, cols))
}

/// Parses an uncompressed IDX label file into its labels. `context` names the source in
/// error messages.
pub fn parse_idx_labels(bytes: &[u8], context: &str) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        return Err(Error::format(
            context,
            format!("IDX label header needs 8 bytes, file has {}", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != LABELS_MAGIC {
        return Err(Error::format(
            context,
            format!("bad magic number {magic:#010x}, expected {LABELS_MAGIC:#010x} (labels)"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() - 8 != n {
        return Err(Error::format(
            context,
            format!(
                "header says {n} labels ({} bytes), file has {} bytes",
                n as u64 + 8,
                bytes.len()
            ),
        ));
    }
    Ok(bytes[8..].to_vec())
}

/// Reads a whole file, gunzipping it if it starts with the gzip magic bytes.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .take(MAX_IDX_BYTES)
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path.display().to_string(), format!("bad gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Builds an [`ImageSet`] from raw IDX image and label bytes, checking that the counts agree
/// and that every label is below [`NUM_CLASSES`].
pub fn image_set_from_idx(image_bytes: &[u8], label_bytes: &[u8], context: &str) -> Result<ImageSet> {
    let (pixels, n, rows, cols) = parse_idx_images(image_bytes, context)?;
    let labels = parse_idx_labels(label_bytes, context)?;
    if labels.len() != n {
        return Err(Error::format(
            context,
            format!("{n} images but {} labels", labels.len()),
        ));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= NUM_CLASSES) {
        return Err(Error::format(
            context,
            format!("label {l} at index {i} is not below {NUM_CLASSES}"),
        ));
    }
    let images = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Ok(ImageSet {
        images,
        labels,
        rows,
        cols,
    })
}

/// Loads one split (`prefix` is `"train"` or `"test"`; the original `"t10k"` file names are
/// accepted for the test split) from `dir`, e.g. `train-images-idx3-ubyte.gz` and
/// `train-labels-idx1-ubyte.gz`. Uncompressed files without `.gz` are accepted too.
pub fn load_split(dir: &Path, prefix: &str) -> Result<ImageSet> {
    let candidates: &[&str] = if prefix == "test" {
        &["test", "t10k"]
    } else {
        std::slice::from_ref(&prefix)
    };
    let find = |kind: &str| {
        let mut tried = Vec::new();
        for p in candidates {
            for ext in ["-ubyte.gz", "-ubyte"] {
                let path = dir.join(format!("{p}-{kind}{ext}"));
                if path.is_file() {
                    return Ok(path);
                }
                tried.push(path);
            }
        }
        Err(Error::io(
            &tried[0],
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("IDX file not found (tried {} names)", tried.len()),
            ),
        ))
    };
    let img_path = find("images-idx3")?;
    let lbl_path = find("labels-idx1")?;
    let context = format!("{} + {}", img_path.display(), lbl_path.display());
    image_set_from_idx(&read_maybe_gzip(&img_path)?, &read_maybe_gzip(&lbl_path)?, &context)
}

/// Loads the Fashion-MNIST training and test sets from `dir` (for the bundled data,
/// `data_dir().join("fashion-mnist")`). Returns `(train, test)`.
pub fn load_fashion_mnist(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let train = load_split(dir, "train")?;
    let test = load_split(dir, "test")?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(Error::format(
            dir.display().to_string(),
            format!(
                "train images are {}x{} but test images are {}x{}",
                train.rows, train.cols, test.rows, test.cols
            ),
        ));
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn parses_small_synthetic_files() {
        let imgs = idx_images(2, 2, 2, &[0, 255, 51, 102, 1, 2, 3, 4]);
        let set = image_set_from_idx(&imgs, &idx_labels(&[3, 9]), "t").unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.pixels_per_image(), 4);
        assert_eq!(set.image(0).unwrap(), &[0.0, 1.0, 0.2, 0.4]);
        assert!(set.image(2).is_none());
        assert_eq!(set.labels, vec![3, 9]);
    }

    #[test]
    fn rejects_bad_files() {
        let good = idx_images(1, 2, 2, &[0; 4]);
        let labels = idx_labels(&[1]);
        // wrong magic: a label file given as images
        let many_labels = idx_labels(&[0; 12]);
        let e = image_set_from_idx(&many_labels, &labels, "x").unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        // truncated payload
        let e = image_set_from_idx(&good[..18], &labels, "x").unwrap_err();
        assert!(e.to_string().contains("file has 18 bytes"), "{e}");
        // short header
        assert!(parse_idx_images(&good[..10], "x").is_err());
        assert!(parse_idx_labels(&labels[..5], "x").is_err());
        // count mismatch
        let e = image_set_from_idx(&good, &idx_labels(&[1, 2]), "x").unwrap_err();
        assert!(e.to_string().contains("1 images but 2 labels"), "{e}");
        // label out of range
        let e = image_set_from_idx(&good, &idx_labels(&[10]), "x").unwrap_err();
        assert!(e.to_string().contains("label 10"), "{e}");
        // overflowing header
        let huge = idx_images(u32::MAX, u32::MAX, u32::MAX, &[]);
        assert!(parse_idx_images(&huge, "x").is_err());
        // zero-size images
        assert!(parse_idx_images(&idx_images(0, 0, 5, &[]), "x").is_err());
    }

    #[test]
    fn missing_dir_is_an_error() {
        let e = load_fashion_mnist(Path::new("/nonexistent/fashion")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[test]
    fn loads_bundled_subset() {
        let dir = crate::data_dir().join("fashion-mnist");
        let (train, test) = load_fashion_mnist(&dir).unwrap();
        assert_eq!((train.len(), test.len()), (8000, 2000));
        assert_eq!((train.rows, train.cols), (28, 28));
        assert_eq!(train.images.len(), 8000 * 784);
        assert_eq!(train.class_counts(), [800; 10]);
        assert_eq!(test.class_counts(), [200; 10]);
        assert!(train.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
        assert!(train.images.contains(&1.0));
        // First labels, as seen in the raw file header dump: 9 0 0 3 0 2 7 2.
        assert_eq!(&train.labels[..8], &[9, 0, 0, 3, 0, 2, 7, 2]);
        let (tr, va) = train.split_per_class_tail(100).unwrap();
        assert_eq!((tr.len(), va.len()), (7000, 1000));
        assert_eq!(va.class_counts(), [100; 10]);
        assert_eq!(tr.class_counts(), [700; 10]);
        // The held-out images are the last ones of their class, in file order.
        let last = train.labels.iter().rposition(|&l| l == va.labels[999]).unwrap();
        assert_eq!(va.image(999).unwrap(), train.image(last).unwrap());
        assert!(train.split_per_class_tail(801).is_err());
    }
}
