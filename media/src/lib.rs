//! dialin-media
