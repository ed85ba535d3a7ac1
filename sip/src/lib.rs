//! dialin-sip: the SIP user agent core of dialin.
//!
//! Flow: a [`transport`] receives octets, [`message::Message::parse`] turns them
//! into a typed message (zero-copy over `bytes::Bytes`), [`validate`] decides
//! whether a request can be processed or which error response it gets, and the
//! transaction/dialog layers act on it. Outgoing messages are built with
//! [`message::Response::to_request`] / [`message::RequestBuilder`] and sent back
//! through the transport, routed by [`transport::response_target`].

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod header;
pub mod message;
pub mod sdp;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uri;
pub mod validate;

pub use endpoint::{
    CallKey, CommandError, EndReason, Endpoint, EndpointConfig, EndpointDriver, EndpointHandle,
    Event, Transmit,
};
pub use endpoint::{SourceFilter, SourceVerdict};
pub use header::{
    CSeq, Header, HeaderError, HeaderName, MediaType, NameAddr, Params, Via, ViaTransport,
};
pub use message::{
    Headers, Limits, Message, Method, ParseError, ParseErrorKind, Request, RequestBuilder,
    Response, StatusCode, Text,
};
pub use uri::{Host, Uri};
