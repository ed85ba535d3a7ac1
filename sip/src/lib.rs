//! dialin-sip
