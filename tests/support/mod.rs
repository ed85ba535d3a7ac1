//! Support code for dialin's integration tests: the phone side of a call.
//!
//! [`caller`] is a SIP phone in the test process (places calls to the gateway, answers
//! calls from it, sends and records audio and DTMF); [`tone`] measures what a call
//! carried; [`sipp`] runs SIPp as a real SIP peer and writes the RTP captures it plays.
//! Each integration test file includes this with `mod support;`; not every test uses
//! every helper.
#![allow(dead_code)]

pub mod caller;
pub mod gateway;
pub mod sipp;
pub mod tone;
