//! Fuzz targets for everything floodgate decodes from disk; see README.md.

mod props;

pub use props::*;
