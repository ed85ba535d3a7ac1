//! dialin
