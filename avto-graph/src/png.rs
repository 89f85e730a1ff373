//! SVG to PNG with resvg (feature `png`).

use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

use crate::Error;

/// DejaVu Sans Mono 2.37 (Bitstream Vera license, see `fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSansMono.ttf");

/// The family name of the bundled font.
pub(crate) const FONT_NAME: &str = "DejaVu Sans Mono";

/// The largest PNG side, in pixels.
pub const MAX_PNG_SIDE: u32 = 16_384;

fn fonts() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        db.set_serif_family(FONT_NAME);
        db.set_sans_serif_family(FONT_NAME);
        db.set_monospace_family(FONT_NAME);
        db.set_cursive_family(FONT_NAME);
        db.set_fantasy_family(FONT_NAME);
        Arc::new(db)
    })
    .clone()
}

/// Rasterises an SVG (such as [`render_svg`](crate::render_svg)'s) to a PNG, `scale` device
/// pixels per SVG pixel (`1.0` keeps the SVG's size, `2.0` for high-density screens).
///
/// Text is drawn with the bundled DejaVu Sans Mono whatever font the SVG names, so the result
/// is the same on every machine, with or without system fonts. `scale` must be finite and
/// positive, and neither side of the result may exceed [`MAX_PNG_SIDE`] pixels; otherwise, and
/// for SVG that does not parse, an [`Error::Png`].
pub fn render_png(svg: &str, scale: f32) -> Result<Vec<u8>, Error> {
    if !scale.is_finite() || scale <= 0.0 {
        return Err(Error::Png(format!("the scale must be a positive number, not {scale}")));
    }
    let options = usvg::Options { fontdb: fonts(), font_family: FONT_NAME.to_string(), ..usvg::Options::default() };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| Error::Png(format!("invalid SVG: {e}")))?;
    let size = tree.size();
    let (w, h) = ((size.width() * scale).ceil(), (size.height() * scale).ceil());
    if !(w >= 1.0 && h >= 1.0 && w <= MAX_PNG_SIDE as f32 && h <= MAX_PNG_SIDE as f32) {
        return Err(Error::Png(format!(
            "a {w}×{h} pixel image is out of range (1 to {MAX_PNG_SIDE} pixels a side); use a smaller scale"
        )));
    }
    let mut pixmap = tiny_skia::Pixmap::new(w as u32, h as u32)
        .ok_or_else(|| Error::Png(format!("cannot allocate a {w}×{h} pixel image")))?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| Error::Png(format!("PNG encoding failed: {e}")))
}
